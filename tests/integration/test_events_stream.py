"""GET /jobs/{id}/events: server-sent events from submission to the terminal state."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import workers
from tests.conftest import Gateway
from tests.support import eventually, job_state, submit

pytestmark = pytest.mark.integration


def parse(stream: str) -> list[dict[str, Any]]:
    events = []
    for block in stream.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if fields:
            events.append(
                {"id": int(fields["id"]), "event": fields["event"], **json.loads(fields["data"])}
            )
    return events


async def test_a_job_streams_its_progress_until_it_ends(
    gateway: Gateway, run_worker: Callable[..., asyncio.Task[None]], tmp_path: Path
) -> None:
    client = gateway.client
    gate = tmp_path / "gate"
    job = (await submit(client, "crunch", {"gate": str(gate), "progress": 42})).json()
    stream = asyncio.create_task(client.get(f"/jobs/{job['jobID']}/events"))
    run_worker(workers.crunch)

    async def at_42() -> bool:
        return bool((await job_state(client, job["jobID"]))["progress"] == 42)

    await eventually(at_42, what="progress 42")
    gate.touch()
    response = await asyncio.wait_for(stream, timeout=30)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse(response.text)
    assert events[0]["status"] == "accepted"
    assert events[-1]["status"] == "successful"
    assert any(e["status"] == "running" and e["progress"] == 42 for e in events)
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids))  # rising, no repeats
    assert {e["event"] for e in events} == {"status"}

    resumed = await client.get(
        f"/jobs/{job['jobID']}/events", headers={"Last-Event-ID": str(ids[-1])}
    )
    assert parse(resumed.text) == []  # nothing after the last event seen
    again = await client.get(f"/jobs/{job['jobID']}/events", headers={"Last-Event-ID": str(ids[0])})
    assert [e["status"] for e in parse(again.text)] == ["successful"]


async def test_another_users_stream_is_404(gateway: Gateway) -> None:
    job = (await submit(gateway.client, "echo", {})).json()
    async with gateway.as_user("bob") as bob:
        response = await bob.get(f"/jobs/{job['jobID']}/events")
    assert response.status_code == 404
    assert response.json()["code"] == "no-such-job"
    async with httpx.AsyncClient(transport=gateway.transport, base_url="http://gw.test") as anon:
        assert (await anon.get(f"/jobs/{job['jobID']}/events")).status_code == 401
