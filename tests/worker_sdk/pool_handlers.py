"""Process handlers for the pool's tests (importable, so that child processes can run them).

Each takes ``(ctx, inputs)`` with a dict of inputs and answers with its child's pid, so that a
test can tell which child ran which job.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from worker_sdk import JobContext
from worker_sdk._child import resident_bytes

_held: list[bytearray] = []  # what "hold" keeps between jobs, as a leaking handler would


def act(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Do what ``inputs`` says, in this order: report progress, allocate, hold, burn CPU,
    crash, wait for a gate file (ignoring ctx.cancelled unless ``cooperative``)."""
    if "progress" in inputs:
        ctx.progress(int(inputs["progress"]), "acting")
    if "allocate" in inputs:
        block = bytearray(int(inputs["allocate"]))
        block[::4096] = b"x" * len(block[::4096])  # touch every page: make it resident
        if inputs.get("hold"):
            _held.append(block)
    if inputs.get("burn"):
        while True:
            pass
    crash = inputs.get("crash")
    if crash == "exit":
        os._exit(3)
    if crash == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    gate = inputs.get("gate")
    if gate:
        while not Path(gate).exists():
            if inputs.get("cooperative") and ctx.cancelled:
                return {"pid": os.getpid(), "stopped": True}
            time.sleep(0.005)  # a child process polling a file another process creates
    return {"pid": os.getpid(), "rss": resident_bytes(), "cancelled": ctx.cancelled}
