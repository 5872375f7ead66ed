"""A real OGC API – Processes client, OWSLib, against ``sgw serve`` with a worker: describe,
execute asynchronously and synchronously (results back), list and dismiss jobs."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from owslib.ogcapi.processes import Processes

from tests.conftest import TEST_SECRET
from tests.live import LiveGateway
from tests.ogc import check
from tests.support import eventually

pytestmark = pytest.mark.integration

SpawnWorker = Callable[..., subprocess.Popen[bytes]]
CATALOGUE = """
services:
  echo:
    title: Echo
    version: "1.0.0"
    sync_execute: true
    inputs:
      type: object
      properties:
        text: {type: string}
        delay: {type: number, minimum: 0}
"""


@pytest.fixture
async def live(namespace: str, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    server = LiveGateway(namespace=namespace, workdir=tmp_path, catalogue=CATALOGUE)
    server.start()
    await server.ready()
    yield server
    await server.stop()


def _client(base: str) -> Processes:
    token = jwt.encode(
        {"sub": "alice", "exp": int(time.time()) + 600}, TEST_SECRET, algorithm="HS256"
    )
    return Processes(base, headers={"Authorization": f"Bearer {token}"})


async def test_owslib_describes_executes_lists_and_dismisses(
    live: LiveGateway, spawn_worker: SpawnWorker
) -> None:
    spawn_worker("examples.echo:worker")
    ogc = await asyncio.to_thread(_client, live.base)

    processes = await asyncio.to_thread(ogc.processes)
    assert [p["id"] for p in processes] == ["echo"]
    described = await asyncio.to_thread(ogc.process, "echo")
    check("process.yaml", described)
    assert described["inputs"]["text"]["schema"] == {"type": "string"}

    # Synchronous (OWSLib sends Prefer: respond-sync, which is no preference: the default).
    results: dict[str, Any] = await asyncio.to_thread(
        ogc.execute, "echo", {"text": "now"}, response="document"
    )
    check("results.yaml", results)
    assert results == {"result": {"value": {"text": "now"}, "mediaType": "application/json"}}
    assert ogc.response_headers["Link"].endswith('rel="monitor"')

    # Asynchronous: a statusInfo and the job's Location.
    status = await asyncio.to_thread(
        ogc.execute, "echo", {"text": "later", "delay": 30}, async_=True
    )
    check("statusInfo.yaml", status)
    location = ogc.response_headers["Location"]
    assert location.endswith(f"/jobs/{status['jobID']}")

    async def running() -> bool:
        job = await asyncio.to_thread(ogc._request, path=f"jobs/{status['jobID']}")
        return bool(job["status"] == "running")

    await eventually(running, what="the job to run")
    listed = await asyncio.to_thread(ogc._request, path="jobs")
    check("jobList.yaml", listed)
    assert [j["jobID"] for j in listed["jobs"]][:1] == [status["jobID"]]

    dismissed = await asyncio.to_thread(
        ogc._request, method="DELETE", path=f"jobs/{status['jobID']}"
    )
    check("statusInfo.yaml", dismissed)
    assert dismissed["status"] == "dismissed"
