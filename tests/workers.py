"""Workers used by the tests (importable, so that child processes can unpickle them)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from worker_sdk import JobContext, Retry, Worker


class GateInputs(BaseModel):
    gate: str | None = None
    progress: int = 40
    report: bool = True  # whether ``slow`` reports its progress before the gate
    spin: float = 0.0


def _wait_for(path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} never opened")
        time.sleep(0.01)


# A CPU-bound handler in a child process: reports progress, then waits for a gate file.
crunch = Worker(
    "crunch", version="2.0.0", heartbeat_interval=0.2, progress_interval=0.01, cancel_grace=0.5
)


@crunch.handler(isolation="process")
def crunch_handler(ctx: JobContext, inputs: GateInputs) -> dict[str, Any]:
    ctx.progress(inputs.progress, "crunching")
    if inputs.gate:
        Path(f"{inputs.gate}.pid").write_text(str(os.getpid()))  # for the tests to watch
    end = time.monotonic() + inputs.spin
    spins = 0
    while time.monotonic() < end:  # burn CPU
        spins += 1
    if inputs.gate:
        _wait_for(inputs.gate)
    return {"pid": os.getpid(), "spins": spins, "worker": ctx.worker_id}


# A thread handler that burns CPU holding the GIL.
spin = Worker("spin", version="1.0.0", heartbeat_interval=0.1)


@spin.handler(isolation="thread")
def spin_handler(ctx: JobContext, inputs: GateInputs) -> dict[str, Any]:
    end = time.monotonic() + inputs.spin
    spins = 0
    while time.monotonic() < end:
        spins += 1
        if spins % 100_000 == 0:
            ctx.progress(min(99, int(100 * (1 - (end - time.monotonic()) / inputs.spin))))
    return {"spins": spins}


# An async handler that waits on a gate file, reporting which worker ran it.
slow = Worker("slow", version="1.0.0", shutdown_grace=30)


@slow.handler
async def slow_handler(ctx: JobContext, inputs: GateInputs) -> dict[str, Any]:
    if inputs.report:
        ctx.progress(inputs.progress, "waiting for the gate")
    if inputs.gate:
        # The gate is a file another process creates: this handler polls it as real work
        # polls an outside resource, and stays cancellable (a thread would not).
        async with asyncio.timeout(30):
            while not Path(inputs.gate).exists():  # noqa: ASYNC110, ASYNC240 - a cross-process file
                await asyncio.sleep(0.01)
    return {"worker": ctx.worker_id, "pid": os.getpid()}


# A handler that kills its own worker process every time: a crash loop.
suicide = Worker("suicide", version="1.0.0")  # the catalogue gives it delivery_limit 1


@suicide.handler
async def suicide_handler(ctx: JobContext, inputs: dict[str, Any]) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


# A runaway: a child process that spins and never looks at ctx.cancelled.
limited = Worker("limited", version="1.0.0", cancel_grace=0.3)


@limited.handler(isolation="process")
def limited_handler(ctx: JobContext, inputs: dict[str, Any]) -> None:
    if inputs.get("quick"):
        return
    if inputs.get("pidfile"):
        Path(inputs["pidfile"]).write_text(str(os.getpid()))
    while True:
        pass


# A process handler that allocates what it is asked to (the catalogue gives it a memory limit).
hungry = Worker("hungry", version="1.0.0")


@hungry.handler(isolation="process")
def hungry_handler(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, int]:
    block = bytearray(int(inputs.get("bytes", 0)))
    return {"bytes": len(block), "pid": os.getpid()}


# A process handler for an autoscaled worker (quick to look at its backlog and to shrink).
elastic = Worker(
    "elastic",
    version="1.0.0",
    heartbeat_interval=0.2,
    autoscale_interval=0.1,
    autoscale_idle=1.0,
)


@elastic.handler(isolation="process")
def elastic_handler(ctx: JobContext, inputs: GateInputs) -> dict[str, Any]:
    if inputs.gate:
        _wait_for(inputs.gate, timeout=50)
    return {"pid": os.getpid()}


# The chaos test's worker: a little work, a checkable result.
chaos = Worker(
    "chaos", version="1.0.0", heartbeat_interval=1.0, shutdown_grace=5, reconnect_after=2.0
)


@chaos.handler
async def chaos_handler(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, int]:
    await asyncio.sleep(float(inputs.get("work", 0.01)))  # the job's work
    return {"n": int(inputs["n"]) * 2}


# Fails with Retry until its attempt reaches succeed_on.
flaky = Worker("flaky", version="1.0.0")


@flaky.handler
async def flaky_handler(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, int]:
    if ctx.attempt < int(inputs["succeed_on"]):
        raise Retry(f"not yet (attempt {ctx.attempt})", delay=0.5)
    return {"attempt": ctx.attempt}


# A worker ported from the old SDK: downloads, reports progress, stores annotations.
legacyann = Worker("legacyann", version="1.0.0")


@legacyann.handler(isolation="thread")
def legacy_annotator(ctx: JobContext, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    from worker_sdk.legacy import LegacyRequest

    request = LegacyRequest(ctx)
    text = request.document().decode()
    request.set_progress(50)
    old = request.message
    assert old["service"]["type"] == "legacyann"
    assert old["service"]["document"]["url"] == request.document_url
    assert old["annotation_service"]["url"] == request.annotation_service_url
    assert old["request_time"]
    annotations = [{"@id": "legacyann", "@version": "1.0.0", "words": len(text.split())}]
    request.store_annotations(annotations)
    return annotations


# The slow service's handler in a worker announcing another version than the catalogue's.
drifted = Worker("slow", version="0.9.0")


@drifted.handler
async def drifted_handler(ctx: JobContext, inputs: GateInputs) -> dict[str, Any]:
    return await slow_handler(ctx, inputs)


# Counts how often its handler ran to completion, per job: a job must complete once.
completions: Counter[str] = Counter()
counted = Worker("counted", version="1.0.0", heartbeat_interval=1.0, shutdown_grace=5)


@counted.handler
async def counted_handler(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, Any]:
    completions[str(ctx.job_id)] += 1
    return {"n": inputs.get("n")}


# Returns the value it is given (a result as large, deep or strange as a test needs).
bigresult_calls: Counter[str] = Counter()
bigresult = Worker("bigresult", version="1.0.0")


@bigresult.handler
async def bigresult_handler(ctx: JobContext, inputs: dict[str, Any]) -> Any:
    bigresult_calls[str(ctx.job_id)] += 1
    if "size" in inputs:
        return {"blob": "x" * int(inputs["size"])}
    if inputs.get("nan"):
        return {"value": float("nan")}
    return inputs.get("value")


# The echo service for catalogues whose echo schema is not services.yaml's (so not the
# generated model's): the same behaviour on plain dict inputs.
echo_any = Worker("echo", version="1.0.0")


@echo_any.handler
async def echo_any_handler(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, Any]:
    from worker_sdk import HandlerError

    if inputs.get("delay"):
        ctx.progress(0, "waiting")
        await asyncio.sleep(float(inputs["delay"]))  # the job's work
    if inputs.get("fail") is not None:
        raise HandlerError(str(inputs["fail"]), code="echo_failure")
    return {k: v for k, v in inputs.items() if k not in {"delay", "fail"}}


# Handlers that never stop when asked: a thread (which nothing can stop) and an async handler
# that swallows every cancellation. Each writes its ``started`` file, then runs for ever.
stuck_thread = Worker("spin", version="1.0.0", cancel_grace=0.2, shutdown_grace=0.2)


@stuck_thread.handler(isolation="thread")
def stuck_thread_handler(ctx: JobContext, inputs: dict[str, Any]) -> None:
    Path(inputs["started"]).touch()
    while True:
        time.sleep(0.05)


stuck_task = Worker("spin", version="1.0.0", cancel_grace=0.2, shutdown_grace=0.2)


@stuck_task.handler
async def stuck_task_handler(ctx: JobContext, inputs: dict[str, Any]) -> None:
    Path(inputs["started"]).touch()  # noqa: ASYNC240 - a file the test process waits for
    while True:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.05)


# ``slow``'s gate, counting the runs that entered the handler, per job.
entered: Counter[str] = Counter()
gated = Worker("slow", version="1.0.0", shutdown_grace=30)


@gated.handler
async def gated_handler(ctx: JobContext, inputs: GateInputs) -> dict[str, Any]:
    entered[str(ctx.job_id)] += 1
    async with asyncio.timeout(30):
        while inputs.gate and not Path(inputs.gate).exists():  # noqa: ASYNC110, ASYNC240 - a cross-process file
            await asyncio.sleep(0.01)
    return {"entered": entered[str(ctx.job_id)]}
