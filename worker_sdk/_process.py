"""Run one job's handler in a child process, with progress flowing back over a pipe.

A child process per job costs a fork from a forkserver (milliseconds) and buys what CPU-heavy
handlers need: no GIL contention with the worker's event loop (heartbeats keep flowing), and a
kill that stops exactly one job. The child exits by itself when the worker dies (its end of
the pipe reads EOF).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from ._context import JobContext
from ._errors import HandlerError


class ChildDied(RuntimeError):
    """The child process exited without reporting a result."""


class ChildFailed(Exception):
    """The handler raised in the child; carries what the job's error needs."""

    def __init__(self, type_name: str, message: str, code: str, retryable: bool) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.code = code
        self.retryable = retryable


def _watch_parent(conn: multiprocessing.connection.Connection, ctx: JobContext) -> None:
    """Cancel the context when the parent says so; exit when the parent is gone."""
    try:
        while True:
            if conn.recv() == "cancel":
                ctx._cancel()
    except (EOFError, OSError):
        os._exit(70)


def _child_main(
    conn: multiprocessing.connection.Connection,
    handler: Callable[..., Any],
    context: dict[str, Any],
    inputs: Any,
    to_json: Callable[[Any], Any],
) -> None:
    lock = threading.Lock()
    last: list[tuple[int, str | None] | None] = [None]

    def sink(percent: int, message: str | None) -> None:
        # Percent is an integer, so deduplicating repeats bounds the pipe traffic of a chatty
        # handler; the worker coalesces what reaches the broker.
        with lock:
            if last[0] == (percent, message):
                return
            last[0] = (percent, message)
            conn.send(("progress", percent, message))

    ctx = JobContext(sink=sink, **context)
    threading.Thread(target=_watch_parent, args=(conn, ctx), daemon=True).start()
    try:
        value = to_json(handler(ctx, inputs))
    except BaseException as exc:  # noqa: BLE001 - the parent must hear of every exit cause
        code = exc.code if isinstance(exc, HandlerError) else "handler_error"
        retryable = exc.retryable if isinstance(exc, HandlerError) else False
        with lock:
            conn.send(("error", type(exc).__name__, str(exc), code, retryable))
    else:
        with lock:
            conn.send(("ok", value))
    conn.close()


class ChildRunner:
    """Starts child processes from one forkserver, preloaded with the handler's modules."""

    def __init__(self, preload: Sequence[str]) -> None:
        self._mp = multiprocessing.get_context("forkserver")
        self._mp.set_forkserver_preload(list(preload))

    async def run(
        self,
        handler: Callable[..., Any],
        *,
        job_id: UUID,
        service: str,
        attempt: int,
        worker_id: str,
        inputs: Any,
        to_json: Callable[[Any], Any],
        on_progress: Callable[[int, str | None], None],
        cancel: asyncio.Event,
        context: dict[str, Any],
    ) -> Any:
        """Run ``handler(ctx, inputs)`` in a new child; return its JSON result.

        Raises :class:`ChildFailed` when the handler raised, :class:`ChildDied` when the
        child exited without a result, and ``CancelledError`` when cancelled (the child is
        killed). Setting ``cancel`` tells the child (``ctx.cancelled`` becomes true) without
        killing it: the cooperative phase of a cancel.
        """
        parent_conn, child_conn = self._mp.Pipe(duplex=True)
        context = {
            **context,
            "job_id": job_id,
            "service": service,
            "attempt": attempt,
            "worker_id": worker_id,
        }
        process = self._mp.Process(
            target=_child_main,
            args=(child_conn, handler, context, inputs, to_json),
            name=f"job-{job_id}",
            daemon=True,
        )
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[tuple[Any, ...]] = loop.create_future()

        def readable() -> None:
            try:
                message = parent_conn.recv()
            except (EOFError, OSError):
                loop.remove_reader(parent_conn.fileno())
                if not outcome.done():
                    outcome.set_result(("died",))
                return
            if message[0] == "progress":
                on_progress(message[1], message[2])
            elif not outcome.done():
                outcome.set_result(message)

        async def forward_cancel() -> None:
            await cancel.wait()
            with contextlib.suppress(OSError):
                parent_conn.send("cancel")

        await asyncio.to_thread(process.start)
        child_conn.close()
        loop.add_reader(parent_conn.fileno(), readable)
        forwarder = asyncio.create_task(forward_cancel())
        try:
            result = await outcome
        finally:
            forwarder.cancel()
            loop.remove_reader(parent_conn.fileno())
            if process.is_alive():
                process.kill()
            await asyncio.to_thread(process.join)
            parent_conn.close()
        if result[0] == "ok":
            return result[1]
        if result[0] == "error":
            raise ChildFailed(result[1], result[2], result[3], result[4])
        raise ChildDied(f"the job's child process exited with code {process.exitcode}")
