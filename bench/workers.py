"""The bench's own workers: process-isolated handlers whose cost is known.

Run by the bench as ``sgw worker bench.workers:noop`` and ``sgw worker bench.workers:cpu``
against the services of ``bench/services.yaml``.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from worker_sdk import JobContext, Worker


class NoInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CpuInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpu_ms: float = Field(default=100, ge=0, le=10_000, description="CPU time to burn, ms.")


noop = Worker("bench-noop-process", version="1.0.0")
cpu = Worker("bench-cpu", version="1.0.0")


@noop.handler(isolation="process")
def nothing(ctx: JobContext, inputs: NoInputs) -> dict[str, int]:
    """A process-isolated handler that does nothing: its run time is the isolation's cost."""
    return {}


@cpu.handler(isolation="process")
def burn(ctx: JobContext, inputs: CpuInputs) -> dict[str, float]:
    """Spend ``cpu_ms`` of this process's CPU time (not wall time: a busy machine stretches
    the run, not the work), then answer how long it took on the wall clock."""
    wall = time.perf_counter()
    start = time.process_time()
    budget = inputs.cpu_ms / 1000
    while time.process_time() - start < budget:
        sum(i * i for i in range(1000))
    return {"wall_ms": (time.perf_counter() - wall) * 1000}
