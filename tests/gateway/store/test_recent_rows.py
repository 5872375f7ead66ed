"""A job read again unchanged is not decoded again: the SQLite store keeps the records it
decoded lately with their rows, and serves one again only for exactly the row it came from."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.store import JobRecord, JobStatus, SQLiteStore, WorkerInfo, new_job_id
from gateway.store._sqlite_recent import RecentRows
from gateway.store._sqlite_schema import SCHEMA, decode, encode


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def _job(text: str = "x") -> JobRecord:
    now = datetime.now(UTC)
    return JobRecord(
        id=new_job_id(),
        service="echo",
        owner="alice",
        inputs={"text": text},
        created=now,
        updated=now,
    )


async def test_a_job_read_again_unchanged_is_the_same_record(store: SQLiteStore) -> None:
    job = _job()
    await store.insert(job)
    first = await store.get(job.id)
    assert first == job
    assert await store.get(job.id) is first


async def test_any_change_of_the_row_is_read_even_one_no_client_sees(store: SQLiteStore) -> None:
    """The row is compared whole: a change that leaves ``seq`` as it was (the broker's
    confirmation of the task) is read too, and so is every change a client sees."""
    job = _job()
    await store.insert(job)
    before = await store.get(job.id)
    assert before is not None
    assert before.queued is None
    at = datetime.now(UTC)
    await store.mark_queued([job.id], at=at)
    queued = await store.get(job.id)
    assert queued is not None
    assert queued.queued == at
    assert queued.seq == before.seq
    worker = WorkerInfo(id="w-1", host="h", version="1.0")
    run = uuid.uuid4()
    await store.start(job.id, attempt=1, run_id=run, worker=worker, at=at)
    running = await store.get(job.id)
    assert running is not None
    assert running.status is JobStatus.RUNNING
    await store.progress(job.id, run_id=run, seq=1, percent=50, message="half", at=at)
    half = await store.get(job.id)
    assert half is not None
    assert (half.progress, half.message) == (50, "half")
    end = at + timedelta(seconds=1)
    await store.finish(job.id, status=JobStatus.SUCCESSFUL, at=end, result={"n": 1})
    done = await store.get(job.id)
    assert done is not None
    assert done.result == {"n": 1}
    assert done.finished == end
    await store.purge(job.id, at=end)
    purged = await store.get(job.id)
    assert purged is not None
    assert purged.purged == end
    assert purged.result is None
    assert await store.get(job.id) is purged


async def test_a_deleted_job_is_not_read_from_what_is_kept(store: SQLiteStore) -> None:
    job = _job()
    await store.insert(job)
    assert await store.get(job.id) == job
    await store._run(lambda db: db.execute("DELETE FROM jobs WHERE id = ?", (str(job.id),)))
    assert await store.get(job.id) is None


def _rows(records: list[JobRecord]) -> list[sqlite3.Row]:
    db = sqlite3.connect(":memory:")
    db.row_factory = sqlite3.Row
    db.executescript(SCHEMA)
    for record in records:
        values = encode(record)
        names = ", ".join(values)
        db.execute(
            f"INSERT INTO jobs ({names}) VALUES ({', '.join('?' * len(values))})",
            [*values.values()],
        )
    return list(db.execute("SELECT * FROM jobs ORDER BY id"))


def test_the_rows_kept_are_bounded_by_count_and_by_text_the_oldest_dropped_first() -> None:
    small = _rows([_job() for _ in range(5)])
    recent = RecentRows(rows=3, chars=64 << 10)
    decoded = [recent.decode(row[0], row) for row in small]
    assert len(recent) == 3
    # The newest three are kept (not decoded again); the oldest was dropped (decoded again).
    assert all(a is recent.decode(r[0], r) for a, r in zip(decoded[2:], small[2:], strict=True))
    again = recent.decode(small[0][0], small[0])
    assert again == decoded[0]
    assert again is not decoded[0]
    # Text: rows of about 1,000 characters, at most 16 KiB of them in all.
    recent = RecentRows(rows=100, chars=16 << 10)
    rows = _rows([_job("y" * 850) for _ in range(30)])
    for row in rows:
        recent.decode(row[0], row)
    assert 10 < len(recent) < 30
    assert recent.chars <= 16 << 10
    last = recent.decode(rows[-1][0], rows[-1])
    assert recent.decode(rows[-1][0], rows[-1]) is last
    # A row of more than a sixteenth of the text allowed is never kept.
    [big] = _rows([_job("z" * 1000)])
    recent = RecentRows(rows=100, chars=8 << 10)
    first = recent.decode(big[0], big)
    assert first == decode(big)
    assert recent.decode(big[0], big) is not first
    assert len(recent) == 0


def test_reads_from_two_threads_keep_the_bookkeeping_whole() -> None:
    """The store reads on its event loop and on its thread: what the rows kept hold stays
    what their count and their text say."""
    rows = _rows([_job("t" * (i * 37 % 400)) for i in range(64)])
    recent = RecentRows(rows=16, chars=4 << 10)

    def read(offset: int) -> None:
        for turn in range(400):
            row = rows[(turn * 7 + offset) % len(rows)]
            assert recent.decode(row[0], row) == decode(row)

    threads = [threading.Thread(target=read, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kept = recent._kept.values()
    assert len(kept) <= 16
    assert recent.chars == sum(size for _, _, size in kept) <= 4 << 10
