"""A gateway in a child process (``sgw serve``), for tests that kill it or need real HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests import support
from tests.conftest import AMQP_URL, ROOT, TEST_SECRET
from tests.support import eventually


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LiveGateway:
    """``sgw serve`` on a port of its own, in the test's namespace, restartable on the same
    store. ``kill`` is a SIGKILL: nothing in the process gets to clean up.

    Under ``make test`` the process is measured for coverage only with ``measured=True``
    (``tests.support.measured``).
    """

    def __init__(
        self,
        *,
        namespace: str,
        workdir: Path,
        catalogue: str,
        measured: bool = False,
        **settings: str,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        catalogue_path = workdir / "catalogue.yaml"
        catalogue_path.write_text(catalogue)
        self.env = {
            **os.environ,
            "SG_AMQP_URL": AMQP_URL,
            "SG_NAMESPACE": namespace,
            "SG_STORE_URL": f"sqlite:///{workdir / 'jobs.db'}",
            "SG_JWT_SECRET": TEST_SECRET,
            "SG_PORT": str(self.port),
            "SG_LOG_LEVEL": "WARNING",
            "SG_CATALOGUE": str(catalogue_path),
            **{f"SG_{name.upper()}": value for name, value in settings.items()},
        }
        if measured:
            self.env = support.measured(self.env)
        self.database = workdir / "jobs.db"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, log: Path | None = None) -> None:
        """Start ``sgw serve``; ``log``: a file its stderr goes to."""
        stderr = log.open("ab") if log is not None else None
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve"],
                cwd=ROOT,
                env=self.env,
                stderr=stderr,
                start_new_session=True,
            )
        finally:
            if stderr is not None:
                stderr.close()

    async def ready(self, within: float = 60.0) -> None:
        async def answers() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the gateway exited with {self.process.returncode}")
            try:
                async with httpx.AsyncClient(timeout=1) as client:
                    return (await client.get(f"{self.base}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(answers, within=within, what="the gateway to be ready")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            await asyncio.to_thread(self.process.wait, 30)
