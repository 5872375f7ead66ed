"""A warm pool of child processes for ``isolation="process"`` handlers.

Children start from one forkserver that has imported the worker's main module and the
handler's module once, so a child is up in milliseconds and a job pays only its pipe round
trip, not an interpreter start. Each child runs jobs one after another (see
:mod:`worker_sdk._child`) and is replaced, in the background, when it:

- is killed: its job was cancelled or timed out and did not stop within the grace;
- dies: a crash (segfault, ``os._exit``, the OOM killer) fails that job alone;
- has run ``max_jobs_per_child`` jobs, or holds more than ``max_memory_per_child`` bytes
  resident after a job, or hit a job's memory limit: it is retired between jobs.

Every child is reaped (its exit status read back from the forkserver) and its pipe and
sentinel closed, so a long-running worker holds a constant number of descriptors. A child
is the leader of its own process group: a kill ends the processes its handler started
with it, and its death is seen from its exit status, even while a process it forked keeps
its end of the pipe open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from types import ModuleType
from typing import Any
from uuid import UUID

from ._child import Limits, child_main
from ._handler import to_json
from ._pool_errors import ChildDied, ChildFailed, died

log = logging.getLogger("worker_sdk")

START_TIMEOUT = 120.0  # the first child also starts the forkserver, which imports the handler
STOP_TIMEOUT = 5.0  # a retired child has this long to exit before it is killed


@cache
def _launcher() -> ThreadPoolExecutor:
    """The one thread that starts and joins children: multiprocessing polls every child it
    knows on each start, and two threads reading one child's exit status would garble it."""
    return ThreadPoolExecutor(1, thread_name_prefix="children")


def preload_modules(handler: Callable[..., Any]) -> list[str]:
    """What the forkserver imports once for all children: the handler's module, and the
    modules the main module's names come from.

    Each child runs the main module again (as ``__mp_main__``) when it starts; with what it
    imports already loaded, that run is cheap. The main module itself is not preloaded: by
    name (``-m``), running it again would find it loaded and warn; by path (the ``sgw``
    entry point), Python 3.11 to 3.13 drop it on the way to the forkserver.
    """
    main = sys.modules.get("__main__")
    own = getattr(getattr(main, "__spec__", None), "name", None)
    modules = []
    for value in list(vars(main).values()) if main is not None else []:
        origin = value.__name__ if isinstance(value, ModuleType) else None
        origin = origin or getattr(value, "__module__", None)
        if isinstance(origin, str) and origin in sys.modules and origin not in ("__main__", own):
            modules.append(origin)
    return list(dict.fromkeys([*modules, handler.__module__, "worker_sdk._child"]))


class _Child:
    """One child process, its end of the pipe, and the job it runs, if any."""

    def __init__(
        self,
        process: multiprocessing.process.BaseProcess,
        conn: multiprocessing.connection.Connection,
    ) -> None:
        self.process = process
        self.conn = conn
        self.ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.jobs = 0
        self.job_id: UUID | None = None
        self.outcome: asyncio.Future[tuple[Any, ...]] | None = None
        self.on_progress: Callable[[int, str | None], None] | None = None
        self.dead = False
        self.ended: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()


