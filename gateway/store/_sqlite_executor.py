"""The SQLite store's executor: every statement on one thread, committed in groups.

Every statement runs on one dedicated thread, so the event loop never blocks on disk. The
statements that arrive while a batch runs are committed together in the next transaction
(group commit): under load, one lock acquisition and one WAL commit serve tens of jobs.
aiosqlite, the usual bridge, runs one statement per thread hop and one transaction per
statement, which made the store the gateway's bottleneck; hence this small executor. Each
statement runs under a savepoint of its own: one that fails is undone alone and its caller
hears why (:func:`_classify`), the rest of its batch commits.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .base import StoreError, StoreRejected

T = TypeVar("T")
Statement = Callable[[sqlite3.Connection], Any]


class _Batch:
    """Statements waiting for the next transaction, each with the future of its caller."""

    def __init__(self) -> None:
        self.statements: list[Statement] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.writes = False  # whether any statement may write


class GroupCommit:
    """One connection on one thread; :meth:`run` queues a statement for the next commit."""

    def __init__(self) -> None:
        self.db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._pending: _Batch | None = None
        self._flusher: asyncio.Task[None] | None = None

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Start the thread and make the connection on it (``connect`` may raise)."""
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        self.db = await asyncio.get_running_loop().run_in_executor(self._thread, connect)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        db, self.db = self.db, None
        thread, self._thread = self._thread, None
        if thread is not None:
            if db is not None:
                await asyncio.get_running_loop().run_in_executor(thread, db.close)
            thread.shutdown(wait=True)

    async def run(self, statement: Callable[[sqlite3.Connection], T]) -> T:
        """Queue ``statement`` for the next transaction and wait for its result."""
        return await self._queue(statement, writes=True)

    async def read(self, statement: Callable[[sqlite3.Connection], T]) -> T:
        """Queue ``statement``, which only reads, for the next batch and wait for its result."""
        return await self._queue(statement, writes=False)

    async def _queue(self, statement: Callable[[sqlite3.Connection], T], *, writes: bool) -> T:
        if self.db is None or self._thread is None:
            raise StoreError("the SQLite store is not open")
        loop = asyncio.get_running_loop()
        if self._pending is None:
            self._pending = _Batch()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.statements.append(statement)
        self._pending.futures.append(future)
        self._pending.writes = self._pending.writes or writes
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending is not None and self.db is not None and self._thread is not None:
            batch, self._pending = self._pending, None
            try:
                outcomes = await loop.run_in_executor(
                    self._thread, _commit if batch.writes else _read, self.db, batch.statements
                )
            except Exception as exc:  # noqa: BLE001 - every waiter must hear how its batch ended
                outcomes = [StoreError(f"SQLite transaction failed: {exc!r}")] * len(batch.futures)
            for future, outcome in zip(batch.futures, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)


def _classify(exc: Exception) -> StoreError:
    """A failing statement's error: transient (the database is busy, locked or unwell) or a
    rejection of this statement's values, which no retry will change."""
    if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
        return StoreError(str(exc))
    return StoreRejected(f"{type(exc).__name__}: {exc}")


def _commit(db: sqlite3.Connection, statements: list[Statement]) -> list[Any]:
    """Run on the store's thread: one transaction for the whole batch.

    Each statement runs under a savepoint of its own, so one that fails (whatever it raises)
    is undone alone and its caller hears why; the others commit.
    """
    assert threading.current_thread().name.startswith("sqlite")
    outcomes: list[Any] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in statements:
            db.execute("SAVEPOINT statement")
            try:
                outcomes.append(statement(db))
            except Exception as exc:  # noqa: BLE001 - the statement's caller gets it, not the batch
                db.execute("ROLLBACK TO statement")
                outcomes.append(_classify(exc))
            db.execute("RELEASE statement")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return outcomes


def _read(db: sqlite3.Connection, statements: list[Statement]) -> list[Any]:
    """Run on the store's thread: statements that only read, outside any write transaction
    (each sees the last commit, WAL's snapshot, without taking the write lock)."""
    assert threading.current_thread().name.startswith("sqlite")
    outcomes: list[Any] = []
    for statement in statements:
        try:
            outcomes.append(statement(db))
        except Exception as exc:  # noqa: BLE001 - the statement's caller gets it, not the batch
            outcomes.append(_classify(exc))
    return outcomes
