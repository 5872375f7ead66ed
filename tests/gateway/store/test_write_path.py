"""What a new job costs the store's disk: ids that go to the right edge of the primary-key
index, and group commits whose savepoints never spill to a temporary file."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from gateway.store import (
    DuplicateJob,
    JobRecord,
    JobStatus,
    SQLiteStore,
    StoreRejected,
    WorkerInfo,
    _sqlite_executor,
    new_job_id,
)
from gateway.store._sqlite_executor import BUSY_TIMEOUT_MS, LOCK_PAUSES, QUIET
from gateway.store._sqlite_schema import SCHEMA, decode, encode
from gateway.store.model import Delivery, LegacyFields
from worker_sdk.wire import ErrorInfo


def test_a_job_id_is_a_version_7_uuid_of_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    job_id = new_job_id()
    after = time.time_ns() // 1_000_000
    assert (job_id.version, job_id.variant) == (7, uuid.RFC_4122)
    assert before <= job_id.int >> 80 <= after


def test_job_ids_sort_by_time_as_text_and_never_repeat() -> None:
    ids: list[uuid.UUID] = []
    for _ in range(3):
        ids.append(new_job_id())
        stamp = time.time_ns() // 1_000_000
        while time.time_ns() // 1_000_000 == stamp:  # the next id is of a later millisecond
            pass
    assert [str(i) for i in ids] == sorted(str(i) for i in ids)
    many = {new_job_id() for _ in range(20_000)}
    assert len(many) == 20_000
    # 74 random bits: the bits past the time and the version differ among ids of one instant
    assert len({i.int & ((1 << 76) - 1) for i in many}) == 20_000


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
async def test_a_group_commit_spills_no_statement_journal_to_disk(tmp_path: Path) -> None:
    """A group commit runs under a savepoint: SQLite journals the pages it changes, and a
    batch that changes more than 64 KiB of them (the recovery marking a
    few hundred jobs queued, say) spills that journal to a temporary file unless told to keep
    temporary data in memory; the file then takes every later statement's journal of the
    transaction, page by page. SQLite unlinks such a file as it opens it: only ``/proc``
    shows it open, under SQLite's prefix for temporary files."""
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        now = datetime.now(UTC)
        records = [_job() for _ in range(400)]
        for record in records:
            await store.insert(record)

        def open_in_spill(db: sqlite3.Connection) -> list[str]:
            found = []
            for fd in os.listdir("/proc/self/fd"):
                try:
                    found.append(os.readlink(f"/proc/self/fd/{fd}"))
                except FileNotFoundError:  # the listing's own descriptor, closed since
                    continue
            return [link for link in found if "/etilqs_" in link]

        ids = [r.id for r in records]
        *_, spilled = await asyncio.gather(
            store.mark_queued(ids, at=now), store._run(open_in_spill)
        )
        assert spilled == []
        assert all(
            r is not None and r.queued == now
            for r in await asyncio.gather(*(store.get(i) for i in ids))
        )
    finally:
        await store.close()


def _where(db: sqlite3.Connection) -> str:
    """A statement that says which thread ran it."""
    return threading.current_thread().name


async def test_a_quick_statement_runs_at_once_only_on_a_quiet_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    executor = store._executor
    loop_thread = threading.current_thread().name
    try:
        assert await executor.run(_where, quick=True) == loop_thread
        assert await executor.read(_where, quick=True) == loop_thread
        assert (await executor.run(_where)).startswith("sqlite")  # a page, a sweep: the thread
        # one arriving while a batch is queued joins the next batch, in order
        first = asyncio.ensure_future(executor.run(_where))
        second = asyncio.ensure_future(executor.run(_where, quick=True))
        assert [(await first)[:6], (await second)[:6]] == ["sqlite", "sqlite"]
        # the store's own quick statements: a job's insert and read
        record = _job()
        await store.insert(record)
        assert await store.get(record.id) == record
    finally:
        await store.close()


