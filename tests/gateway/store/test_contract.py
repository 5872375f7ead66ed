"""The store contract: every JobStore implementation runs these very tests.

Add an implementation by adding a parameter to the ``store`` fixture.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mongomock_motor import AsyncMongoMockClient
from pymongo import AsyncMongoClient

from gateway.store import (
    DuplicateJob,
    JobQuery,
    JobRecord,
    JobStatus,
    JobStore,
    MongoStore,
    SQLiteStore,
    StoreError,
    WebhookAttempt,
    WorkerInfo,
    open_store,
)
from worker_sdk.wire import ErrorInfo

# Today, to the minute: MongoDB's TTL backstop (a day, TTL_BACKSTOP) deletes a job whose
# expires_at is more than a day past the real clock, whatever the sweep under test is told.
T0 = datetime.now(UTC).replace(second=0, microsecond=0)
WORKER = WorkerInfo(id="w1", host="h1", version="1.0")


REAL_MONGODB = os.environ.get("SG_TEST_MONGODB_URL")


@pytest.fixture(
    params=[
        "sqlite",
        # mongomock-motor: a double of MongoDB's query semantics, not a server (see
        # docs/deployment.md for what it cannot vouch for).
        "mongo-double(mongomock-motor)",
        pytest.param(
            "mongodb(real)",
            marks=pytest.mark.skipif(
                REAL_MONGODB is None,
                reason="no MongoDB server here: set SG_TEST_MONGODB_URL (make test-mongo)",
            ),
        ),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    database = f"sg_test_{uuid.uuid4().hex[:12]}"
    implementation: JobStore
    if request.param == "sqlite":
        implementation = SQLiteStore(tmp_path / "jobs.db")
    elif request.param.startswith("mongo-double"):
        implementation = MongoStore(
            "mongodb://double",
            database=database,
            client_factory=lambda: AsyncMongoMockClient(tz_aware=True),
        )
    else:
        assert REAL_MONGODB is not None
        implementation = MongoStore(REAL_MONGODB, database=database)
    await implementation.open()
    yield implementation
    if isinstance(implementation, MongoStore) and request.param == "mongodb(real)":
        client: AsyncMongoClient[Any] = AsyncMongoClient(REAL_MONGODB)
        await client.drop_database(database)
        await client.close()
    await implementation.close()


def _record(**overrides: object) -> JobRecord:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "service": "echo",
        "owner": "alice",
        "inputs": {"n": 1, "nested": {"x": [1, 2]}},
        "created": T0,
        "updated": T0,
    }
    values.update(overrides)
    return JobRecord.model_validate(values)


async def test_insert_then_get_returns_the_same_record(store: JobStore) -> None:
    record = _record(idempotency_key="k1", subscriber={"successUri": "https://x/y"})
    await store.insert(record)
    assert await store.get(record.id) == record


async def test_an_insert_that_says_it_counted_its_job_raised_the_counter(store: JobStore) -> None:
    counted = [await store.insert(_record(), counter="submissions:echo") for _ in range(3)]
    assert await store.counters("submissions:") == (
        {"submissions:echo": sum(counted)} if any(counted) else {}
    )


async def test_get_unknown_is_none(store: JobStore) -> None:
    assert await store.get(uuid.uuid4()) is None


async def test_owners_names_the_owner_of_each_job_that_exists(store: JobStore) -> None:
    alices, bobs = _record(), _record(owner="bob")
    finished = _record(status="successful", result={"ok": True})
    for record in (alices, bobs, finished):
        await store.insert(record)
    unknown = [uuid.uuid4() for _ in range(600)]  # past one statement's batch of ids
    found = await store.owners([*unknown, alices.id, bobs.id, finished.id])
    assert found == {alices.id: "alice", bobs.id: "bob", finished.id: "alice"}
    assert await store.owners([]) == {}


async def test_start_marks_running_once_per_run(store: JobStore) -> None:
    record = _record()
    await store.insert(record)
    run = uuid.uuid4()
    started = await store.start(record.id, attempt=1, run_id=run, worker=WORKER, at=T0)
    assert started is not None
    assert started.status is JobStatus.RUNNING
    assert started.worker == WORKER
    assert started.started == T0
    again = await store.start(record.id, attempt=1, run_id=run, worker=WORKER, at=T0)
    assert again is None


async def test_a_new_run_restarts_progress_but_keeps_the_first_start_time(store: JobStore) -> None:
    record = _record()
    await store.insert(record)
    first, second = uuid.uuid4(), uuid.uuid4()
    await store.start(record.id, attempt=1, run_id=first, worker=WORKER, at=T0)
    await store.progress(record.id, run_id=first, seq=1, percent=60, message="m", at=T0)
    later = T0 + timedelta(seconds=5)
    redelivered = await store.start(record.id, attempt=1, run_id=second, worker=WORKER, at=later)
    assert redelivered is not None
    assert redelivered.progress == 0
    assert redelivered.run_id == second
    assert redelivered.started == T0
    stale = await store.progress(record.id, run_id=first, seq=2, percent=70, message=None, at=later)
    assert stale is None


async def test_progress_only_rises_within_a_run(store: JobStore) -> None:
    record = _record()
    await store.insert(record)
    run = uuid.uuid4()
    await store.start(record.id, attempt=1, run_id=run, worker=WORKER, at=T0)
    p = await store.progress(record.id, run_id=run, seq=2, percent=50, message="half", at=T0)
    assert p is not None
    assert (p.progress, p.message) == (50, "half")
    assert (
        await store.progress(record.id, run_id=run, seq=1, percent=40, message=None, at=T0) is None
    )
    assert (
        await store.progress(record.id, run_id=run, seq=3, percent=30, message=None, at=T0) is None
    )
    assert (
        await store.progress(record.id, run_id=run, seq=2, percent=90, message=None, at=T0) is None
    )
    current = await store.get(record.id)
    assert current is not None
    assert current.progress == 50


async def test_progress_before_start_is_ignored(store: JobStore) -> None:
    record = _record()
    await store.insert(record)
    result = await store.progress(
        record.id, run_id=uuid.uuid4(), seq=1, percent=10, message=None, at=T0
    )
    assert result is None


async def test_terminal_states_are_sticky(store: JobStore) -> None:
    record = _record()
    await store.insert(record)
    done = await store.finish(record.id, status=JobStatus.SUCCESSFUL, at=T0, result={"ok": 1})
    assert done is not None
    assert (done.status, done.result, done.progress, done.finished) == (
        JobStatus.SUCCESSFUL,
        {"ok": 1},
        100,
        T0,
    )
    error = ErrorInfo(code="x", type="E", message="late")
    assert await store.finish(record.id, status=JobStatus.FAILED, at=T0, error=error) is None
    run = uuid.uuid4()
    assert await store.start(record.id, attempt=2, run_id=run, worker=WORKER, at=T0) is None
    assert (
        await store.progress(record.id, run_id=run, seq=9, percent=1, message=None, at=T0) is None
    )
    final = await store.get(record.id)
    assert final == done


async def test_purge_drops_a_finished_result_once(store: JobStore) -> None:
    record = _record()
    await store.insert(record)
    assert await store.purge(record.id, at=T0) is None  # nothing to purge while active
    assert await store.get(record.id) == record
    done = await store.finish(record.id, status=JobStatus.SUCCESSFUL, at=T0, result={"ok": 1})
    assert done is not None
    later = T0 + timedelta(seconds=5)
    purged = await store.purge(record.id, at=later)
    assert purged is not None
    assert (purged.status, purged.result, purged.purged, purged.updated) == (
        JobStatus.SUCCESSFUL,
        None,
        later,
        later,
    )
    assert purged.seq > done.seq  # a change clients see
    assert await store.purge(record.id, at=later + timedelta(seconds=1)) is None
    assert await store.get(record.id) == purged
    assert await store.purge(uuid.uuid4(), at=later) is None


async def test_retrying_puts_a_run_back_to_accepted_once_per_attempt(store: JobStore) -> None:
    record = _record()
    await store.insert(record)
    run = uuid.uuid4()
    await store.start(record.id, attempt=1, run_id=run, worker=WORKER, at=T0)
    await store.progress(record.id, run_id=run, seq=1, percent=40, message="half", at=T0)
    t1 = T0 + timedelta(seconds=1)
    back = await store.retrying(record.id, attempt=2, message="attempt 2 in 1s", at=t1)
    assert back is not None
    assert (back.status, back.attempt, back.progress, back.message, back.run_id) == (
        JobStatus.ACCEPTED,
        2,
        0,
        "attempt 2 in 1s",
        None,
    )
    assert back.updated == t1
    # The same attempt again (a duplicate event), or an older one, changes nothing.
    assert await store.retrying(record.id, attempt=2, message="again", at=t1) is None
    assert await store.retrying(record.id, attempt=1, message="older", at=t1) is None
    # The old run's late progress is ignored; the new run starts and reports afresh.
    assert (
        await store.progress(record.id, run_id=run, seq=2, percent=90, message=None, at=t1) is None
    )
    second = uuid.uuid4()
    again = await store.start(record.id, attempt=2, run_id=second, worker=WORKER, at=t1)
    assert again is not None
    assert (again.status, again.attempt) == (JobStatus.RUNNING, 2)
    await store.finish(record.id, status=JobStatus.FAILED, at=t1)
    assert await store.retrying(record.id, attempt=3, message="too late", at=t1) is None
    assert await store.retrying(uuid.uuid4(), attempt=2, message="nobody", at=t1) is None


async def test_a_late_end_of_an_earlier_attempt_leaves_the_retry_alone(store: JobStore) -> None:
    """Attempt 1 failed and asked for a retry; its task ran twice (a redelivery), and the
    other run's end arrives once attempt 2 is queued, then once it runs: neither ends the
    job, nor takes its attempt back. Attempt 2's own end does."""
    record = _record()
    await store.insert(record)
    await store.start(record.id, attempt=1, run_id=uuid.uuid4(), worker=WORKER, at=T0)
    await store.retrying(record.id, attempt=2, message="attempt 2 in 1s", at=T0)
    error = ErrorInfo(code="handler_error", type="ValueError", message="late")
    late = {"status": JobStatus.FAILED, "at": T0, "error": error, "attempt": 1}
    assert await store.finish(record.id, **late) is None
    await store.start(record.id, attempt=2, run_id=uuid.uuid4(), worker=WORKER, at=T0)
    assert await store.finish(record.id, **late) is None
    current = await store.get(record.id)
    assert current is not None
    assert (current.status, current.attempt, current.error) == (JobStatus.RUNNING, 2, None)
    done = await store.finish(record.id, status=JobStatus.SUCCESSFUL, at=T0, result=1, attempt=2)
    assert done is not None
    assert (done.status, done.attempt, done.result) == (JobStatus.SUCCESSFUL, 2, 1)