class ChildPool:
    """``size`` warm child processes running ``handler``, one job each at a time."""

    def __init__(
        self,
        handler: Callable[..., Any],
        *,
        size: int,
        max_jobs_per_child: int | None = None,
        max_memory_per_child: int | None = None,
    ) -> None:
        self._mp = multiprocessing.get_context("forkserver")
        self._mp.set_forkserver_preload(preload_modules(handler))
        self._handler = handler
        self._size = size
        self._max_jobs = max_jobs_per_child
        self._max_memory = max_memory_per_child
        self._live = 0  # children started or starting, not yet retired or killed
        self._idle: deque[_Child] = deque()
        self._busy: set[_Child] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.started = 0  # children started over the pool's life (replacements included)

    @property
    def size(self) -> int:
        return self._size

    @property
    def busy(self) -> int:
        """Children running a job now."""
        return len(self._busy)

    @property
    def pids(self) -> list[int]:
        """The live children's process ids."""
        return [c.process.pid for c in (*self._idle, *self._busy) if c.process.pid is not None]

    async def start(self) -> None:
        """Start every child and wait until each is ready."""
        self._live += self._size
        children = await asyncio.gather(
            *(self._spawn() for _ in range(self._size)), return_exceptions=True
        )
        for child in children:
            if isinstance(child, BaseException):
                await self.close()
                raise child
            self._idle.append(child)

    def resize(self, size: int) -> None:
        """Grow (children start now) or shrink (idle children retire now, busy ones when their
        job ends) the pool."""
        self._size = size
        while self._live > self._size and self._idle:
            self._retire(self._idle.pop())
        self._refill()

    async def run(
        self,
        *,
        job_id: UUID,
        context: dict[str, Any],
        inputs: Any,
        limits: Limits,
        on_progress: Callable[[int, str | None], None],
        cancel: asyncio.Event,
    ) -> Any:
        """Run one job on an idle child; return its JSON result.

        Raises :class:`ChildFailed` when the handler raised, :class:`ChildDied` when the
        child exited without a result, and ``CancelledError`` when cancelled (the child is
        killed and replaced). Setting ``cancel`` tells the child (``ctx.cancelled`` becomes
        true) without killing it: the cooperative phase of a stop.
        """
        child = await self._acquire()
        loop = asyncio.get_running_loop()
        child.job_id, child.on_progress = job_id, on_progress
        child.outcome = outcome = loop.create_future()
        forwarder = loop.create_task(self._forward_cancel(child, job_id, cancel))
        keep = False
        try:
            try:
                child.conn.send(("job", job_id, context, inputs, limits))
            except OSError:
                child.dead = True  # it died between jobs; the reader reports how
            result = await outcome
            keep = True
        finally:
            forwarder.cancel()
            child.job_id = child.on_progress = child.outcome = None
            self._busy.discard(child)
            if keep and not child.dead:
                self._release(child, result)
            else:
                self._kill(child)
        if result[0] == "ok":
            return result[2]
        if result[0] == "error":
            raise ChildFailed(result[2], result[3], result[4], result[5])
        # Its exit status, read back from the forkserver once the child is reaped.
        raise died(await asyncio.shield(child.ended))

    async def close(self) -> None:
        """Stop the idle children and reap them all; call it once the jobs have ended (a
        child still busy is killed, and its job fails)."""
        self._closed = True
        while self._idle:
            self._retire(self._idle.pop())
        for child in self._busy:
            with contextlib.suppress(ValueError):
                child.process.kill()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _forward_cancel(self, child: _Child, job_id: UUID, cancel: asyncio.Event) -> None:
        await cancel.wait()
        with contextlib.suppress(OSError):
            child.conn.send(("cancel", job_id))

    async def _acquire(self) -> _Child:
        while True:
            if self._idle:
                child = self._idle.popleft()
            elif self._live < self._size:
                self._live += 1
                child = await self._spawn()
            else:
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled():
                        self._wake()  # pass on the wake-up this waiter will not use
                    raise
                continue
            if child.dead:
                self._kill(child)
                continue
            self._busy.add(child)
            return child

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _release(self, child: _Child, result: tuple[Any, ...]) -> None:
        """Back to the idle children, or retired when it has done its share."""
        child.jobs += 1
        rss = result[3] if result[0] == "ok" else result[6]
        retire = result[0] == "error" and result[7]
        if retire or (self._max_jobs is not None and child.jobs >= self._max_jobs):
            self._retire(child)
        elif self._max_memory is not None and rss > self._max_memory:
            log.info(
                "child %s holds %d bytes (max_memory_per_child %d); replacing it",
                child.process.pid,
                rss,
                self._max_memory,
            )
            self._retire(child)
        elif self._live > self._size or self._closed:
            self._retire(child)
        else:
            self._idle.append(child)
            self._wake()

    def _retire(self, child: _Child) -> None:
        """Ask the child to exit after its last job; a replacement starts now."""
        with contextlib.suppress(OSError):
            child.conn.send(("stop",))
        self._forget(child, kill=False)

    def _kill(self, child: _Child) -> None:
        self._forget(child, kill=True)

    def _forget(self, child: _Child, *, kill: bool) -> None:
        if child.outcome is None and child in self._idle:
            self._idle.remove(child)
        self._busy.discard(child)
        self._live -= 1
        self._track(self._reap(child, kill=kill))
        self._refill()

    def _refill(self) -> None:
        if self._closed:
            return
        while self._live < self._size:
            self._live += 1
            self._track(self._replenish())
        self._wake()

    def _track(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replenish(self) -> None:
        try:
            child = await self._spawn()
        except Exception:  # the next job that needs a child starts one itself
            log.exception("a replacement child process did not start")
            self._wake()
            return
        if self._closed or self._live > self._size:
            self._retire(child)
            return
        self._idle.append(child)
        self._wake()

    async def _spawn(self) -> _Child:
        """Start a child in a slot already counted in ``_live``; wait until it is ready."""
        loop = asyncio.get_running_loop()
        child: _Child | None = None
        try:
            parent_conn, child_conn = self._mp.Pipe(duplex=True)
            process = self._mp.Process(
                target=child_main,
                args=(child_conn, self._handler, to_json),
                name=f"{self._handler.__qualname__}-child",
                daemon=True,
            )
            try:
                await loop.run_in_executor(_launcher(), process.start)
            finally:
                child_conn.close()
            child = _Child(process, parent_conn)
            loop.add_reader(parent_conn.fileno(), self._readable, child)
            # uvloop's add_reader leaves it non-blocking: a message past the pipe's buffer (a
            # result of a megabyte) would break part-way. A child writes one it began whole.
            os.set_blocking(parent_conn.fileno(), True)
            loop.add_reader(process.sentinel, self._exited, child)
            self.started += 1
            async with asyncio.timeout(START_TIMEOUT):
                await child.ready
        except BaseException:
            self._live -= 1
            if child is not None:
                self._track(self._reap(child, kill=True))
            raise
        return child

    def _exited(self, child: _Child) -> None:
        """The child's exit status is ready: it is dead, whoever holds its pipe (a fork of its
        handler). What it sent before dying is read first, then the reader ends it."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(child.process.sentinel)
        if not child.dead and not child.conn.closed and not child.conn.poll(0):
            self._gone(child)
        child.dead = True

    def _gone(self, child: _Child) -> None:
        """The child is dead: its job, or its start, fails; idle, it is replaced."""
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(child.conn.fileno())
        child.dead = True
        if not child.ready.done():
            child.ready.set_exception(ChildDied("the child process exited while starting"))
        if child.outcome is not None and not child.outcome.done():
            child.outcome.set_result(("died",))
        elif child in self._idle:
            self._kill(child)  # died between jobs: replaced before a job finds it

    def _readable(self, child: _Child) -> None:
        try:
            message = child.conn.recv()
        except (EOFError, OSError):
            self._gone(child)
            return
        kind = message[0]
        if kind == "ready":
            if not child.ready.done():
                child.ready.set_result(message[1])
        elif message[1] != child.job_id:
            pass  # a leftover of a job that ended
        elif kind == "progress":
            if child.on_progress is not None:
                child.on_progress(message[2], message[3])
        elif child.outcome is not None and not child.outcome.done():
            child.outcome.set_result(message)
        # Its exit came first: drained, it is gone (a fork holding the pipe hides the EOF).
        if child.dead and not child.conn.closed and not child.conn.poll(0):
            self._gone(child)

    async def _reap(self, child: _Child, *, kill: bool) -> None:
        """Wait for the child's end (killing it first, or after STOP_TIMEOUT), read its exit
        status into ``child.ended``, and close its descriptors."""
        loop = asyncio.get_running_loop()
        process = child.process
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(child.conn.fileno())
        code: int | None = None
        try:
            if kill:
                if process.pid is not None:  # its group: the child and what its handler started
                    with contextlib.suppress(OSError):
                        os.killpg(process.pid, signal.SIGKILL)
                process.kill()
            exited: asyncio.Future[None] = loop.create_future()

            def readable() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(process.sentinel, readable)
            try:
                async with asyncio.timeout(None if kill else STOP_TIMEOUT):
                    await exited
            except TimeoutError:
                log.warning(
                    "child %s did not stop within %gs; killing it", process.pid, STOP_TIMEOUT
                )
                process.kill()
                await exited
            finally:
                loop.remove_reader(process.sentinel)
            code = await loop.run_in_executor(_launcher(), _join, process)
        finally:
            child.conn.close()
            if not child.ended.done():
                child.ended.set_result(code)


def _join(process: multiprocessing.process.BaseProcess) -> int | None:
    process.join()
    code = process.exitcode
    process.close()
    return code