async def test_writes_close_together_commit_in_groups_on_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quick write within QUIET seconds of the one before the last is load: it goes to the
    thread, and those of a flood commit together, where each would have committed alone on
    the loop (every page its row and indexes touch appended to the WAL again). One other
    write within QUIET is a conversation (a waiting client's next job, inserted just after
    the last one's end was written): it runs on the loop."""
    now = [100.0]
    monkeypatch.setattr(_sqlite_executor, "_clock", lambda: now[0])
    batches: list[int] = []
    write = _sqlite_executor._write

    def counted(db: sqlite3.Connection, statements: list[Any]) -> list[Any]:
        batches.append(len(statements))
        return write(db, statements)

    monkeypatch.setattr(_sqlite_executor, "_write", counted)
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    executor = store._executor
    loop_thread = threading.current_thread().name
    try:
        assert await executor.run(_where, quick=True) == loop_thread  # a quiet store
        now[0] += QUIET / 2
        assert await executor.run(_where, quick=True) == loop_thread  # a conversation
        now[0] += QUIET / 4
        assert (await executor.run(_where, quick=True)).startswith("sqlite")  # load
        now[0] += QUIET / 2
        assert (await executor.run(_where, quick=True)).startswith("sqlite")  # still load
        now[0] += QUIET
        assert await executor.run(_where, quick=True) == loop_thread  # quiet again
        assert await executor.read(_where, quick=True) == loop_thread  # reads: always
        batches.clear()
        records = [_job() for _ in range(50)]
        await asyncio.gather(*(store.insert(r) for r in records))  # all within QUIET
        assert sum(batches) == 49  # the first is the last write's conversation: on the loop
        assert len(batches) < 49
        assert await asyncio.gather(*(store.get(r.id) for r in records)) == records
    finally:
        await store.close()


async def test_a_quick_write_runs_as_alone_only_where_it_commits_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(_sqlite_executor, "_clock", lambda: now[0])
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    executor = store._executor

    def alone(db: sqlite3.Connection) -> str:
        return f"alone on {_where(db)}"

    loop_thread = threading.current_thread().name
    try:
        assert await executor.run(_where, quick=True, alone=alone) == f"alone on {loop_thread}"
        now[0] += QUIET / 2
        assert await executor.run(_where, quick=True, alone=alone) == f"alone on {loop_thread}"
        now[0] += QUIET / 4  # load: the thread runs the statement itself, in a group
        assert (await executor.run(_where, quick=True, alone=alone)).startswith("sqlite")
    finally:
        await store.close()


async def test_a_quiet_insert_counts_its_job_in_its_own_commit_and_a_busy_one_leaves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An insert alone on the loop raises its counter in its commit (one commit per
    submission, not two); inserts close together commit in groups and leave the count to
    the caller (the batched tally), which a count in each would slow."""
    now = [100.0]
    monkeypatch.setattr(_sqlite_executor, "_clock", lambda: now[0])
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        first = _job()
        assert await store.insert(first, counter="submissions:echo") is True
        assert await store.counters() == {"submissions:echo": 1}
        assert await store.counter_since("submissions:echo") == first.created
        now[0] += QUIET * 2
        assert await store.insert(_job(), counter="submissions:echo") is True
        assert await store.counters() == {"submissions:echo": 2}
        now[0] += QUIET / 2  # one other write within QUIET: still on its own
        assert await store.insert(_job(), counter="submissions:echo") is True
        assert await store.insert(_job(), counter="submissions:echo") is False
        assert await store.insert(_job()) is False
        assert await store.counters() == {"submissions:echo": 3}
        # a duplicate key is refused whole: neither the row nor the count
        now[0] += QUIET * 2
        keyed = _job().model_copy(update={"idempotency_key": "k", "request_hash": "h"})
        assert await store.insert(keyed, counter="submissions:echo") is True
        now[0] += QUIET * 2
        again = _job().model_copy(update={"idempotency_key": "k", "request_hash": "h"})
        with pytest.raises(DuplicateJob):
            await store.insert(again, counter="submissions:echo")
        assert await store.counters() == {"submissions:echo": 4}
    finally:
        await store.close()


async def test_a_quick_read_runs_at_once_while_the_thread_writes(tmp_path: Path) -> None:
    # A status read under load does not wait for the batch being written (milliseconds): it
    # reads the last commit on the loop's connection.
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    executor = store._executor
    record = _job()
    await store.insert(record)
    holding, release = threading.Event(), threading.Event()

    def hold(db: sqlite3.Connection) -> None:
        db.execute("UPDATE jobs SET message = 'held' WHERE id = ?", (str(record.id),))
        holding.set()
        release.wait(timeout=30)

    try:
        held = asyncio.ensure_future(executor.run(hold))
        queued = asyncio.ensure_future(executor.run(_where, quick=True))  # a write: in turn
        assert await asyncio.to_thread(holding.wait, 10)  # the thread is in the held batch
        assert await asyncio.wait_for(executor.read(_where, quick=True), 10) == (
            threading.current_thread().name
        )
        assert await asyncio.wait_for(store.get(record.id), 10) == record  # the last commit
        assert not held.done()
        assert not queued.done()
        release.set()
        await held
        assert (await queued).startswith("sqlite")
        read = await store.get(record.id)
        assert read is not None
        assert read.message == "held"
    finally:
        release.set()
        await store.close()


@pytest.fixture
async def rival(tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, sqlite3.Connection]]:
    """A store, and another connection to its file (as another gateway process holds one)."""
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    other = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None, check_same_thread=False)
    try:
        yield store, other
    finally:
        other.close()
        await store.close()


async def test_a_write_lock_held_elsewhere_sends_a_quick_write_to_the_thread(
    rival: tuple[SQLiteStore, sqlite3.Connection],
) -> None:
    """Another process's write lock makes the loop's connection fail at once (it never waits:
    waiting would stall every request of the gateway); the thread waits for the lock."""
    store, other = rival
    record = _job()
    other.execute("BEGIN IMMEDIATE")
    loop = asyncio.get_running_loop()
    before = loop.time()
    inserting = asyncio.ensure_future(store.insert(record))
    await asyncio.sleep(0)  # the insert tries at once, and is queued for the thread
    # the loop was not held for the store's busy timeout (5 s) on the way
    assert loop.time() - before < 1.0
    assert not inserting.done()
    other.execute("COMMIT")
    await inserting
    assert await store.get(record.id) == record


async def test_the_thread_waits_for_another_process_lock_in_short_pauses(
    rival: tuple[SQLiteStore, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's own wait sleeps a millisecond or more between attempts; another gateway
    process holds the lock for a fraction of one. The thread tries again after pauses of tens
    of microseconds first (here the lock is let go during the third), and leaves its
    connection waiting as SQLite does for any other statement."""
    store, other = rival
    pauses: list[float] = []
    waits: list[int] = []  # the thread's own busy_timeout meanwhile: its attempts never sleep

    def pause(seconds: float) -> None:  # on the store's thread, between its attempts
        pauses.append(seconds)
        assert store._executor.db is not None
        waits.append(store._executor.db.execute("PRAGMA busy_timeout").fetchone()[0])
        if len(pauses) == 3:
            other.execute("COMMIT")

    monkeypatch.setattr(_sqlite_executor, "_pause", pause)
    other.execute("BEGIN IMMEDIATE")
    assert (await store._executor.run(_where)).startswith("sqlite")
    assert pauses == list(LOCK_PAUSES[:3])
    assert waits == [0, 0, 0]
    assert max(LOCK_PAUSES) < 1e-3
    assert sum(LOCK_PAUSES) < 5e-3
    timeout = await store._executor.read(lambda db: db.execute("PRAGMA busy_timeout").fetchone()[0])
    assert timeout == BUSY_TIMEOUT_MS


async def test_a_lock_held_past_the_pauses_is_waited_for_as_sqlite_waits(
    rival: tuple[SQLiteStore, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, other = rival
    loop = asyncio.get_running_loop()
    paused_out = asyncio.Event()
    pauses: list[float] = []

    def pause(seconds: float) -> None:  # on the store's thread
        pauses.append(seconds)
        if len(pauses) == len(LOCK_PAUSES):
            loop.call_soon_threadsafe(paused_out.set)

    monkeypatch.setattr(_sqlite_executor, "_pause", pause)
    other.execute("BEGIN IMMEDIATE")
    record = _job()
    inserting = asyncio.ensure_future(store.insert(record))  # busy at once: to the thread
    await paused_out.wait()
    assert not inserting.done()  # the thread now waits within SQLite, up to busy_timeout
    other.execute("COMMIT")
    await inserting
    assert pauses == list(LOCK_PAUSES)
    assert await store.get(record.id) == record


async def test_the_wal_stays_bounded_while_writes_run_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write here finds the store quiet and commits on the loop, whose connection never
    checkpoints: the checkpoint thread's checkpoints rewind the WAL, or, where each races the
    next commits (a disk slower to sync), a commit on the thread past WAL_LIMIT pages does.
    Without either the WAL would hold every write (about 30 MB here)."""
    monkeypatch.setattr(_sqlite_executor, "QUIET", 0.0)
    monkeypatch.setattr(_sqlite_executor, "CHECKPOINT_EVERY", 16)
    monkeypatch.setattr(_sqlite_executor, "WAL_LIMIT", 1_000)
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    loop_thread = threading.current_thread().name
    places: list[str] = []
    try:
        for _ in range(600):
            await store.insert(_job())
            places.append(await store._executor.run(_where, quick=True))
            await asyncio.sleep(0)  # a turn of the loop, as between two requests
        # the file keeps the largest size the WAL reached (4 KiB and a 24-byte header a page)
        assert (tmp_path / "jobs.db-wal").stat().st_size < 3_000 * 4_120
        assert places.count(loop_thread) > 500
    finally:
        await store.close()


async def test_a_wal_past_its_limit_is_checkpointed_whole_after_the_next_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint that finds the WAL past WAL_LIMIT (here: one that copies nothing and says
    so, as one racing every commit leaves it never rewound) sends the next write to the
    thread, which checkpoints after its commit; the write after it rewinds the WAL."""
    monkeypatch.setattr(_sqlite_executor, "QUIET", 0.0)
    monkeypatch.setattr(_sqlite_executor, "CHECKPOINT_EVERY", 2)
    monkeypatch.setattr(_sqlite_executor, "_checkpoint", lambda db: True)
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    executor = store._executor
    loop_thread = threading.current_thread().name
    other = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)

    def wal_pages() -> int:  # a passive checkpoint of its own reports the WAL's frames
        return int(other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])

    try:
        for _ in range(20):
            await store.insert(_job())
        assert await executor.run(_where, quick=True) == loop_thread
        assert executor._checkpoint is not None
        await asyncio.wait([executor._checkpoint])
        assert executor._wal_full
        assert (await executor.run(_where, quick=True)).startswith("sqlite")
        assert not executor._wal_full
        before = wal_pages()
        await store.insert(_job())  # on the loop
        assert wal_pages() < 20 < before  # rewound: only the last insert's pages
    finally:
        other.close()
        await store.close()


async def test_a_checkpoint_in_progress_holds_up_no_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint runs on a thread and a connection of its own: writes on the loop and on
    the store's thread commit while it copies the WAL (here held until they are done)."""
    monkeypatch.setattr(_sqlite_executor, "QUIET", 0.0)
    monkeypatch.setattr(_sqlite_executor, "CHECKPOINT_EVERY", 2)
    started = threading.Event()
    release = threading.Event()
    checkpoint = _sqlite_executor._checkpoint

    def held(db: sqlite3.Connection | None) -> bool:
        started.set()
        assert release.wait(30)
        return checkpoint(db)

    monkeypatch.setattr(_sqlite_executor, "_checkpoint", held)
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    loop_thread = threading.current_thread().name
    try:
        await store.insert(_job())
        await store.insert(_job())  # the second commit starts the checkpoint
        assert await asyncio.to_thread(started.wait, 30)
        records = [_job() for _ in range(20)]
        for record in records:
            await store.insert(record)
        assert await store._executor.run(_where, quick=True) == loop_thread
        assert (await store._executor.run(_where)).startswith("sqlite")
        assert await asyncio.gather(*(store.get(r.id) for r in records)) == records
        assert store._executor._checkpoint is not None
        assert not store._executor._checkpoint.done()
    finally:
        release.set()
        await store.close()
    assert (tmp_path / "jobs.db-wal").exists() is False  # the last connection checkpointed


async def test_a_row_decodes_by_position_whatever_else_the_query_selects(tmp_path: Path) -> None:
    """Rows are decoded by their columns' positions, not looked up by name: every field of
    the model is a column of the table, each comes back as stored, and a column the model
    does not have is ignored."""
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        record = _job().model_copy(
            update={"status": JobStatus.RUNNING, "progress": 40, "message": "half", "seq": 3}
        )
        await store.insert(record)

        def read(db: sqlite3.Connection) -> tuple[set[str], JobRecord]:
            columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            sql = "SELECT 'x' AS extra, *, 2 AS attempts FROM jobs WHERE id = ?"
            return columns, decode(db.execute(sql, (str(record.id),)).fetchone())

        columns, decoded = await store._executor.read(read)
        assert set(JobRecord.model_fields) <= columns
        assert decoded == record == await store.get(record.id)
    finally:
        await store.close()


async def test_an_in_memory_store_runs_everything_on_its_thread() -> None:
    store = SQLiteStore(":memory:")
    await store.open()
    try:
        assert (await store._executor.run(_where, quick=True)).startswith("sqlite")
        record = _job()
        await store.insert(record)
        assert await store.get(record.id) == record
    finally:
        await store.close()


def _keep(value: int, *, then_fail: bool = False) -> Callable[[sqlite3.Connection], int]:
    """A statement that stores ``value`` in ``kept`` (twice refused: a primary key) and,
    with ``then_fail``, fails after its change."""

    def statement(db: sqlite3.Connection) -> int:
        db.execute("INSERT INTO kept (value) VALUES (?)", (value,))
        if then_fail:
            raise ValueError(f"{value} refused after its change")
        return value

    return statement


async def _kept(store: SQLiteStore) -> list[int]:
    rows = await store._executor.read(lambda db: db.execute("SELECT value FROM kept").fetchall())
    return sorted(value for (value,) in rows)


@pytest.mark.parametrize("quick", [True, False], ids=["on-the-loop", "on-the-thread"])
async def test_a_lone_statement_that_fails_leaves_nothing_of_its_change(
    tmp_path: Path, quick: bool
) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    executor = store._executor
    try:
        await executor.run(lambda db: db.execute("CREATE TABLE kept (value PRIMARY KEY)"))
        with pytest.raises(StoreRejected, match="1 refused after its change"):
            await executor.run(_keep(1, then_fail=True), quick=quick)
        assert await executor.run(_keep(2), quick=quick) == 2  # the store goes on
        assert await _kept(store) == [2]
    finally:
        await store.close()


async def test_a_failing_statement_in_a_batch_is_undone_alone_and_the_rest_stored_once(
    tmp_path: Path,
) -> None:
    """The batch runs again, each statement under its own savepoint: those before the failure
    run twice, and a second insert of the same key would be refused if the first were kept."""
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    executor = store._executor
    try:
        await executor.run(lambda db: db.execute("CREATE TABLE kept (value PRIMARY KEY)"))
        outcomes = await asyncio.gather(
            executor.run(_keep(1)),
            executor.run(_keep(2)),
            executor.run(_keep(3, then_fail=True)),
            executor.run(_keep(4)),
            executor.run(_keep(1)),  # refused: the first of the batch holds the key
            return_exceptions=True,
        )
        assert [outcomes[0], outcomes[1], outcomes[3]] == [1, 2, 4]
        refused = [str(outcome) for outcome in outcomes if isinstance(outcome, StoreRejected)]
        assert len(refused) == 2
        assert "3 refused after its change" in refused[0]
        assert "UNIQUE" in refused[1]
        assert await _kept(store) == [1, 2, 4]
    finally:
        await store.close()


def _job() -> JobRecord:
    now = datetime.now(UTC)
    return JobRecord(
        id=new_job_id(),
        service="echo",
        owner="alice",
        inputs={"text": "x" * 500},
        created=now,
        updated=now,
    )


def _row_as_each_column_holds_it(record: JobRecord) -> dict[str, Any]:
    """The row of ``record`` column by column, the rules spelled out: JSON columns hold their
    JSON text (a successful job's null result as ``null``, any other absent value as NULL),
    time columns UTC with six fraction digits, the rest their JSON-mode values."""
    data = record.model_dump(mode="json")
    row: dict[str, Any] = {}
    for name in JobRecord.model_fields:
        value, kept = data[name], getattr(record, name)
        if name in {"inputs", "result", "error", "worker", "subscriber", "legacy", "delivery"}:
            successful_null = name == "result" and record.status is JobStatus.SUCCESSFUL
            row[name] = json.dumps(value) if value is not None or successful_null else None
        elif isinstance(kept, datetime):
            row[name] = kept.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        else:
            row[name] = value
    return row


@pytest.mark.parametrize("status", list(JobStatus))
@pytest.mark.parametrize("result", [None, 0, "", {"é": [1.5, None]}])
def test_every_column_of_a_row_holds_its_value_as_the_store_reads_it(
    status: JobStatus, result: Any
) -> None:
    created = datetime(2026, 12, 3, 9, 0, 0, tzinfo=timezone(timedelta(hours=-5)))  # 0 µs
    record = JobRecord(
        id=new_job_id(),
        service="echo",
        owner="alice",
        status=status,
        reason="cancelled" if status is JobStatus.DISMISSED else None,
        progress=40,
        message="half",
        inputs={"text": "\u00e9\U0001f600", "n": [1, 2.5, None, True]},
        result=result,
        error=ErrorInfo(code="boom", type="ValueError", message="bad") if result == "" else None,
        attempt=2,
        run_id=uuid.uuid4(),
        progress_seq=7,
        worker=WorkerInfo(id="w1", host="h", version="1.0.0"),
        created=created,
        started=created + timedelta(microseconds=1),
        updated=datetime(2026, 12, 3, 14, 0, 0, 5, tzinfo=UTC),
        finished=datetime(2026, 12, 3, 14, 0, 1, tzinfo=UTC) if status.terminal else None,
        expires_at=datetime(2026, 12, 10, tzinfo=UTC),
        idempotency_key="k-1",
        request_hash="h" * 64,
        subscriber={"url": "https://example.org/hook"},
        seq=9,
        legacy=LegacyFields(document_url="https://example.org/doc.pdf"),
        queued=created + timedelta(seconds=1),
        delivery=Delivery(response="document", outputs=("a",)),
        webhook_open=True,
        webhook_seq=2,
    )
    row = encode(record)
    assert row == _row_as_each_column_holds_it(record)
    assert list(row) == list(JobRecord.model_fields)
    assert row["created"] == "2026-12-03T14:00:00.000000Z"  # fixed width: text order is time
    db = sqlite3.connect(":memory:")
    db.row_factory = sqlite3.Row
    db.executescript(SCHEMA)
    db.execute(
        f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", [*row.values()]
    )
    assert decode(db.execute("SELECT * FROM jobs").fetchone()) == record
