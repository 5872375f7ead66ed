"""Inside a pool's child process: one job after another, each under its resource limits.

The child talks to its worker over one duplex pipe, in pickled tuples:

- worker → child: ``("job", job_id, context, inputs, limits)``, ``("cancel", job_id)``,
  ``("stop",)``;
- child → worker: ``("ready", pid)`` once, then for each job ``("progress", job_id, percent,
  message)`` and one ``("ok", job_id, result, rss)`` or ``("error", job_id, type, message,
  code, retryable, rss, retire)``.

A thread reads the pipe, so that a cancel reaches ``ctx.cancelled`` while the handler runs on
the main thread. The child exits by itself when its worker is gone (the pipe reads EOF), and
on Linux the kernel kills it when its forkserver ends, which it does with the worker.

Each child is a session of its own: Linux's autogroup scheduler shares the CPU between
sessions, so children in the worker's session would share one session's share and two of
them would not get two cores on a busy machine; a session of its own also keeps a terminal's
Ctrl-C for the worker, which stops its children in order.

Limits are set with ``setrlimit`` before each job and lifted after it: ``memory`` caps the
process's data (``RLIMIT_DATA``: its heap and private anonymous memory, the interpreter's own
included), so an allocation past it raises ``MemoryError``, which fails the job with code
``memory_limit``; ``cpu_time`` caps the CPU seconds the job may add (``RLIMIT_CPU``, whole
seconds), past which the kernel ends the child with ``SIGXCPU``.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import multiprocessing.connection
import os
import queue
import resource
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from ._context import JobContext
from ._errors import HandlerError, describe

EXIT_ORPHANED = 70  # the worker is gone: the child exits without a word
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True, slots=True)
class Limits:
    """A job's resource limits (None: unlimited), applied in its child before it runs."""

    memory: int | None = None  # bytes of data the child process may hold
    cpu_time: float | None = None  # CPU seconds the job may use

    def __bool__(self) -> bool:
        return self.memory is not None or self.cpu_time is not None


class _Channel:
    """The child's end of the pipe, and the job it runs now."""

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.job_id: UUID | None = None
        self.context: JobContext | None = None

    def send(self, message: tuple[Any, ...]) -> None:
        with self.lock:
            self.conn.send(message)

    def progress(self, job_id: UUID) -> Callable[[int, str | None], None]:
        """The progress sink of one job; reports from its leftovers after it ended are
        dropped, and repeats are not sent (a chatty handler cannot flood the pipe)."""
        last: list[tuple[int, str | None]] = []

        def sink(percent: int, message: str | None) -> None:
            with self.lock:
                if self.job_id != job_id or last == [(percent, message)]:
                    return
                last[:] = [(percent, message)]
                self.conn.send(("progress", job_id, percent, message))

        return sink


def _listen(channel: _Channel, orders: queue.SimpleQueue[tuple[Any, ...] | None]) -> None:
    """Hand jobs to the main thread and cancels to the running job; exit with the worker."""
    try:
        while True:
            message = channel.conn.recv()
            if message[0] == "job":
                orders.put(message[1:])
            elif message[0] == "cancel":
                with channel.lock:
                    if channel.job_id == message[1] and channel.context is not None:
                        channel.context._cancel()
            elif message[0] == "stop":
                orders.put(None)
                return
    except (EOFError, OSError):
        os._exit(EXIT_ORPHANED)


def child_main(
    conn: multiprocessing.connection.Connection,
    handler: Callable[..., Any],
    to_json: Callable[[Any], Any],
) -> None:
    """The child's life: say it is ready, then run the jobs it is sent until told to stop."""
    _detach()
    channel = _Channel(conn)
    orders: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
    threading.Thread(target=_listen, args=(channel, orders), name="parent", daemon=True).start()
    channel.send(("ready", os.getpid()))
    while (order := orders.get()) is not None:
        _run_job(channel, handler, to_json, *order)
    conn.close()


def _detach() -> None:
    """A session of its own, and (Linux) death with the forkserver that started it."""
    parent = os.getppid()
    with contextlib.suppress(OSError):
        os.setsid()
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the forkserver ended before the kernel was told
            os._exit(EXIT_ORPHANED)


def _run_job(
    channel: _Channel,
    handler: Callable[..., Any],
    to_json: Callable[[Any], Any],
    job_id: UUID,
    context: dict[str, Any],
    inputs: Any,
    limits: Limits,
) -> None:
    ctx = JobContext(sink=channel.progress(job_id), **context)
    with channel.lock:
        channel.job_id, channel.context = job_id, ctx
    reply: tuple[Any, ...]
    try:
        with limited(limits):
            value = to_json(handler(ctx, inputs))
    except MemoryError as exc:
        # Past here the limit is lifted: there is memory to say so. The child may be left
        # fragmented or holding the handler's leftovers: it is replaced after this job.
        code = "memory_limit" if limits.memory is not None else "handler_error"
        reply = ("error", job_id, type(exc).__name__, _memory_message(exc, limits), code, False)
        reply += (resident_bytes(), True)
    except BaseException as exc:  # noqa: BLE001 - the worker must hear of every exit cause
        code = exc.code if isinstance(exc, HandlerError) else "handler_error"
        retryable = exc.retryable is True if isinstance(exc, HandlerError) else False
        reply = ("error", job_id, type(exc).__name__, describe(exc), code, retryable)
        reply += (resident_bytes(), False)
    else:
        reply = ("ok", job_id, value, resident_bytes())
    with channel.lock:
        channel.job_id, channel.context = None, None
    channel.send(reply)


def _memory_message(exc: MemoryError, limits: Limits) -> str:
    if limits.memory is None:
        return str(exc) or "out of memory"
    return f"the job needed more memory than its limit of {limits.memory:,} bytes"


@contextlib.contextmanager
def limited(limits: Limits) -> Iterator[None]:
    """Apply ``limits`` to this process for the block, then restore the previous ones.

    Only soft limits change: a process cannot raise a hard limit it has lowered, and the
    next job needs them back.
    """
    if not limits:
        yield
        return
    saved: list[tuple[int, tuple[int, int]]] = []

    def cap(which: int, value: int) -> None:
        soft, hard = resource.getrlimit(which)
        saved.append((which, (soft, hard)))
        resource.setrlimit(
            which, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard)
        )

    try:
        if limits.memory is not None:
            cap(resource.RLIMIT_DATA, limits.memory)
        if limits.cpu_time is not None:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cap(resource.RLIMIT_CPU, math.ceil(usage.ru_utime + usage.ru_stime + limits.cpu_time))
            cap(resource.RLIMIT_CORE, 0)  # the SIGXCPU that ends the job dumps no core
        yield
    finally:
        for which, previous in reversed(saved):
            resource.setrlimit(which, previous)


def resident_bytes() -> int:
    """This process's resident memory now (its peak where /proc is not available)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
