"""The worker command's process: its event loop, and its exit past handlers that never stop."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import NoReturn

log = logging.getLogger("gateway.cli")


def exit_leaving(handlers: int) -> NoReturn:
    """End the worker's process now, its stop done but ``handlers`` abandoned handlers still
    running: the interpreter would wait for such a thread at exit, and the event loop's close
    for such a task, for ever. Their runs have ended and their jobs were reported; logs and
    output are flushed first."""
    log.error("%d abandoned handler(s) still running: exiting without waiting for them", handlers)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(0)


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