async def test_a_worker_clock_behind_never_puts_a_run_before_its_job(store: JobStore) -> None:
    """A start or an end stamped by a worker whose clock is behind the gateway's is moved to
    the job's creation; ``updated`` never goes back."""
    behind = _record()
    await store.insert(behind)
    started = await store.start(
        behind.id, attempt=1, run_id=uuid.uuid4(), worker=WORKER, at=T0 - timedelta(seconds=5)
    )
    assert started is not None
    assert (started.started, started.updated) == (T0, T0)
    ended = await store.finish(behind.id, status=JobStatus.SUCCESSFUL, at=T0 - timedelta(seconds=3))
    assert ended is not None
    assert (ended.started, ended.finished, ended.updated) == (T0, T0, T0)
    assert await store.get(behind.id) == ended
    # An end that names its own start (no started event announced the run).
    unannounced = _record()
    await store.insert(unannounced)
    quick = await store.finish(
        unannounced.id,
        status=JobStatus.FAILED,
        at=T0 - timedelta(seconds=1),
        started=T0 - timedelta(seconds=2),
        worker=WORKER,
    )
    assert quick is not None
    assert (quick.started, quick.finished) == (T0, T0)
    # A clock that went back between a run's start and its end: the end is not put before
    # the start, and the last change's time does not go back.
    later = _record()
    await store.insert(later)
    t10 = T0 + timedelta(seconds=10)
    await store.start(later.id, attempt=1, run_id=uuid.uuid4(), worker=WORKER, at=t10)
    back = await store.finish(later.id, status=JobStatus.SUCCESSFUL, at=T0 + timedelta(seconds=4))
    assert back is not None
    assert (back.started, back.finished, back.updated) == (t10, t10, t10)


