"""The SQLite store's executor: statements committed in groups on one thread, or a quick one
at once on the event loop when nothing else is in flight.

Under load, every statement runs on one dedicated thread, so the event loop never waits on
disk: the statements that arrive while a batch runs are committed together in the next
transaction (group commit), one lock acquisition and one WAL commit for tens of jobs.
aiosqlite, the usual bridge, runs one statement per thread hop and one transaction per
statement, which made the store the gateway's bottleneck; hence this small executor. A
statement that fails is undone alone and its caller hears why (:func:`_classify`), the rest
of its batch commits (:func:`_commit`).

A *quick* statement (one row by its key: a job's insert, read or update) runs at once on the
event loop, on a second connection: a read always (in WAL mode it reads the last commit
while the thread writes, where waiting for the thread's batch took a whole batch's time
under load, milliseconds), a write when it finds nothing queued or running and at most one
other write came in the last :data:`QUIET` seconds (a quiet gateway, a lone request), in its
own transaction, which spares the request the hop to the thread and back (about 140 µs).
Such a commit is not cheap: a job's insert appends a dozen pages to the WAL (a header and a
page each, some 25 writes to the file, 0.1-0.2 ms in all), where a group commit's jobs share
most of theirs; under load every write goes to the thread. Any other statement (a page of
jobs, a sweep) may take milliseconds: it always runs on the thread, and the loop keeps
serving meanwhile. The loop's connection never waits: it is told not to wait for a lock (a
write lock held by another gateway process sends the statement to the thread, which waits
for it). An in-memory database has no second connection: everything runs on the thread.

Neither connection checkpoints the WAL. A third, on a thread of its own, runs a passive
checkpoint every :data:`CHECKPOINT_EVERY` commits, which copies the WAL's pages into the
database file while the writes go on. SQLite checkpoints after a commit once the WAL holds
1,000 pages, in that commit's call: on the writing thread, the writes that came meanwhile
waited behind it (a checkpoint writes and syncs megabytes), a few milliseconds once every few
dozen jobs, most of the no-op latency's p99. A WAL is rewound only by a write transaction
that begins after a checkpoint copied all of it, while no reader still uses it; a checkpoint
racing a flood of commits never lets one. When a checkpoint finds more than
:data:`WAL_LIMIT` pages in the WAL, the next commit goes to the thread and checkpoints after
it, this process's writes that come meanwhile waiting (as behind SQLite's own): the WAL is
copied whole unless another process writes or reads meanwhile, and then the next checkpoint
tries again. Several processes writing one file without pause may keep the WAL from
rewinding all the same, as they did with SQLite's own checkpoints.

Another process's write lock (the other gateway processes on the same file) is waited for
on the thread, first in pauses of tens to hundreds of microseconds (:data:`LOCK_PAUSES`), then
as SQLite waits (``busy_timeout``). SQLite's own wait sleeps 1, 2, 5, 10 ms... between
attempts: a lock that another process's commit holds for a fraction of a millisecond cost a
waiting job a whole one or more, which on a two-process gateway was most jobs.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar, cast

from .base import StoreError, StoreRejected

log = logging.getLogger("gateway.store")

T = TypeVar("T")
Statement = Callable[[sqlite3.Connection], Any]
# Commits between two passive checkpoints: a job's insert adds about 12 pages to the WAL,
# so a checkpoint comes near SQLite's own 1,000-page threshold.
CHECKPOINT_EVERY = 64
# Pages the WAL may hold (not rewound: every checkpoint raced commits) before the next commit
# on the thread checkpoints after it, the other writes waiting: about 32 MiB.
WAL_LIMIT = 8_000
# Seconds since the write before the last before a quick write may run on the loop: a third
# write within this is load, and goes to the thread to commit in a group. A commit of its own
# appends every page the job's row and indexes touch to the WAL (about a dozen), where a group
# of jobs shares most of them: on the loop, a flood of submissions cost a third more of the
# gateway's CPU per submission (0.65 against 0.48 ms; 1,530 against 2,050 submits/s on one
# process). Two writes within it are a conversation, not load: a client waiting for each
# job's end submits the next within a millisecond of the last job's end was written, and
# counting that write as load sent every such insert to the thread: the hop there and back,
# and meanwhile the loop took up the last job's event from the events queue (0.55 against
# 0.17 ms an insert, median).
QUIET = 1e-3
# Seconds between the thread's attempts at a write lock another process holds (about 2 ms in
# all), before it waits as SQLite does, up to BUSY_TIMEOUT_MS.
LOCK_PAUSES = (50e-6, 50e-6, 100e-6, 100e-6, 200e-6, 200e-6, 400e-6, 400e-6, 800e-6)
BUSY_TIMEOUT_MS = 5000
_pause = time.sleep
_clock = time.monotonic


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
        self._inline: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._pending: _Batch | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._last_writes = (-QUIET, -QUIET)  # _clock() when the last two quick writes came
        self._checkpointer: ThreadPoolExecutor | None = None
        self._checkpoint_db: sqlite3.Connection | None = None
        self._checkpoint: asyncio.Future[bool] | None = None
        self._commits = 0  # since the last checkpoint began
        self._wal_full = False  # the next commit on the thread checkpoints after it

    async def open(self, connect: Callable[[], sqlite3.Connection], path: Path | None) -> None:
        """Start the thread and make the connection on it (``connect`` may raise); then,
        given the database file's ``path``, the event loop's connection."""
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        loop = asyncio.get_running_loop()
        self.db = await loop.run_in_executor(self._thread, connect)
        if path is not None:
            await loop.run_in_executor(self._thread, _no_autocheckpoint, self.db)
            self._inline = _connect_inline(path)
            self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-checkpoint")
            self._checkpoint_db = _connect_inline(path)

    async def close(self) -> None:
        # A statement queued while the last batch ends starts another flusher, and a commit
        # another checkpoint: drain them all, then close with no await until the store is
        # shut to new statements.
        while running := [
            work for work in (self._flusher, self._checkpoint) if work and not work.done()
        ]:
            await asyncio.gather(*running, return_exceptions=True)
        self._flusher = self._checkpoint = None
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.shutdown(wait=True)
        if self._checkpoint_db is not None:
            self._checkpoint_db.close()
            self._checkpoint_db = None
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        db, self.db = self.db, None
        thread, self._thread = self._thread, None
        if thread is not None:
            if db is not None:
                await asyncio.get_running_loop().run_in_executor(thread, db.close)
            thread.shutdown(wait=True)

    async def run(
        self,
        statement: Callable[[sqlite3.Connection], T],
        *,
        quick: bool = False,
        alone: Callable[[sqlite3.Connection], T] | None = None,
    ) -> T:
        """Queue ``statement`` for the next transaction and wait for its result; a ``quick``
        one runs at once when nothing else is in flight, as ``alone`` when given: a statement
        that does more where its commit is its own (what it adds costs a page or two of a
        commit written anyway, where a group commit would write it once per statement)."""
        return await self._queue(statement, writes=True, quick=quick, alone=alone)

    async def read(self, statement: Callable[[sqlite3.Connection], T], *, quick: bool = False) -> T:
        """Queue ``statement``, which only reads, for the next batch and wait for its result;
        a ``quick`` one runs at once when nothing else is in flight."""
        return await self._queue(statement, writes=False, quick=quick)

    async def _queue(
        self,
        statement: Callable[[sqlite3.Connection], T],
        *,
        writes: bool,
        quick: bool,
        alone: Callable[[sqlite3.Connection], T] | None = None,
    ) -> T:
        if self.db is None or self._thread is None:
            raise StoreError("the SQLite store is not open")
        if quick and self._idle(writes):
            done, outcome = self._at_once(alone or statement, writes)
            if done:
                if isinstance(outcome, BaseException):
                    raise outcome
                return cast(T, outcome)
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

    def _idle(self, writes: bool) -> bool:
        """Whether a statement may run at once on the loop: a read whenever the loop has its
        connection (it sees the last commit, whatever the thread is writing meanwhile); a
        write when the one before the last came at least :data:`QUIET` seconds ago, nothing
        is queued or running, and the thread is not to checkpoint (:data:`WAL_LIMIT`). A
        write's arrival is noted here, wherever it then runs."""
        if self._inline is None:
            return False
        if not writes:
            return True
        now = _clock()
        earlier, last = self._last_writes
        self._last_writes = (last, now)
        if now - earlier < QUIET or self._pending is not None:
            return False
        if self._flusher is not None and not self._flusher.done():
            return False
        return not self._wal_full

    def _at_once(self, statement: Statement, writes: bool) -> tuple[bool, Any]:
        """Run ``statement`` on the loop's connection: (True, its outcome), or (False, None)
        when it could not run there without waiting, nothing of it kept: the thread runs it.

        A write goes to the thread only when its transaction could not begin (a lock held
        elsewhere) or the statement itself failed, undone to its savepoint. A failure of the
        commit is the caller's: a commit may fail after its data reached the WAL, and no
        quick write may run twice (a counter would count twice).
        """
        db = self._inline
        assert db is not None
        if not writes:
            try:
                [outcome] = _read(db, [statement])
            except Exception:  # noqa: BLE001 - nothing changed; the thread runs it, and reports
                return False, None
        else:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error:
                return False, None  # locked elsewhere: the thread waits for the lock
            try:
                [outcome] = _commit(db, [statement])
            except Exception as exc:  # noqa: BLE001 - the caller hears it, as from a batch
                outcome = StoreError(f"SQLite transaction failed: {exc!r}")
                if db.in_transaction:  # its rollback failed too: it would hold the lock
                    self._inline = None  # everything runs on the thread from now on
                    with suppress(sqlite3.Error):
                        db.close()
                return True, outcome
            self._committed()
        if isinstance(outcome, StoreError) and not isinstance(outcome, StoreRejected):
            return False, None  # busy or unwell: undone, and the thread waits where it may
        return True, outcome

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending is not None and self.db is not None and self._thread is not None:
            batch, self._pending = self._pending, None
            work = _read
            if batch.writes:
                work = _write_checkpointed if self._wal_full else _write
                self._wal_full = False
            try:
                outcomes = await loop.run_in_executor(self._thread, work, self.db, batch.statements)
            except Exception as exc:  # noqa: BLE001 - every waiter must hear how its batch ended
                outcomes = [StoreError(f"SQLite transaction failed: {exc!r}")] * len(batch.futures)
            if batch.writes:
                self._committed()
            for future, outcome in zip(batch.futures, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def _committed(self) -> None:
        """A write transaction ended: every :data:`CHECKPOINT_EVERY`, a passive checkpoint
        on the checkpoint thread, unless one runs."""
        self._commits += 1
        if self._commits < CHECKPOINT_EVERY or self._checkpointer is None or self._wal_full:
            return
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        self._commits = 0
        loop = asyncio.get_running_loop()
        self._checkpoint = loop.run_in_executor(
            self._checkpointer, _checkpoint, self._checkpoint_db
        )
        self._checkpoint.add_done_callback(self._checkpointed)

    def _checkpointed(self, done: asyncio.Future[bool]) -> None:
        if not done.cancelled() and done.exception() is None and done.result():
            self._wal_full = True


def _no_autocheckpoint(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA wal_autocheckpoint=0")


def _checkpoint(db: sqlite3.Connection | None) -> bool:
    """A passive checkpoint: copies what it can of the WAL, waiting for no one. Whether the
    WAL holds more than :data:`WAL_LIMIT` pages (commits came during every checkpoint)."""
    if db is None:
        return False
    try:
        _, pages, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.Error as exc:  # the disk is full, the file unreadable...
        log.warning("SQLite checkpoint failed: %s", exc)
        return False
    return bool(pages > WAL_LIMIT)


def _write_checkpointed(db: sqlite3.Connection, statements: list[Statement]) -> list[Any]:
    """:func:`_write`, then a checkpoint on the same thread, the writes that come meanwhile
    waiting for it: the WAL is copied whole, and the next commit rewinds it."""
    outcomes = _write(db, statements)
    with suppress(sqlite3.Error):  # as a commit's own checkpoint, it fails nothing
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return outcomes


def _classify(exc: Exception) -> StoreError:
    """A failing statement's error: transient (the database is busy, locked or unwell) or a
    rejection of this statement's values, which no retry will change."""
    if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
        return StoreError(str(exc))
    return StoreRejected(f"{type(exc).__name__}: {exc}")


def _write(db: sqlite3.Connection, statements: list[Statement]) -> list[Any]:
    """The thread's transaction: :func:`_commit`, once it has the write lock."""
    _lock(db)
    return _commit(db, statements)


def _lock(db: sqlite3.Connection) -> None:
    """Begin a write transaction on the thread's connection, waiting for a lock another
    process holds: first in short pauses, then as SQLite waits."""
    db.execute("PRAGMA busy_timeout=0")
    try:
        for pause in LOCK_PAUSES:
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:  # or BUSY_RECOVERY...
                    raise
            _pause(pause)
    finally:
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    db.execute("BEGIN IMMEDIATE")


def _commit(db: sqlite3.Connection, statements: list[Statement]) -> list[Any]:
    """The rest of a begun transaction: the whole batch, then its commit.

    A statement that fails (whatever it raises) is undone alone and its caller hears why; the
    others commit. The batch runs first as a whole, under one savepoint (a lone statement
    under none: its transaction is undone instead); only when a statement fails is the batch
    undone and run again, each statement under a savepoint of its own. A savepoint per
    statement cost two more SQLite statements for each, a tenth of a job's time in the store,
    for failures that hardly ever come. The statements only change the database, so a second
    run does what the first would have.
    """
    try:
        if len(statements) == 1:
            try:
                outcomes = [statements[0](db)]
            except Exception as exc:  # noqa: BLE001 - the statement's caller gets it
                db.execute("ROLLBACK")
                return [_classify(exc)]
        else:
            db.execute("SAVEPOINT batch")
            try:
                outcomes = [statement(db) for statement in statements]
            except Exception:  # noqa: BLE001 - run again, each statement on its own
                db.execute("ROLLBACK TO batch")
                outcomes = _one_by_one(db, statements)
            db.execute("RELEASE batch")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return outcomes


def _one_by_one(db: sqlite3.Connection, statements: list[Statement]) -> list[Any]:
    """Each statement under a savepoint of its own: one that fails is undone alone."""
    outcomes: list[Any] = []
    for statement in statements:
        db.execute("SAVEPOINT statement")
        try:
            outcomes.append(statement(db))
        except Exception as exc:  # noqa: BLE001 - the statement's caller gets it, not the batch
            db.execute("ROLLBACK TO statement")
            outcomes.append(_classify(exc))
        db.execute("RELEASE statement")
    return outcomes


def _read(db: sqlite3.Connection, statements: list[Statement]) -> list[Any]:
    """Statements that only read, outside any write transaction (each sees the last commit,
    WAL's snapshot, without taking the write lock)."""
    outcomes: list[Any] = []
    for statement in statements:
        try:
            outcomes.append(statement(db))
        except Exception as exc:  # noqa: BLE001 - the statement's caller gets it, not the batch
            outcomes.append(_classify(exc))
    return outcomes


def _connect_inline(path: Path) -> sqlite3.Connection:
    """The event loop's (and the checkpoint thread's) connection: never waits for a lock,
    never checkpoints on its own."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA temp_store=MEMORY")
    db.execute("PRAGMA busy_timeout=0")
    db.execute("PRAGMA wal_autocheckpoint=0")
    return db
