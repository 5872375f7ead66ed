"""GET /jobs/{id}/events: server-sent events from submission to the terminal state."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from gateway.api import jobs as api_jobs
from gateway.auth import Principal
from gateway.runtime import Presenter
from tests import workers
from tests.conftest import Gateway
from tests.integration.test_hostile import _next_event, _token
from tests.live import LiveGateway
from tests.support import TEST_CATALOGUE, eventually, job_state, submit, wait_status

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
    # Nothing after the last event seen, the job ended: 204 stops an EventSource reconnecting.
    assert (resumed.status_code, resumed.text) == (204, "")
    again = await client.get(f"/jobs/{job['jobID']}/events", headers={"Last-Event-ID": str(ids[0])})
    assert [e["status"] for e in parse(again.text)] == ["successful"]
    # An id the job never had (a store's counter of another job, a forged one): from the start.
    beyond = await client.get(
        f"/jobs/{job['jobID']}/events", headers={"Last-Event-ID": str(ids[-1] + 10**9)}
    )
    assert beyond.status_code == 200
    assert [(e["id"], e["status"]) for e in parse(beyond.text)] == [(ids[-1], "successful")]


async def test_another_users_stream_is_404(gateway: Gateway) -> None:
    job = (await submit(gateway.client, "echo", {})).json()
    async with gateway.as_user("bob") as bob:
        response = await bob.get(f"/jobs/{job['jobID']}/events")
    assert response.status_code == 404
    assert response.json()["code"] == "no-such-job"
    async with httpx.AsyncClient(transport=gateway.transport, base_url="http://gw.test") as anon:
        assert (await anon.get(f"/jobs/{job['jobID']}/events")).status_code == 401


async def test_a_stream_resumed_while_the_job_runs_goes_on_from_the_last_event_seen(
    namespace: str, tmp_path: Path, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    """Real HTTP, so each stream is read as it comes: the first is dropped while the job
    runs, the second resumes (``Last-Event-ID``) before the job ends, and carries on to it."""
    server = LiveGateway(namespace=namespace, workdir=tmp_path, catalogue=TEST_CATALOGUE)
    server.start()
    try:
        await server.ready()
        auth = {"Authorization": f"Bearer {_token()}"}
        async with httpx.AsyncClient(base_url=server.base, headers=auth, timeout=15) as http:
            run_worker(workers.slow)
            gate = tmp_path / "gate"
            job = (await submit(http, "slow", {"gate": str(gate), "progress": 40})).json()
            path = f"/jobs/{job['jobID']}/events"
            first: list[dict[str, Any]] = []
            async with http.stream("GET", path) as response:
                lines = response.aiter_lines()
                while not first or first[-1]["data"]["progress"] != 40:
                    first.append(await _next_event(lines))
            last = first[-1]["id"]
            assert first[-1]["data"]["status"] == "running"
            assert (await job_state(http, job["jobID"]))["status"] == "running"
            second: list[dict[str, Any]] = []
            async with http.stream("GET", path, headers={"Last-Event-ID": last}) as response:
                lines = response.aiter_lines()
                gate.touch()  # the job ends only now, while the resumed stream is open
                second.append(await _next_event(lines))
                while second[-1]["data"]["status"] != "successful":
                    second.append(await _next_event(lines))
                assert [line async for line in lines] == []  # the stream ended with the job
            await wait_status(http, job["jobID"], "successful")
    finally:
        await server.stop()
    assert all(int(e["id"]) > int(last) for e in second)  # nothing seen before is repeated
    assert [e["data"]["progress"] for e in second].count(40) == 0


async def test_a_quiet_stream_sends_keep_alive_comments_and_then_the_next_change(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_jobs, "_PING_SECONDS", 0.05)
    job = (await submit(gateway.client, "echo", {})).json()  # no worker: it stays accepted
    job_id = UUID(job["jobID"])
    alice = Principal(subject="alice", scopes=frozenset(), admin=False)
    present = Presenter("http://gw.test", gateway.runtime.catalogue)
    stream = api_jobs._job_stream(gateway.runtime.jobs, job_id, alice, present, 0)
    try:
        first = await asyncio.wait_for(anext(stream), 10)
        assert [e["status"] for e in parse(first.decode())] == ["accepted"]
        assert await asyncio.wait_for(anext(stream), 10) == b": ping\n\n"
        assert await asyncio.wait_for(anext(stream), 10) == b": ping\n\n"
        dismissed = await gateway.client.delete(f"/jobs/{job_id}")
        assert dismissed.status_code == 200
        chunk = await asyncio.wait_for(anext(stream), 10)
        while chunk == b": ping\n\n":
            chunk = await asyncio.wait_for(anext(stream), 10)
        assert [e["status"] for e in parse(chunk.decode())] == ["dismissed"]
        with pytest.raises(StopAsyncIteration):  # the terminal state ends the stream
            await asyncio.wait_for(anext(stream), 10)
    finally:
        await stream.aclose()