async def test_every_state_a_mongodb_reader_may_see_has_a_seq_of_its_own(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An end that names its worker and whose times are corrected takes three updates on
    MongoDB; a reader (an event stream, the status cache) may read between any two, so each
    must raise ``seq``, or the last would look like the state already seen."""
    if not isinstance(store, MongoStore):
        pytest.skip("SQLite makes each change in one statement")
    seen: list[dict[str, Any]] = []  # each document as an update left it
    collection = store._collection
    update = collection.find_one_and_update

    async def spied(*args: Any, **kwargs: Any) -> Any:
        doc = await update(*args, **kwargs)
        if doc is not None:
            seen.append(doc)
        return doc

    monkeypatch.setattr(collection, "find_one_and_update", spied)
    record = _record()
    await store.insert(record)
    ended = await store.finish(
        record.id,
        status=JobStatus.FAILED,
        at=T0 - timedelta(seconds=1),
        started=T0 - timedelta(seconds=2),
        worker=WORKER,
    )
    assert ended is not None
    assert ended.worker is not None
    assert (ended.started, ended.finished) == (T0, T0)
    assert len(seen) == 3  # the end, its times corrected, its worker named
    assert [state["seq"] for state in seen] == list(range(record.seq + 1, record.seq + 4))
    assert ended.seq == seen[-1]["seq"]
    assert await store.get(record.id) == ended


async def test_a_successful_null_result_is_kept_as_null(store: JobStore) -> None:
    record = _record()
    await store.insert(record)
    await store.finish(record.id, status=JobStatus.SUCCESSFUL, at=T0, result=None)
    final = await store.get(record.id)
    assert final is not None
    assert final.status is JobStatus.SUCCESSFUL
    assert final.result is None


async def test_failure_keeps_the_error_and_reason(store: JobStore) -> None:
    record = _record()
    await store.insert(record)
    error = ErrorInfo(code="time_limit", type="TimeoutError", message="too slow", retryable=False)
    failed = await store.finish(
        record.id, status=JobStatus.FAILED, at=T0, reason="time_limit", error=error, attempt=3
    )
    assert failed is not None
    assert (failed.status, failed.reason, failed.error, failed.attempt) == (
        JobStatus.FAILED,
        "time_limit",
        error,
        3,
    )


async def test_finish_only_from_given_states(store: JobStore) -> None:
    record = _record()
    await store.insert(record)
    await store.start(record.id, attempt=1, run_id=uuid.uuid4(), worker=WORKER, at=T0)
    expired = await store.finish(
        record.id,
        status=JobStatus.DISMISSED,
        at=T0,
        reason="expired",
        only_from={JobStatus.ACCEPTED},
    )
    assert expired is None
    current = await store.get(record.id)
    assert current is not None
    assert current.status is JobStatus.RUNNING


async def test_concurrent_terminal_updates_apply_exactly_once(store: JobStore) -> None:
    record = _record()
    await store.insert(record)
    outcomes = await asyncio.gather(
        *(
            store.finish(record.id, status=JobStatus.SUCCESSFUL, at=T0, result={"i": i})
            for i in range(20)
        )
    )
    applied = [o for o in outcomes if o is not None]
    assert len(applied) == 1
    assert await store.get(record.id) == applied[0]


async def test_unknown_jobs_are_not_created_by_updates(store: JobStore) -> None:
    ghost = uuid.uuid4()
    assert await store.finish(ghost, status=JobStatus.SUCCESSFUL, at=T0) is None
    assert await store.start(ghost, attempt=1, run_id=uuid.uuid4(), worker=WORKER, at=T0) is None
    assert await store.get(ghost) is None


async def test_ping_answers_when_open_and_fails_when_closed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "x.db")
    with pytest.raises(StoreError):
        await store.ping()
    await store.open()
    await store.ping()
    await store.close()
    await store.close()
    with pytest.raises(StoreError):
        await store.ping()


async def test_sqlite_open_fails_clearly_on_an_unusable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = SQLiteStore(blocker / "jobs.db")
    with pytest.raises((StoreError, OSError)):
        await store.open()


async def test_finish_fills_an_unannounced_start_and_keeps_an_announced_one(
    store: JobStore,
) -> None:
    quick, slow = _record(), _record()
    await store.insert(quick)
    await store.insert(slow)
    other = WorkerInfo(id="w2", host="h2", version="2.0")
    later = T0 + timedelta(seconds=3)
    done = await store.finish(
        quick.id, status=JobStatus.SUCCESSFUL, at=later, started=T0, worker=other
    )
    assert done is not None
    assert (done.started, done.worker) == (T0, other)
    await store.start(slow.id, attempt=1, run_id=uuid.uuid4(), worker=WORKER, at=T0)
    done = await store.finish(
        slow.id, status=JobStatus.SUCCESSFUL, at=later, started=later, worker=other
    )
    assert done is not None
    assert (done.started, done.worker) == (T0, WORKER)


async def _pages(store: JobStore, query: JobQuery) -> list[list[uuid.UUID]]:
    """Every page of ``query``, following the keyset from each page's last job."""
    pages: list[list[uuid.UUID]] = []
    while True:
        page = await store.page_jobs(query)
        if page:
            pages.append([r.id for r in page])
        if len(page) < query.limit:
            return pages
        query = replace(query, after=(page[-1].created, page[-1].id))


async def test_pages_follow_the_keyset_newest_first_without_gaps_or_repeats(
    store: JobStore,
) -> None:
    # Jobs created at the same instant are told apart by id; microsecond and whole-second
    # timestamps mix (their stored forms differ in length).
    created = [T0 + timedelta(seconds=i // 3, microseconds=(i % 3) * 250_000) for i in range(11)]
    records = [_record(owner="alice", created=at, updated=at) for at in created]
    records += [_record(owner="alice", created=T0 + timedelta(seconds=2)) for _ in range(3)]
    records.append(_record(owner="bob", created=T0 + timedelta(seconds=1)))
    for record in records:
        await store.insert(record)
    alice = sorted((r for r in records if r.owner == "alice"), key=lambda r: (r.created, str(r.id)))
    expected = [r.id for r in reversed(alice)]
    pages = await _pages(store, JobQuery(owner="alice", limit=4))
    assert [len(p) for p in pages] == [4, 4, 4, 2]
    assert [job for page in pages for job in page] == expected
    everyone = await _pages(store, JobQuery(owner=None, limit=5))
    assert sum(len(p) for p in everyone) == len(records)
    assert len({job for page in everyone for job in page}) == len(records)
    # A position past the last job is an empty page, not an error.
    last = alice[0]
    assert await store.page_jobs(JobQuery(owner="alice", after=(last.created, last.id))) == []


async def test_pages_filter_by_process_status_created_and_duration(store: JobStore) -> None:
    def at(seconds: float) -> datetime:
        return T0 + timedelta(seconds=seconds)

    quick = _record(owner="alice", service="echo", created=at(0), updated=at(0))
    slow = _record(owner="alice", service="echo", created=at(1), updated=at(1))
    running = _record(owner="alice", service="other", created=at(2), updated=at(2))
    queued = _record(owner="alice", service="other", created=at(3), updated=at(3))
    purged = _record(owner="alice", service="other", created=at(4), updated=at(4))
    theirs = _record(owner="bob", service="echo", created=at(5), updated=at(5))
    for record in (quick, slow, running, queued, purged, theirs):
        await store.insert(record)
    for job, started, finished in ((quick, 10, 12), (slow, 10, 70), (purged, 10, 11)):
        await store.start(job.id, attempt=1, run_id=uuid.uuid4(), worker=WORKER, at=at(started))
        await store.finish(job.id, status=JobStatus.SUCCESSFUL, at=at(finished))
    await store.start(running.id, attempt=1, run_id=uuid.uuid4(), worker=WORKER, at=at(100))
    await store.purge(purged.id, at=at(20))

    async def ids(**filters: Any) -> list[uuid.UUID]:
        return [r.id for r in await store.page_jobs(JobQuery(owner="alice", **filters))]

    assert await ids(services=("echo",)) == [slow.id, quick.id]
    assert await ids(services=("echo", "other")) == [
        purged.id,
        queued.id,
        running.id,
        slow.id,
        quick.id,
    ]
    assert await ids(services=("nothing",)) == []
    # A dismissed (purged) result shows as dismissed, and no longer as successful.
    assert await ids(statuses=frozenset({JobStatus.SUCCESSFUL})) == [slow.id, quick.id]
    assert await ids(statuses=frozenset({JobStatus.DISMISSED})) == [purged.id]
    assert await ids(statuses=frozenset({JobStatus.ACCEPTED, JobStatus.RUNNING})) == [
        queued.id,
        running.id,
    ]
    assert await ids(created_from=at(1), created_to=at(3)) == [queued.id, running.id, slow.id]
    assert await ids(created_from=at(4)) == [purged.id]
    assert await ids(created_to=at(0)) == [quick.id]
    # Durations: finished - started, or now - started while running; never a queued job.
    now = at(130)
    assert await ids(min_duration=30, now=now) == [running.id, slow.id]
    assert await ids(max_duration=5, now=now) == [purged.id, quick.id]
    assert await ids(min_duration=1, max_duration=40, now=now) == [purged.id, running.id, quick.id]
    assert await ids(min_duration=0, now=now, statuses=frozenset({JobStatus.RUNNING})) == [
        running.id
    ]
    # Filters and the keyset together.
    first = await store.page_jobs(JobQuery(owner="alice", services=("echo", "other"), limit=2))
    rest = await ids(services=("echo", "other"), after=(first[-1].created, first[-1].id))
    assert rest == [running.id, slow.id, quick.id]


async def test_active_jobs_are_counted_per_owner(store: JobStore) -> None:
    mine = [_record(owner="carol") for _ in range(3)]
    for record in [*mine, _record(owner="dave")]:
        await store.insert(record)
    await store.start(mine[0].id, attempt=1, run_id=uuid.uuid4(), worker=WORKER, at=T0)
    await store.finish(mine[1].id, status=JobStatus.FAILED, at=T0)
    assert await store.count_active("carol") == 2
    assert await store.count_active("dave") == 1
    assert await store.count_active("nobody") == 0


async def test_recovery_claims_an_unqueued_first_attempt_once_per_lease(store: JobStore) -> None:
    record, marked, running = _record(), _record(), _record()
    for job in (record, marked, running):
        await store.insert(job)
    lease = timedelta(seconds=30)
    assert await store.claim_recovery(record.id, at=T0, lease=lease)
    # Another replica within the lease is refused; after it, the claim may be taken again.
    assert not await store.claim_recovery(record.id, at=T0 + lease / 2, lease=lease)
    assert await store.claim_recovery(record.id, at=T0 + lease * 2, lease=lease)
    # A job whose task is confirmed, or that runs, is never claimed.
    await store.mark_queued([marked.id], at=T0)
    assert not await store.claim_recovery(marked.id, at=T0, lease=lease)
    await store.start(running.id, attempt=1, run_id=uuid.uuid4(), worker=WORKER, at=T0)
    assert not await store.claim_recovery(running.id, at=T0, lease=lease)
    assert not await store.claim_recovery(uuid.uuid4(), at=T0, lease=lease)


async def test_a_job_back_to_accepted_for_a_retry_is_not_claimed_for_recovery(
    store: JobStore,
) -> None:
    """Its first task reached a worker (which ran it and asked for the retry) even when the
    mark of that task was lost: republishing attempt 1 would run the job beside attempt 2."""
    record = _record()
    await store.insert(record)
    await store.start(record.id, attempt=1, run_id=uuid.uuid4(), worker=WORKER, at=T0)
    assert await store.retrying(record.id, attempt=2, message="attempt 2 in 1s", at=T0)
    assert not await store.claim_recovery(record.id, at=T0, lease=timedelta(seconds=30))
    assert await store.unqueued(service="echo", before=T0 + timedelta(days=1)) == []


# PyMongo leaves the socket of the refused connect unclosed, held by the error it keeps in its
# topology: dropped and collected here, under this filter, it no longer fails a later test.
@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")
async def test_mongo_open_fails_clearly_when_no_server_answers() -> None:
    # The real driver, against a port where nothing listens.
    store = MongoStore("mongodb://127.0.0.1:1/sg?serverSelectionTimeoutMS=300")
    with pytest.raises(StoreError, match="cannot open the MongoDB store"):
        await store.open()
    with pytest.raises(StoreError):
        await store.ping()
    await store.close()
    del store
    gc.collect()


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("sqlite:///./x.db", SQLiteStore),
        ("mongodb://db1,db2/sg?replicaSet=rs0", MongoStore),
        ("mongodb+srv://cluster.example.org/sg", MongoStore),
    ],
)
def test_the_store_is_chosen_by_its_url(url: str, kind: type) -> None:
    assert isinstance(open_store(url), kind)


async def test_usage_counters_add_up(store: JobStore) -> None:
    await asyncio.gather(*(store.bump("submissions:echo") for _ in range(5)))
    await store.bump("submissions:textstats", by=3)
    await store.bump("other")
    assert await store.counters("submissions:") == {
        "submissions:echo": 5,
        "submissions:textstats": 3,
    }
    assert (await store.counters())["other"] == 1
    assert await store.counters("nothing:") == {}


async def test_an_idempotency_key_is_unique_per_owner(store: JobStore) -> None:
    first = _record(owner="erin", idempotency_key="k")
    await store.insert(first)
    with pytest.raises(DuplicateJob):
        await store.insert(_record(owner="erin", idempotency_key="k"))
    await store.insert(_record(owner="frank", idempotency_key="k"))  # another owner's key
    await store.insert(_record(owner="erin"))  # no key, no constraint
    await store.insert(_record(owner="erin"))
    assert await store.find_by_key("erin", "k") == first
    assert await store.find_by_key("erin", "other") is None
    await store.release_key(first.id)
    assert await store.find_by_key("erin", "k") is None
    await store.insert(_record(owner="erin", idempotency_key="k"))


async def test_expired_jobs_leave_a_tombstone_naming_their_owner(store: JobStore) -> None:
    old, fresh, kept = _record(owner="gina"), _record(owner="gina"), _record(owner="gina")
    for record in (old, fresh, kept):
        await store.insert(record)
    await store.finish(old.id, status=JobStatus.SUCCESSFUL, at=T0, expires_at=T0)
    later = T0 + timedelta(days=7)
    await store.finish(fresh.id, status=JobStatus.FAILED, at=T0, expires_at=later)
    assert await store.expire(T0 + timedelta(seconds=1)) == 1
    assert await store.get(old.id) is None
    assert await store.tombstone(old.id) == "gina"
    assert await store.get(fresh.id) is not None
    assert await store.tombstone(fresh.id) is None
    assert await store.expire(later) == 1
    assert await store.get(kept.id) is not None  # no expires_at: kept
    assert await store.expire(later + timedelta(days=365)) == 0


async def test_stale_jobs_are_found_by_their_age(store: JobStore) -> None:
    old = _record(service="svc", created=T0, updated=T0)
    new = _record(service="svc", created=T0 + timedelta(hours=1), updated=T0)
    running = _record(service="svc", created=T0, updated=T0)
    for record in (old, new, running):
        await store.insert(record)
    await store.start(running.id, attempt=1, run_id=uuid.uuid4(), worker=WORKER, at=T0)
    cutoff = T0 + timedelta(minutes=30)
    accepted = await store.stale(service="svc", status=JobStatus.ACCEPTED, before=cutoff)
    assert [r.id for r in accepted] == [old.id]
    stuck = await store.stale(service="svc", status=JobStatus.RUNNING, before=cutoff)
    assert [r.id for r in stuck] == [running.id]
    assert await store.stale(service="other", status=JobStatus.ACCEPTED, before=cutoff) == []


async def test_a_retried_job_is_stale_by_its_retry_not_its_creation(store: JobStore) -> None:
    """An accepted job waiting for another attempt counts from its retry (``updated``), before
    ``retried_before``; a first attempt from its creation, before ``before``."""
    first = _record(service="svc", created=T0, updated=T0)
    lately = _record(service="svc", created=T0, updated=T0)
    long_ago = _record(service="svc", created=T0, updated=T0)
    for record in (first, lately, long_ago):
        await store.insert(record)
    assert await store.retrying(lately.id, attempt=2, message="", at=T0 + timedelta(hours=5))
    assert await store.retrying(long_ago.id, attempt=3, message="", at=T0 + timedelta(hours=1))
    cutoff = T0 + timedelta(hours=6)
    found = await store.stale(
        service="svc",
        status=JobStatus.ACCEPTED,
        before=cutoff,
        retried_before=cutoff - timedelta(hours=3),
    )
    assert sorted(r.id for r in found) == sorted([first.id, long_ago.id])
    everyone = await store.stale(service="svc", status=JobStatus.ACCEPTED, before=cutoff)
    assert len(everyone) == 3


async def test_heartbeats_keep_the_latest_time(store: JobStore) -> None:
    assert await store.last_heartbeat("w1") is None
    await store.heartbeat(WORKER, service="echo", at=T0 + timedelta(seconds=5))
    await store.heartbeat(WORKER, service="echo", at=T0)  # late, out of order
    assert await store.last_heartbeat("w1") == T0 + timedelta(seconds=5)


async def test_active_workers_and_counter_start(store: JobStore) -> None:
    other = WorkerInfo(id="w2", host="h", version="1")
    await store.heartbeat(WORKER, service="echo", at=T0)
    await store.heartbeat(other, service="echo", at=T0 - timedelta(minutes=5))
    assert await store.active_workers("echo", since=T0 - timedelta(seconds=30)) == 1
    assert await store.active_workers("textstats", since=T0 - timedelta(days=1)) == 0
    assert await store.counter_since("submissions:echo") is None
    before = datetime.now(UTC)
    await store.bump("submissions:echo")
    await store.bump("submissions:echo")
    since = await store.counter_since("submissions:echo")
    assert since is not None
    assert before - timedelta(seconds=1) <= since <= datetime.now(UTC)


HOOKS = {"successUri": "https://hooks.example.org/done"}


async def _owed(store: JobStore, before: datetime) -> list[uuid.UUID]:
    return [r.id for r in await store.owed_webhooks(before=before)]


async def test_a_subscribed_job_owes_webhooks_until_its_terminal_one_is_marked(
    store: JobStore,
) -> None:
    job = _record(subscriber=HOOKS, webhook_open=True)
    quiet = _record()  # no subscriber: never owes anything
    for record in (job, quiet):
        await store.insert(record)
    soon = T0 + timedelta(hours=1)
    assert await _owed(store, soon) == [job.id]
    assert await _owed(store, T0) == []  # updated too recently for the sweep
    await store.mark_webhook(job.id, seq=1, close=False)
    assert await _owed(store, soon) == []
    started = await store.start(job.id, attempt=1, run_id=uuid.uuid4(), worker=WORKER, at=T0)
    assert started is not None
    assert await _owed(store, soon) == [job.id]
    await store.mark_webhook(job.id, seq=1, close=False)  # late: never moves back
    assert await _owed(store, soon) == [job.id]
    await store.mark_webhook(job.id, seq=started.seq, close=False)
    assert await _owed(store, soon) == []
    done = await store.finish(job.id, status=JobStatus.SUCCESSFUL, at=T0, result=1)
    assert done is not None
    assert done.webhook_open
    assert await _owed(store, soon) == [job.id]
    await store.mark_webhook(job.id, seq=done.seq, close=True)
    closed = await store.get(job.id)
    assert closed is not None
    assert (closed.webhook_open, closed.webhook_seq) == (False, done.seq)
    await store.purge(job.id, at=T0)
    assert await _owed(store, soon) == []  # closed: a later change owes nothing
    await store.mark_webhook(job.id, seq=done.seq + 5, close=False)
    again = await store.get(job.id)
    assert again is not None
    assert again.webhook_seq == done.seq  # a closed job is not marked any more


async def test_webhook_attempts_add_up_and_a_delivery_stays_delivered(store: JobStore) -> None:
    job = _record(subscriber=HOOKS, webhook_open=True)
    await store.insert(job)
    event = f"{job.id}.successful"
    assert await store.webhook_delivery(event) is None
    base = WebhookAttempt(
        event_id=event, job_id=job.id, type="job.successful", url=HOOKS["successUri"], at=T0
    )
    retry_at = T0 + timedelta(seconds=5)
    await store.record_webhook_attempt(
        base.model_copy(update={"status_code": 500, "error": "HTTP 500", "next_attempt": retry_at})
    )
    first = await store.webhook_delivery(event)
    assert first is not None
    assert (first.attempts, first.last_status, first.state) == (1, 500, "retrying")
    assert (first.first_attempt, first.next_attempt, first.delivered) == (T0, retry_at, None)
    ok_at = T0 + timedelta(seconds=6)
    await store.record_webhook_attempt(
        base.model_copy(update={"at": ok_at, "status_code": 204, "delivered": True})
    )
    # A duplicate's late failure does not undo the delivery.
    late = T0 + timedelta(seconds=9)
    await store.record_webhook_attempt(
        base.model_copy(update={"at": late, "error": "timed out", "exhausted": True})
    )
    deliveries = await store.webhook_deliveries(job.id)
    assert [d.id for d in deliveries] == [event]
    (delivery,) = deliveries
    assert (delivery.attempts, delivery.delivered, delivery.state) == (3, ok_at, "delivered")
    assert (delivery.first_attempt, delivery.last_attempt, delivery.job_id) == (T0, late, job.id)
    assert await store.webhook_deliveries(uuid.uuid4()) == []


async def test_a_deferral_moves_the_next_attempt_and_counts_none(store: JobStore) -> None:
    job = _record(subscriber=HOOKS, webhook_open=True)
    await store.insert(job)
    event, url = f"{job.id}.successful", HOOKS["successUri"]
    due = T0 + timedelta(seconds=5)
    later = T0 + timedelta(seconds=300)

    async def defer(event_id: str, at: datetime) -> None:
        await store.defer_webhook(
            event_id=event_id, job_id=job.id, type="job.successful", url=url, due=at
        )

    # Deferred before its first attempt: shown, with no attempt.
    await defer(event, due)
    waiting = await store.webhook_delivery(event)
    assert waiting is not None
    assert (waiting.attempts, waiting.first_attempt, waiting.next_attempt) == (0, None, due)
    assert (waiting.state, waiting.url, waiting.job_id) == ("retrying", url, job.id)
    await defer(event, later)
    moved = await store.webhook_delivery(event)
    assert moved is not None
    assert (moved.attempts, moved.next_attempt) == (0, later)
    # Its first attempt is then its first; a failed one schedules the next.
    at = T0 + timedelta(seconds=301)
    await store.record_webhook_attempt(
        WebhookAttempt(
            event_id=event,
            job_id=job.id,
            type="job.successful",
            url=url,
            at=at,
            status_code=204,
            delivered=True,
        )
    )
    done = await store.webhook_delivery(event)
    assert done is not None
    assert (done.attempts, done.first_attempt, done.delivered, done.state) == (
        1,
        at,
        at,
        "delivered",
    )
    # A deferral met by a delivered or exhausted delivery changes nothing.
    await defer(event, later + timedelta(hours=1))
    assert await store.webhook_delivery(event) == done
    exhausted = WebhookAttempt(
        event_id=f"{job.id}.failed",
        job_id=job.id,
        type="job.failed",
        url=url,
        at=T0,
        error="refused",
        exhausted=True,
    )
    await store.record_webhook_attempt(exhausted)
    before = await store.webhook_delivery(exhausted.event_id)
    await defer(exhausted.event_id, later)
    assert await store.webhook_delivery(exhausted.event_id) == before
    assert [d.id for d in await store.webhook_deliveries(job.id)] == [exhausted.event_id, event]


async def test_a_delivery_of_a_job_that_is_gone_is_not_recorded(store: JobStore) -> None:
    job = _record(subscriber=HOOKS, webhook_open=True)
    await store.insert(job)
    await store.finish(job.id, status=JobStatus.SUCCESSFUL, at=T0, expires_at=T0)
    assert await store.expire(T0 + timedelta(seconds=1)) == 1
    event, url = f"{job.id}.successful", HOOKS["successUri"]
    await store.record_webhook_attempt(
        WebhookAttempt(
            event_id=event, job_id=job.id, type="job.successful", url=url, at=T0, error="HTTP 500"
        )
    )
    await store.defer_webhook(
        event_id=f"{job.id}.failed", job_id=job.id, type="job.failed", url=url, due=T0
    )
    assert await store.webhook_delivery(event) is None
    assert await store.webhook_delivery(f"{job.id}.failed") is None
    assert await store.webhook_deliveries(job.id) == []


async def test_an_exhausted_delivery_is_failed_and_goes_with_its_expired_job(
    store: JobStore,
) -> None:
    job = _record(subscriber=HOOKS, webhook_open=True)
    await store.insert(job)
    attempt = WebhookAttempt(
        event_id=f"{job.id}.failed",
        job_id=job.id,
        type="job.failed",
        url=HOOKS["successUri"],
        at=T0,
        error="connection refused",
        exhausted=True,
    )
    await store.record_webhook_attempt(attempt)
    (delivery,) = await store.webhook_deliveries(job.id)
    assert (delivery.state, delivery.last_error, delivery.last_status) == (
        "failed",
        "connection refused",
        None,
    )
    await store.finish(job.id, status=JobStatus.FAILED, at=T0, expires_at=T0)
    assert await store.expire(T0 + timedelta(seconds=1)) == 1
    assert await store.webhook_deliveries(job.id) == []
    assert await store.webhook_delivery(attempt.event_id) is None


async def test_live_workers_show_their_newest_heartbeat(store: JobStore) -> None:
    job = uuid.uuid4()
    await store.heartbeat(WORKER, service="echo", at=T0, concurrency=2, running=[job])
    later = WorkerInfo(id="w1", host="h1", version="1.1")
    await store.heartbeat(later, service="echo", at=T0 + timedelta(seconds=5), concurrency=4)
    await store.heartbeat(WORKER, service="echo", at=T0 + timedelta(seconds=1), running=[job])
    other = WorkerInfo(id="w2", host="h2", version="2.0")
    await store.heartbeat(other, service="textstats", at=T0, concurrency=1, running=[job])
    silent = WorkerInfo(id="w3", host="h3", version="1.0")
    await store.heartbeat(silent, service="echo", at=T0 - timedelta(minutes=5))
    live = await store.live_workers(since=T0 - timedelta(seconds=30))
    assert [(w.id, w.service) for w in live] == [("w1", "echo"), ("w2", "textstats")]
    first = live[0]
    assert (first.version, first.concurrency, first.running) == ("1.1", 4, ())
    assert first.seen == T0 + timedelta(seconds=5)
    assert first.since == T0
    assert live[1].running == (job,)
    echo = await store.live_workers(since=T0 - timedelta(seconds=30), service="echo")
    assert [w.id for w in echo] == ["w1"]


async def test_a_worker_that_said_goodbye_is_gone_at_once(store: JobStore) -> None:
    await store.heartbeat(WORKER, service="echo", at=T0, concurrency=1)
    await store.worker_left("w1", at=T0 + timedelta(seconds=1))
    await store.heartbeat(WORKER, service="echo", at=T0 + timedelta(seconds=2))  # late
    assert await store.live_workers(since=T0 - timedelta(seconds=30)) == []
    assert await store.active_workers("echo", since=T0 - timedelta(seconds=30)) == 0
    await store.worker_left("never-seen", at=T0)
    assert await store.last_heartbeat("never-seen") is None


async def test_a_sqlite_file_of_an_older_schema_gains_the_new_worker_columns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the workers table as the first schema made it
        db.execute(
            "CREATE TABLE workers (id TEXT PRIMARY KEY, service TEXT NOT NULL, host TEXT, "
            "version TEXT, seen TEXT NOT NULL)"
        )
        seen = T0.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        db.execute("INSERT INTO workers VALUES ('w1', 'echo', 'h1', '1.0', ?)", (seen,))
    db.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        [worker] = await store.live_workers(since=T0 - timedelta(seconds=30))
        assert (worker.id, worker.concurrency, worker.running, worker.since) == ("w1", 0, (), T0)
        await store.heartbeat(WORKER, service="echo", at=T0 + timedelta(seconds=1), concurrency=2)
        [worker] = await store.live_workers(since=T0)
        assert (worker.concurrency, worker.since) == (2, T0)
    finally:
        await store.close()


async def test_service_load_counts_arrivals_completions_and_recent_runs(store: JobStore) -> None:
    def at(seconds: float) -> datetime:
        return T0 + timedelta(seconds=seconds)

    ran = [_record(created=at(i), updated=at(i)) for i in range(3)]
    waiting = [_record(created=at(10 + i), updated=at(10 + i)) for i in range(2)]
    expired = _record(created=at(1), updated=at(1))
    elsewhere = _record(service="other", created=at(0), updated=at(0))
    for record in (*ran, *waiting, expired, elsewhere):
        await store.insert(record)
    for i, record in enumerate(ran):  # waits 1, 2, 3 s; runs 2, 4, 6 s
        started = at(i + 1 + i)
        await store.start(record.id, attempt=1, run_id=uuid.uuid4(), worker=WORKER, at=started)
        if i < 2:
            await store.finish(
                record.id, status=JobStatus.SUCCESSFUL, at=started + timedelta(seconds=2 * i + 2)
            )
    await store.finish(expired.id, status=JobStatus.DISMISSED, at=at(20), reason="expired")
    load = await store.service_load("echo", since=[at(0), at(5), at(11)], sample=10)
    assert (load.accepted, load.running) == (2, 1)
    assert load.arrivals == (6, 2, 1)
    assert load.completions == (2, 1, 0)  # runs that ended at 3 and 7 s; the expired job never ran
    assert load.first_created == T0
    assert load.runs == ((2.0, 4.0), (1.0, 2.0))  # newest first: (wait, run)
    assert (await store.service_load("echo", since=[at(0)], sample=1)).runs == ((2.0, 4.0),)
    empty = await store.service_load("nothing", since=[at(0)])
    assert (empty.accepted, empty.arrivals, empty.first_created, empty.runs) == (0, (0,), None, ())


async def test_queue_position_counts_the_accepted_jobs_created_before(store: JobStore) -> None:
    records = [_record(created=T0 + timedelta(seconds=i), updated=T0) for i in range(4)]
    twin = _record(created=T0 + timedelta(seconds=3), updated=T0)
    for record in (*records, twin):
        await store.insert(record)
    await store.start(records[0].id, attempt=1, run_id=uuid.uuid4(), worker=WORKER, at=T0)
    await store.insert(_record(service="other", created=T0, updated=T0))
    assert await store.queue_position(records[0]) == 0  # running: nobody ahead counts
    assert await store.queue_position(records[1]) == 0
    assert await store.queue_position(records[2]) == 1
    first, second = sorted((records[3], twin), key=lambda r: str(r.id))  # a tie: by id
    assert await store.queue_position(first) == 2
    assert await store.queue_position(second) == 3


async def test_workers_long_silent_are_forgotten(store: JobStore) -> None:
    old = WorkerInfo(id="w-old", host="h", version="1")
    await store.heartbeat(old, service="echo", at=T0 - timedelta(days=2))
    await store.heartbeat(WORKER, service="echo", at=T0)
    assert await store.forget_workers(before=T0 - timedelta(days=1)) == 1
    assert await store.last_heartbeat("w-old") is None
    assert await store.last_heartbeat("w1") == T0
