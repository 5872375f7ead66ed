"""``echo``: returns its inputs, optionally after a delay — the no-op job of tests and benchmarks.

Run: ``sgw worker examples.echo:worker --concurrency 16``
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from worker_sdk import HandlerError, JobContext, Worker


class EchoInputs(BaseModel):
    model_config = ConfigDict(extra="allow")

    delay: float = Field(default=0.0, ge=0, le=3600, description="Seconds to wait first.")
    fail: str | None = Field(default=None, description="Fail the job with this message.")


worker = Worker("echo", version="1.0.0")


@worker.handler
async def echo(ctx: JobContext, inputs: EchoInputs) -> dict[str, Any]:
    if inputs.delay:
        ctx.progress(0, "waiting")
        await asyncio.sleep(inputs.delay)
    if inputs.fail is not None:
        raise HandlerError(inputs.fail, code="echo_failure")
    return inputs.model_dump(exclude={"delay", "fail"})
