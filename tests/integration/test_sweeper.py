"""Retention (purged jobs answer 410) and the reaper (no job stays stuck)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.store import JobRecord, JobStatus, WorkerInfo
from tests import workers
from tests.conftest import Gateway
from tests.support import eventually, job_state, submit, wait_status

pytestmark = pytest.mark.integration


async def test_a_job_past_its_retention_is_purged_and_answers_410(gateway: Gateway) -> None:
    job = (await submit(gateway.client, "shortlived", {})).json()
    dismissed = (await gateway.client.delete(f"/jobs/{job['jobID']}")).json()
    finished = datetime.fromisoformat(dismissed["finished"])
    keep = await gateway.runtime.sweeper.sweep(finished + timedelta(seconds=59))
    assert keep.purged == 0
    report = await gateway.runtime.sweeper.sweep(finished + timedelta(seconds=61))
    assert report.purged == 1
    for path in (f"/jobs/{job['jobID']}", f"/jobs/{job['jobID']}/results"):
        gone = await gateway.client.get(path)
        assert gone.status_code == 410
        assert gone.json()["code"] == "job-gone"
    async with gateway.as_user("bob") as bob:
        assert (await bob.get(f"/jobs/{job['jobID']}")).status_code == 404
    assert (await gateway.client.get("/jobs")).json()["jobs"] == []


def _record(service: str, created: datetime) -> JobRecord:
    return JobRecord(
        id=uuid.uuid4(), service=service, owner="alice", created=created, updated=created
    )


async def test_the_reaper_fails_a_job_that_was_never_queued(gateway: Gateway) -> None:
    store = gateway.runtime.store
    now = datetime.now(UTC)
    lost = _record("echo", now - timedelta(hours=3))  # queue TTL 2 h + grace 5 min ago
    await store.insert(lost)
    fresh = (await submit(gateway.client, "echo", {})).json()
    report = await gateway.runtime.sweeper.sweep(now)
    assert report.never_queued == 1
    state = await job_state(gateway.client, str(lost.id))
    assert (state["status"], state["reason"]) == ("failed", "not_queued")
    assert (await job_state(gateway.client, fresh["jobID"]))["status"] == "accepted"


async def test_the_reaper_fails_a_running_job_whose_worker_went_silent(gateway: Gateway) -> None:
    store = gateway.runtime.store
    now = datetime.now(UTC)
    ghost, alive = (
        WorkerInfo(id="ghost", host="h", version="1"),
        WorkerInfo(id="alive", host="h", version="1"),
    )
    orphan, watched = (
        _record("limited", now - timedelta(hours=1)),
        _record("limited", now - timedelta(hours=1)),
    )
    for record, worker in ((orphan, ghost), (watched, alive)):
        await store.insert(record)
        await store.start(
            record.id, attempt=1, run_id=uuid.uuid4(), worker=worker, at=now - timedelta(hours=1)
        )
    await store.heartbeat(alive, service="limited", at=now)
    long_gone = WorkerInfo(id="long-gone", host="h", version="1")
    await store.heartbeat(long_gone, service="limited", at=now - timedelta(days=2))
    report = await gateway.runtime.sweeper.sweep(now)
    assert report.worker_lost == 1
    assert report.workers_forgotten == 1  # silent for a day: its record goes
    assert await store.last_heartbeat("long-gone") is None
    state = await job_state(gateway.client, str(orphan.id))
    assert (state["status"], state["reason"]) == ("failed", "worker_lost")
    assert (await job_state(gateway.client, str(watched.id)))["status"] == "running"


async def test_worker_heartbeats_reach_the_store(
    gateway: Gateway, run_worker: Callable[..., asyncio.Task[None]], tmp_path: Path
) -> None:
    run_worker(workers.crunch)
    gate = tmp_path / "gate"
    job = (await submit(gateway.client, "crunch", {"gate": str(gate)})).json()
    await wait_status(gateway.client, job["jobID"], "running")
    record = await gateway.runtime.store.get(uuid.UUID(job["jobID"]))
    assert record is not None
    assert record.worker is not None
    worker_id = record.worker.id

    async def heard() -> datetime | None:
        return await gateway.runtime.store.last_heartbeat(worker_id)

    assert await eventually(heard, what="a heartbeat in the store")
    gate.touch()
    await wait_status(gateway.client, job["jobID"], "successful")
    assert JobStatus.SUCCESSFUL.terminal
