"""The SQLite executor when something goes wrong: another process recovering the WAL, a
commit that fails on the loop's connection, a statement queued while the store closes."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.store import SQLiteStore, StoreError, _sqlite_executor
from tests.gateway.store.test_write_path import _job, _where

# Another process rebuilding the WAL index: it holds the write and recovery locks of the
# ``-shm`` file (bytes 120 and 122, SQLite's WAL_WRITE_LOCK and WAL_RECOVER_LOCK) and has made
# the index header's two copies differ, for 0.3 s. A connection meanwhile gets
# SQLITE_BUSY_RECOVERY (261), an extended code of SQLITE_BUSY.
RECOVERING = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 120)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 122)
    first = os.pread(fd, 1, 8)
    os.pwrite(fd, bytes([first[0] ^ 0xFF]), 8)
    print("recovering", flush=True)
    time.sleep(0.3)
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="POSIX locks on SQLite's -shm file")
async def test_the_thread_waits_while_another_process_recovers_the_wal(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        await store.insert(_job())
        other = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RECOVERING,
            str(tmp_path / "jobs.db-shm"),
            stdout=asyncio.subprocess.PIPE,
        )
        assert other.stdout is not None
        try:
            assert (await other.stdout.readline()).strip() == b"recovering"
            record = _job()
            await store.insert(record)  # busy on the loop at once; the thread waits it out
        finally:
            await other.wait()
        assert await store.get(record.id) == record
    finally:
        await store.close()


class _FailingConnection:
    """The loop's connection, but its COMMIT fails: after committing (``commits``), or not
    at all, and then its ROLLBACK fails too (a disk gone bad)."""

    def __init__(self, db: sqlite3.Connection, *, commits: bool) -> None:
        self._db = db
        self._commits = commits
        self.closed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if (sql == "COMMIT" and not self._commits) or sql == "ROLLBACK":
            raise sqlite3.OperationalError("disk I/O error")
        cursor = self._db.execute(sql, *args)
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return cursor

    def close(self) -> None:
        self.closed = True
        self._db.close()


async def test_a_quick_write_whose_commit_fails_is_never_run_again(tmp_path: Path) -> None:
    """The commit may fail after its data reached the WAL: the caller hears of the failure,
    and the statement is not run again on the thread (a counter would count twice)."""
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    executor = store._executor
    real = executor._inline
    assert real is not None
    try:
        executor._inline = _FailingConnection(real, commits=True)  # type: ignore[assignment]
        with pytest.raises(StoreError, match="disk I/O error"):
            await store.bump("submissions:echo", 1)
        executor._inline = real
        assert await store.counters() == {"submissions:echo": 1}
    finally:
        executor._inline = real
        await store.close()


async def test_a_loop_connection_left_in_its_transaction_is_closed(tmp_path: Path) -> None:
    """A commit and then its rollback fail: that connection would hold the write lock for
    good. It is closed (which lets the lock go) and every statement runs on the thread."""
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    executor = store._executor
    real = executor._inline
    assert real is not None
    failing = _FailingConnection(real, commits=False)
    try:
        executor._inline = failing  # type: ignore[assignment]
        with pytest.raises(StoreError, match="disk I/O error"):
            await store.insert(_job())
        assert failing.closed
        assert executor._inline is None
        assert (await executor.run(_where, quick=True)).startswith("sqlite")
        record = _job()
        await store.insert(record)
        assert await store.get(record.id) == record
    finally:
        await store.close()


async def test_a_statement_queued_as_the_store_closes_is_answered(tmp_path: Path) -> None:
    """A statement queued while the last batch ends (another request's task, woken in the
    same turn of the loop as ``close``) starts another flusher: close waits for it too."""
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    executor = store._executor
    first = asyncio.ensure_future(executor.run(_where))
    await asyncio.sleep(0)  # queued: its flusher is running
    assert executor._flusher is not None
    late: list[asyncio.Future[str]] = []
    executor._flusher.add_done_callback(
        lambda _: late.append(asyncio.ensure_future(executor.run(_where)))
    )
    await store.close()
    assert (await first).startswith("sqlite")
    assert len(late) == 1
    assert late[0].done()
    assert late[0].result().startswith("sqlite")


async def test_statements_queued_while_the_store_closes_during_a_checkpoint_are_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Close waits for the checkpoint in progress; statements queued meanwhile (one whose
    batch runs on the thread when the checkpoint ends, one queued behind it) are answered
    before the store shuts."""
    monkeypatch.setattr(_sqlite_executor, "QUIET", 0.0)
    monkeypatch.setattr(_sqlite_executor, "CHECKPOINT_EVERY", 2)
    release = threading.Event()
    checkpoint = _sqlite_executor._checkpoint

    def held(db: sqlite3.Connection | None) -> bool:
        assert release.wait(30)
        return checkpoint(db)

    monkeypatch.setattr(_sqlite_executor, "_checkpoint", held)
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    executor = store._executor
    await store.insert(_job())
    await store.insert(_job())  # the second commit starts the (held) checkpoint
    checkpointing = executor._checkpoint
    assert checkpointing is not None
    closing = asyncio.ensure_future(store.close())
    await asyncio.sleep(0)  # close now waits for the checkpoint
    go_on = threading.Event()

    def slow(db: sqlite3.Connection) -> str:  # a page of jobs, a sweep
        assert go_on.wait(30)
        return _where(db)

    first = asyncio.ensure_future(executor.run(slow))
    await asyncio.sleep(0)  # its batch runs on the thread
    second = asyncio.ensure_future(executor.run(_where))
    await asyncio.sleep(0)  # queued behind it
    release.set()
    await asyncio.wait([checkpointing])  # close resumed before this task does
    go_on.set()
    await asyncio.wait_for(closing, 30)
    assert (await first).startswith("sqlite")
    assert second.done()
    assert second.result().startswith("sqlite")
