"""Capacity: each process's load and the workers it needs (``GET /capacity``, admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from gateway.api.head import get_and_head
from gateway.auth import Principal
from gateway.capacity import ServiceCapacity
from gateway.errors import Forbidden, StoreUnavailable, Unauthorized, UnknownProcess, responses
from gateway.runtime import PrincipalDep, RuntimeDep

router = APIRouter(tags=["workers"])


class QueueFigures(BaseModel):
    messages: int = Field(description="Tasks ready in the process's RabbitMQ queue.")
    consumers: int = Field(
        description="Consumers of the queue: one per worker, and one per unit of concurrency "
        "of an autoscaled worker."
    )


class Rates(BaseModel):
    """Jobs per second over the last 1, 5 and 15 minutes (a window longer than the
    process's record, its oldest job, is cut to the record)."""

    m1: float = Field(alias="1m")
    m5: float = Field(alias="5m")
    m15: float = Field(alias="15m")

    model_config = {"populate_by_name": True, "serialize_by_alias": True}

    @classmethod
    def of(cls, rates: tuple[float, ...]) -> Rates:
        return cls(m1=rates[0], m5=rates[1], m15=rates[2])


class Spread(BaseModel):
    mean: float | None = Field(description="Seconds; null before any run ended.")
    p95: float | None = Field(description="Seconds, nearest rank; null before any run ended.")


class ProcessCapacity(BaseModel):
    """One process's load and what it needs (docs/scaling.md gives the formulas)."""

    processID: str
    measuredAt: datetime
    queue: QueueFigures | None = Field(description="Null when RabbitMQ does not answer.")
    accepted: int = Field(description="Jobs waiting for a worker (store).")
    running: int = Field(description="Jobs running (store).")
    liveWorkers: int = Field(description="Workers heard from within SG_HEARTBEAT_SILENCE.")
    slots: int = Field(description="Jobs the live workers run at once: their concurrency.")
    arrivalRate: Rates = Field(description="Jobs created per second.")
    completionRate: Rates = Field(description="Runs ended per second.")
    sample: int = Field(description="Recent runs behind runTime and queueWait (at most 500).")
    runTime: Spread = Field(description="From start to end of the recent runs.")
    queueWait: Spread = Field(description="From creation to start of the recent runs.")
    utilisation: float | None = Field(
        description="5-minute arrival rate / (slots × μ), μ = 1 / mean run time: above 1 "
        "the queue grows. Null with no slot or no run time."
    )
    predictedWait: float | None = Field(
        description="Seconds a job submitted now should wait: 0 with a slot free, else "
        "(accepted + running − slots + 1) / (slots × μ). Null when unknown (no slot)."
    )
    steadyWait: float | None = Field(
        description="Erlang C mean wait (M/M/c) at the 5-minute arrival rate; null when "
        "the slots cannot keep up or no run time is known."
    )
    targetWait: float | None = Field(description="The catalogue's target_wait (seconds).")
    workersNeeded: int | None = Field(
        description="Fewest workers (of the live workers' mean concurrency) keeping both "
        "predictedWait and steadyWait within targetWait; null without a target or a run time."
    )

    @classmethod
    def of(cls, measured: ServiceCapacity) -> ProcessCapacity:
        queue = None
        if measured.queue_messages is not None and measured.queue_consumers is not None:
            queue = QueueFigures(
                messages=measured.queue_messages, consumers=measured.queue_consumers
            )
        return cls(
            processID=measured.service,
            measuredAt=measured.at,
            queue=queue,
            accepted=measured.accepted,
            running=measured.running,
            liveWorkers=measured.workers,
            slots=measured.slots,
            arrivalRate=Rates.of(measured.arrival_rates),
            completionRate=Rates.of(measured.completion_rates),
            sample=measured.sample,
            runTime=Spread(mean=measured.run_mean, p95=measured.run_p95),
            queueWait=Spread(mean=measured.wait_mean, p95=measured.wait_p95),
            utilisation=measured.utilisation,
            predictedWait=measured.predicted_wait,
            steadyWait=measured.steady_wait,
            targetWait=measured.target_wait,
            workersNeeded=measured.workers_needed,
        )


class CapacityReport(BaseModel):
    """Every process's capacity figures, in id order."""

    processes: list[ProcessCapacity]


ProcessId = Annotated[
    str, Path(alias="processID", description="The service id from the catalogue.", max_length=64)
]
_ERRORS = responses(Unauthorized, Forbidden, UnknownProcess, StoreUnavailable)


def _admin(principal: Principal) -> None:
    if not principal.admin:
        raise Forbidden("the capacity API needs the admin scope")


@get_and_head(
    router,
    "/capacity",
    response_model=CapacityReport,
    summary="Capacity of every process (admin)",
    operation_id="getCapacity",
    responses=_ERRORS,
)
async def capacity(runtime: RuntimeDep, principal: PrincipalDep) -> CapacityReport:
    """Per process, measured now from the store and RabbitMQ: queue depth and consumers,
    live workers, arrival and completion rates over 1/5/15 minutes, run time and queue wait,
    utilisation, the predicted wait of a job submitted now and the workers that keep it
    within the process's ``target_wait``."""
    _admin(principal)
    specs = sorted(runtime.catalogue, key=lambda s: s.id)
    return CapacityReport(
        processes=[ProcessCapacity.of(await runtime.capacity.measure(s)) for s in specs]
    )


@get_and_head(
    router,
    "/processes/{processID}/capacity",
    response_model=ProcessCapacity,
    summary="Capacity of a process (admin)",
    operation_id="getProcessCapacity",
    responses=_ERRORS,
)
async def process_capacity(
    process_id: ProcessId, runtime: RuntimeDep, principal: PrincipalDep
) -> ProcessCapacity:
    """The process's capacity figures (as in ``GET /capacity``)."""
    _admin(principal)
    spec = runtime.catalogue.get(process_id)
    if spec is None:
        raise UnknownProcess(f"no process {process_id!r}")
    return ProcessCapacity.of(await runtime.capacity.measure(spec))
