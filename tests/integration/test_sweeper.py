"""Retention (purged jobs answer 410) and the reaper (no job stays stuck)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.store import JobRecord, SQLiteStore, StoreError, WorkerInfo
from tests import workers
from tests.conftest import Gateway, GatewayFactory
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
    # Past the queue TTL but within the grace: a dead-lettered task may still end it.
    in_grace = _record("echo", now - timedelta(hours=2, minutes=2))
    for record in (lost, in_grace):
        await store.insert(record)
    fresh = (await submit(gateway.client, "echo", {})).json()
    report = await gateway.runtime.sweeper.sweep(now)
    assert report.never_queued == 1
    state = await job_state(gateway.client, str(lost.id))
    assert (state["status"], state["reason"]) == ("failed", "not_queued")
    assert (await job_state(gateway.client, str(in_grace.id)))["status"] == "accepted"
    assert (await job_state(gateway.client, fresh["jobID"]))["status"] == "accepted"


async def test_a_job_waiting_for_a_retry_is_counted_from_its_retry(gateway: Gateway) -> None:
    """A job created long ago whose retry was recorded lately waits for its next attempt: the
    retry's copy of the task waits its delay (up to an hour), then in the queue with no
    expiration of its own. One whose retry is older than the queue TTL, the grace and the
    longest delay together is reaped as a lost first task is."""
    store = gateway.runtime.store
    now = datetime.now(UTC)
    retried_lately = _record("echo", now - timedelta(days=3))
    retried_long_ago = _record("echo", now - timedelta(days=3))
    for record, retried in (
        (retried_lately, now - timedelta(hours=2, minutes=30)),  # within TTL + grace + 1 h
        (retried_long_ago, now - timedelta(hours=3, minutes=10)),
    ):
        await store.insert(record)
        assert await store.retrying(record.id, attempt=2, message="again", at=retried)
    report = await gateway.runtime.sweeper.sweep(now)
    assert report.never_queued == 1
    waiting = await job_state(gateway.client, str(retried_lately.id))
    assert (waiting["status"], waiting["attempt"]) == ("accepted", 2)
    lost = await job_state(gateway.client, str(retried_long_ago.id))
    assert (lost["status"], lost["reason"]) == ("failed", "not_queued")


class SweepsFailAtFirst(SQLiteStore):
    """A store whose first two sweeps fail (``expire`` raises, as a store that is down)."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.sweeps = 0

    async def expire(self, now: datetime, *, limit: int = 1000) -> int:
        self.sweeps += 1
        if self.sweeps <= 2:
            raise StoreError("the store is down")
        return await super().expire(now, limit=limit)


async def test_the_sweeper_runs_on_its_own_and_outlives_failed_sweeps(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    store = SweepsFailAtFirst(tmp_path / "jobs.db")
    gateway = await gateway_factory(store=store, sweep_interval=0.05)
    lost = _record("echo", datetime.now(UTC) - timedelta(hours=3))
    await store.insert(lost)

    async def reaped() -> bool:
        state = await job_state(gateway.client, str(lost.id))
        return (state["status"], state.get("reason")) == ("failed", "not_queued")

    await eventually(reaped, within=10, what="the periodic sweep to reap the lost job")
    assert store.sweeps >= 3  # two failed sweeps, and the loop went on


async def test_the_reaper_fails_a_running_job_whose_worker_went_silent(gateway: Gateway) -> None:
    store = gateway.runtime.store
    now = datetime.now(UTC)
    ghost, alive = (
        WorkerInfo(id="ghost", host="h", version="1"),
        WorkerInfo(id="alive", host="h", version="1"),
    )
    hour_ago, minute_ago = now - timedelta(hours=1), now - timedelta(minutes=1)
    # "limited" has a 0.5 s time limit; the grace is 5 min.
    orphan, watched, in_grace = (
        _record("limited", hour_ago),
        _record("limited", hour_ago),
        _record("limited", minute_ago),
    )
    for record, worker, at in (
        (orphan, ghost, hour_ago),
        (watched, alive, hour_ago),
        (in_grace, ghost, minute_ago),
    ):
        await store.insert(record)
        await store.start(record.id, attempt=1, run_id=uuid.uuid4(), worker=worker, at=at)
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
    assert (await job_state(gateway.client, str(in_grace.id)))["status"] == "running"


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
