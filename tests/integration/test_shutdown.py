"""`sgw serve` drains within SG_SHUTDOWN_GRACE, so an orchestrator's stop timeout can outlast it.

Without a bound, uvicorn waits for every open request after SIGTERM: a ``Prefer: wait``
request or an event stream would hold the process until the orchestrator kills it, and the
lifespan (which closes the broker and the store) would never run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.conftest import AMQP_URL, ROOT, TEST_SECRET
from tests.support import eventually, measured
from worker_sdk.wire.catalogue import Catalogue, load_catalogue

pytestmark = pytest.mark.integration

GRACE = 2
HELD_FOR = 45  # the waiting request would hold the process this long without the bound


@pytest.fixture
def catalogue() -> Catalogue:
    """The catalogue the gateway serves here: the namespace's cleanup deletes its queues."""
    return load_catalogue(ROOT / "services.yaml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_sigterm_cancels_open_requests_after_the_grace(
    namespace: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = measured(
        {
            **os.environ,
            "SG_AMQP_URL": AMQP_URL,
            "SG_NAMESPACE": namespace,
            "SG_STORE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
            "SG_JWT_SECRET": TEST_SECRET,
            "SG_PORT": str(port),
            "SG_LOG_LEVEL": "WARNING",
            "SG_CATALOGUE": str(ROOT / "services.yaml"),
            "SG_SHUTDOWN_GRACE": str(GRACE),
        }
    )
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", cwd=ROOT, env=env, start_new_session=True
    )
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, TEST_SECRET, "HS256")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=HELD_FOR + 15
        ) as client:

            async def ready() -> bool:
                assert server.returncode is None, "the gateway exited"
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, within=30, what="the gateway to be ready")

            # No echo worker runs: the request waits for a result that never comes.
            waiting = asyncio.create_task(
                client.post(
                    "/processes/echo/execution",
                    json={"inputs": {}},
                    headers={"Prefer": f"wait={HELD_FOR}"},
                )
            )

            async def accepted() -> bool:
                jobs = (await client.get("/jobs")).json()["jobs"]
                return any(job["status"] == "accepted" for job in jobs)

            await eventually(accepted, what="the job to be accepted")
            assert not waiting.done()

            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(server.wait(), HELD_FOR)
            took = time.monotonic() - started

            assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
            assert took < GRACE + 10, f"took {took:.1f}s to stop"
            # The held request ended with the process, long before its wait was over.
            try:
                response = await asyncio.wait_for(waiting, timeout=5)
            except httpx.TransportError:
                pass
            else:
                assert response.status_code != 200
    finally:
        if server.returncode is None:
            server.kill()
            await asyncio.wait_for(server.wait(), 10)
