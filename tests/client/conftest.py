"""A gateway served over real HTTP (``sgw serve`` in a child process) for the client tests, in
the test's namespace, and transports that record what the client sent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway import Settings
from gateway.auth import mint_token
from sgw_client import AsyncClient, Client, RetryPolicy
from tests.support import TEST_CATALOGUE, eventually

# Short pauses so that the tests spend their time on the gateway, not on back-off; enough
# tries (about a minute) to outlast a gateway restart on a loaded machine.
FAST_RETRY = RetryPolicy(attempts=120, backoff=0.1, max_backoff=0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LiveGateway:
    """``sgw serve`` on a fixed port and store: it can be killed and started again."""

    settings: Settings
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, sub: str = "alice", *scopes: str) -> str:
        return mint_token(self.settings, subject=sub, scopes=scopes)

    def client(self, sub: str = "alice", **options: Any) -> Client:
        options.setdefault("retry", FAST_RETRY)
        return Client(self.url, self.token(sub), **options)

    def async_client(self, sub: str = "alice", **options: Any) -> AsyncClient:
        options.setdefault("retry", FAST_RETRY)
        return AsyncClient(self.url, self.token(sub), **options)

    def env(self) -> dict[str, str]:
        s = self.settings
        assert s.jwt_secret is not None
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("SG_")},
            "SG_AMQP_URL": s.amqp_url,
            "SG_NAMESPACE": s.namespace,
            "SG_STORE_URL": s.store_url,
            "SG_CATALOGUE": str(s.catalogue),
            "SG_JWT_SECRET": s.jwt_secret.get_secret_value(),
            "SG_HOST": "127.0.0.1",
            "SG_PORT": str(self.port),
            "SG_LOG_LEVEL": "WARNING",
            **({"SG_PUBLIC_URL": str(s.public_url)} if s.public_url is not None else {}),
        }

    async def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        # The working directory holds no .env: only the variables above configure it. The
        # start returns at once; readiness is awaited below.
        self.process = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "gateway.cli", "serve"],
            cwd=self.workdir,
            env=self.env(),
            start_new_session=True,
        )
        self.starts += 1
        process = self.process

        async def ready() -> bool:
            assert process.poll() is None, f"sgw serve exited with {process.returncode}"
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"{self.url}/readyz", timeout=2)).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, within=30, what="the gateway to be ready")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, open connections are cut."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
async def live(settings_for: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[LiveGateway]:
    catalogue = tmp_path / "services.yaml"
    catalogue.write_text(TEST_CATALOGUE)
    workdir = tmp_path / "gateway"
    workdir.mkdir()
    gateway = LiveGateway(settings_for(catalogue=catalogue), free_port(), workdir)
    await gateway.start()
    try:
        yield gateway
    finally:
        gateway.kill()


@dataclass
class Sent:
    method: str
    path: str
    headers: httpx.Headers
    outcome: str = "pending"


@dataclass
class Record:
    """What a client sent and what became of each request (a status or a transport error)."""

    sent: list[Sent] = field(default_factory=list)

    def begin(self, request: httpx.Request) -> Sent:
        entry = Sent(request.method, request.url.path, request.headers)
        self.sent.append(entry)
        return entry

    def matching(self, method: str, path_part: str) -> list[Sent]:
        return [s for s in self.sent if s.method == method and path_part in s.path]


class RecordingTransport(httpx.HTTPTransport):
    """The real HTTP transport, keeping a record of each exchange."""

    def __init__(self) -> None:
        super().__init__()
        self.record = Record()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        entry = self.record.begin(request)
        try:
            response = super().handle_request(request)
        except httpx.TransportError as exc:
            entry.outcome = type(exc).__name__
            raise
        entry.outcome = str(response.status_code)
        return response


class AsyncRecordingTransport(httpx.AsyncBaseTransport):
    """An asyncio transport (real HTTP, or the in-process gateway's), keeping a record of
    each exchange."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.record = Record()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        entry = self.record.begin(request)
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.TransportError as exc:
            entry.outcome = type(exc).__name__
            raise
        entry.outcome = str(response.status_code)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def until(predicate: Callable[[], bool], *, within: float = 15.0, what: str) -> None:
    """Wait for a condition another thread makes true (read from shared state)."""

    async def probe() -> bool:
        return predicate()

    await eventually(probe, within=within, what=what)
