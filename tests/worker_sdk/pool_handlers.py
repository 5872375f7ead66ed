"""Process handlers for the pool's tests (importable, so that child processes can run them).

Each takes ``(ctx, inputs)`` with a dict of inputs and answers with its child's pid, so that a
test can tell which child ran which job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from worker_sdk import JobContext
from worker_sdk._child import resident_bytes

_held: list[bytearray] = []  # what "hold" keeps between jobs, as a leaking handler would


def _start_grandchild(inputs: dict[str, Any]) -> None:
    if "spawn" in inputs:
        grandchild = subprocess.Popen(["sleep", "600"])
        Path(inputs["spawn"]).write_text(str(grandchild.pid))
    if "fork" in inputs:
        pid = os.fork()
        if pid == 0:  # the grandchild: holds every descriptor of the child, the pipe too
            time.sleep(600)
            os._exit(0)
        Path(inputs["fork"]).write_text(str(pid))


def _report(ctx: JobContext, inputs: dict[str, Any]) -> None:
    if "go" in inputs:  # the test's signal to go on
        while not Path(inputs["go"]).exists():
            time.sleep(0.005)
    progress = inputs.get("progress")
    for percent in progress if isinstance(progress, list) else [progress] if progress else []:
        ctx.progress(int(percent), "acting")


def act(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Do what ``inputs`` says, in this order: start a grandchild (``spawn``: a command,
    ``fork``: a fork holding the child's descriptors; its pid written to the file named), wait
    for the file ``go``, report progress (a percentage, or several in turn), allocate, hold,
    burn CPU, crash, wait for a gate file (ignoring ctx.cancelled unless ``cooperative``); then
    answer with ``echo`` as it came and ``pad`` characters of padding."""
    _start_grandchild(inputs)
    _report(ctx, inputs)
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
    result = {"pid": os.getpid(), "rss": resident_bytes(), "cancelled": ctx.cancelled}
    if "echo" in inputs:  # an input back, as large as it came
        result["echo"] = inputs["echo"]
    if "pad" in inputs:  # a result of about that many bytes
        result["pad"] = "p" * int(inputs["pad"])
    return result
