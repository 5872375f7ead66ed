"""The worker command's process: its event loop, its signals, and its exit past handlers that
never stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import Any, NoReturn

from worker_sdk import Worker

log = logging.getLogger("gateway.cli")


async def run_worker(worker: Worker, **options: Any) -> None:
    """``worker.run(**options)`` until SIGTERM or SIGINT stops it; a process whose stop left
    handlers running exits at once (:func:`exit_leaving`)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run(**options)
    except BaseException as exc:  # its stop may have left handlers running too
        if worker.lingering:
            exit_leaving(worker.lingering, status=1, failure=exc)
        raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if worker.lingering:
        exit_leaving(worker.lingering)


def exit_leaving(
    handlers: int, *, status: int = 0, failure: BaseException | None = None
) -> NoReturn:
    """End the worker's process now, its stop done (or ``failure`` ending it, with
    ``status``) but ``handlers`` abandoned handlers still running: the interpreter would wait
    for such a thread at exit, and the event loop's close for such a task, for ever. Their
    runs have ended; logs and output are flushed first."""
    if failure is not None:
        log.error("the worker failed: %s", failure, exc_info=failure)
    log.error("%d abandoned handler(s) still running: exiting without waiting for them", handlers)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(status)


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The worker's event loop, chosen as uvicorn chooses the gateway's (``--loop``): uvloop
    when installed (a tenth less CPU per job for a no-op service), else asyncio's own."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop
