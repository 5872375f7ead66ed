"""A worker with --autoscale on the real broker: it grows to its maximum under a backlog and
shrinks back to its minimum when idle, and no job is cut or lost on the way."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import workers
from tests.conftest import Gateway
from tests.integration.test_pipeline import observe_events
from tests.support import eventually, job_state, submit
from worker_sdk import Autoscale
from worker_sdk.wire import Cancelled, Failed, Heartbeat, Retrying, Started, Succeeded

pytestmark = pytest.mark.integration

RunWorker = Callable[..., asyncio.Task[None]]


async def test_autoscale_grows_under_a_backlog_and_shrinks_when_idle_cutting_no_job(
    gateway: Gateway, namespace: str, run_worker: RunWorker, tmp_path: Path
) -> None:
    client = gateway.client
    gates = [tmp_path / f"gate-{n}" for n in range(8)]
    most_running = 0

    async with observe_events(namespace) as events:

        def concurrency() -> int | None:
            beats = [e for e in events if isinstance(e, Heartbeat)]
            return beats[-1].concurrency if beats else None

        async def statuses() -> Counter[str]:
            nonlocal most_running
            states = Counter([(await job_state(client, j))["status"] for j in jobs])
            most_running = max(most_running, states["running"])
            return states

        async def at(target: int, *, running: int, queued: int) -> bool:
            states = await statuses()
            return (
                concurrency() == target
                and states["running"] == running
                and states["accepted"] == queued
            )

        jobs = [(await submit(client, "elastic", {"gate": str(g)})).json()["jobID"] for g in gates]
        worker = run_worker(workers.elastic, autoscale=Autoscale(1, 4))

        # A backlog of 8: the worker grows to 4 and holds no more than 4.
        await eventually(lambda: at(4, running=4, queued=4), within=30, what="4 jobs at once")
        for gate in gates[:6]:
            gate.touch()
        # The backlog gone, 2 jobs still running: it shrinks to 2, and they go on.
        await eventually(lambda: at(2, running=2, queued=0), within=30, what="a shrink to 2")
        for gate in gates[6:]:
            gate.touch()
        # Idle: back to 1.
        await eventually(lambda: at(1, running=0, queued=0), within=30, what="a shrink to 1")
        assert (await statuses())["successful"] == 8

    assert most_running == 4
    assert max(e.concurrency for e in events if isinstance(e, Heartbeat)) == 4
    assert not worker.done()
    # Each job ran once, to success: none was cut (it would have run again) or lost.
    ids = {uuid.UUID(j) for j in jobs}
    runs = {(e.job_id, e.run_id) for e in events if isinstance(e, Started | Succeeded)}
    assert sorted(Counter(job for job, _ in runs).values()) == [1] * 8
    succeeded = Counter(e.job_id for e in events if isinstance(e, Succeeded))
    assert succeeded == dict.fromkeys(ids, 1)
    assert not [e for e in events if isinstance(e, Failed | Cancelled | Retrying)]
