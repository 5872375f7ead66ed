"""``echo``: returns its inputs, optionally after a delay — the no-op job of tests and benchmarks.

Run: ``sgw worker examples.echo:worker --concurrency 16``
"""

from __future__ import annotations

import asyncio
from typing import Any

from examples.models import EchoInputs  # generated from services.yaml by `sgw models`
from worker_sdk import HandlerError, JobContext, Worker

worker = Worker("echo", version="1.0.0")


@worker.handler
async def echo(ctx: JobContext, inputs: EchoInputs) -> dict[str, Any]:
    if inputs.delay:
        ctx.progress(0, "waiting")
        await asyncio.sleep(inputs.delay)
    if inputs.fail is not None:
        raise HandlerError(inputs.fail, code="echo_failure")
    return inputs.model_dump(exclude={"delay", "fail"})
