"""In-process fan-out of job changes to the requests that wait on them (``Prefer: wait``) or
stream them (server-sent events).

Job events reach this process through its private queue, a *tap* on the events exchange.
The tap is bound only while some request here waits, so the asynchronous common case costs the
broker no copies: it is attached before the waiting request publishes its task (no event can
slip past) and detached once nobody has waited for ``linger`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol
from uuid import UUID

from gateway.store import JobRecord

log = logging.getLogger("gateway.watch")


class Tap(Protocol):
    """A copy of the terminal events, switched on and off; a waiter waits ``timeout``
    seconds for it to be switched on."""

    timeout: float

    async def attach(self) -> None: ...

    async def detach(self) -> None: ...


class Mailbox:
    """The changes of the jobs one subscriber follows, for one consumer: the latest record of
    each job that changed since the consumer last took it, jobs in the order they first
    changed.

    Each record is a job's whole state, so a consumer that lags (a client that stopped
    reading its event stream) is owed only the latest: a newer record replaces the one
    waiting, and a mailbox holds at most one record per job it follows, however fast the jobs
    change. A record older than the one waiting (a lower ``seq``, come late) is dropped.

    A slim stand-in for ``asyncio.Queue`` (four deques and an Event, about 3 KiB, held by
    every open event stream for its whole life): nothing is allocated while it is empty but
    the future its consumer waits on.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: dict[UUID, JobRecord] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, record: JobRecord) -> None:
        if self._items is None:
            self._items = {}
        waiting = self._items.get(record.id)
        if waiting is None or record.seq >= waiting.seq:
            self._items[record.id] = record  # a job already waiting keeps its place
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __len__(self) -> int:
        return len(self._items) if self._items is not None else 0

    async def get(self) -> JobRecord:
        """The next change, once there is one."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        record = self._items.pop(next(iter(self._items)))
        if not self._items:
            self._items = None
        return record


class JobWatch:
    """Futures keyed by job id, resolved when the job reaches a terminal state."""

    def __init__(self, tap: Tap | None = None, *, linger: float = 5.0) -> None:
        self._waiters: dict[UUID, set[asyncio.Future[JobRecord]]] = {}
        self._subscribers: dict[UUID, set[Mailbox]] = {}
        self._tap = tap
        self._linger = linger
        self._attached = False
        self._lock = asyncio.Lock()
        self._detacher: asyncio.Task[None] | None = None
        self._binding: asyncio.Task[Exception | None] | None = None
        self._holds = 0

    def use_tap(self, tap: Tap) -> None:
        """Switch this tap on while requests wait (set once, at start-up)."""
        self._tap = tap

    def interested(self, job_id: UUID) -> bool:
        return job_id in self._waiters or job_id in self._subscribers

    def notify(self, record: JobRecord) -> None:
        for queue in self._subscribers.get(record.id, ()):
            queue.put_nowait(record)
        if not record.status.terminal:
            return
        for future in self._waiters.get(record.id, ()):
            if not future.done():
                future.set_result(record)

    @asynccontextmanager
    async def subscribe(self, *job_ids: UUID) -> AsyncIterator[Mailbox]:
        """Every change of these jobs, in one queue, while the context lasts (server-sent
        events)."""
        queue = Mailbox()
        for job_id in job_ids:
            self._subscribers.setdefault(job_id, set()).add(queue)
        try:
            await self._attach()
            yield queue
        finally:
            for job_id in job_ids:
                queues = self._subscribers.get(job_id)
                if queues is not None:
                    queues.discard(queue)
                    if not queues:
                        del self._subscribers[job_id]
            self._detach_later()

    @asynccontextmanager
    async def waiting(self, job_id: UUID) -> AsyncIterator[asyncio.Future[JobRecord]]:
        """Register a waiter; enter it before publishing, so no terminal event slips past."""
        future: asyncio.Future[JobRecord] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(future)
        try:
            await self._attach()
            yield future
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[job_id]
            future.cancel()
            self._detach_later()

    async def hold(self) -> None:
        """Keep the tap attached until :meth:`release` (the recovery pass's barriers); raise,
        holding nothing, when it cannot be bound: a barrier must see its own passing."""
        self._holds += 1
        try:
            await self._attach(required=True)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        self._holds -= 1
        self._detach_later()

    def _idle(self) -> bool:
        return not self._waiters and not self._subscribers and not self._holds

    def _detach_later(self) -> None:
        idle = self._idle()
        if idle and self._tap is not None and self._detacher is None:
            self._detacher = asyncio.create_task(self._detach_when_idle())

    async def _attach(self, *, required: bool = False) -> None:
        """Bind the tap unless it is bound. A waiter or a stream that cannot have it bound goes
        on without it (its early answer is lost, not its job); ``required`` raises instead."""
        if self._tap is None or self._attached:
            return
        if self._binding is None or self._binding.done():
            self._binding = asyncio.create_task(self._bind(self._tap))
        # Shielded: a caller cancelled meanwhile (an event stream whose client left), or one
        # that waited long enough, must not cut the broker's call short, which would close the
        # tap's channel; the bind is the watch's own task, and records its outcome itself.
        try:
            async with asyncio.timeout(self._tap.timeout):
                failure = await asyncio.shield(self._binding)
        except TimeoutError:
            failure = TimeoutError("the broker did not bind the terminal-event tap in time")
        if failure is not None and required:
            raise failure

    async def _bind(self, tap: Tap) -> Exception | None:
        # ``_attached`` turns false as a detach begins (under the lock): a request that comes
        # while the tap is being unbound waits for the lock and binds it again, before it
        # publishes anything.
        failure: Exception | None = None
        async with self._lock:
            if self._attached:
                return None
            try:
                await tap.attach()
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                failure = ConnectionError(f"the bind was cancelled: {exc!r}")
            except Exception as exc:  # noqa: BLE001 - any failure is its waiters' to hear
                failure = exc
            else:
                self._attached = True
        if failure is None:
            self._detach_later()  # its waiters may all have left meanwhile
            return None
        log.warning(
            "could not bind the terminal-event tap: requests waiting here are answered when "
            "their wait ends, unless this process applies their job's end",
            exc_info=failure,
        )
        return failure

    async def _detach_when_idle(self) -> None:
        try:
            await asyncio.sleep(self._linger)  # the linger period
            async with self._lock:
                idle = self._idle()
                if idle and self._attached and self._tap is not None:
                    self._attached = False
                    await self._tap.detach()
        except Exception:
            log.warning("could not detach the terminal-event tap", exc_info=True)
        finally:
            self._detacher = None

    async def close(self) -> None:
        """Stop the pending bind and detach (the tap's queue dies with the connection)."""
        for task in (self._binding, self._detacher):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
