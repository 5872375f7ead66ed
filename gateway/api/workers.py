"""Workers: the live ones, from their heartbeats (``GET /workers``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from gateway.api.head import get_and_head
from gateway.auth import Principal
from gateway.errors import StoreUnavailable, Unauthorized, UnknownProcess, responses
from gateway.runtime import PrincipalDep, RuntimeDep
from gateway.store import WorkerState

router = APIRouter(tags=["workers"])


class WorkerStatus(BaseModel):
    """One live worker, as its newest heartbeat describes it."""

    id: str = Field(description="Unique per worker process and connection.")
    service: str = Field(description="The process (service id) it serves.")
    host: str
    version: str = Field(description="The worker's version (the catalogue's, if it matches).")
    concurrency: int = Field(description="Jobs it runs at once at most.")
    busy: int = Field(description="How many jobs it runs now, whoever submitted them.")
    running: list[UUID] = Field(
        description="The jobs it runs now that the caller may see: an admin sees them all, "
        "anyone else only their own."
    )
    lastSeen: datetime = Field(description="When its newest heartbeat was applied.")
    upSince: datetime = Field(description="When its first heartbeat was applied.")

    @classmethod
    def of(cls, worker: WorkerState, seen: Callable[[UUID], bool]) -> WorkerStatus:
        return cls(
            id=worker.id,
            service=worker.service,
            host=worker.host,
            version=worker.version,
            concurrency=worker.concurrency,
            busy=len(worker.running),
            running=[job for job in worker.running if seen(job)],
            lastSeen=worker.seen,
            upSince=worker.since,
        )


class WorkerList(BaseModel):
    """The live workers: heard from within ``SG_HEARTBEAT_SILENCE`` seconds and not gone."""

    workers: list[WorkerStatus]


ProcessQuery = Annotated[
    str | None,
    Query(alias="processID", max_length=64, description="Only the workers of this process."),
]
ProcessId = Annotated[
    str, Path(alias="processID", description="The service id from the catalogue.", max_length=64)
]
_ERRORS = responses(Unauthorized, UnknownProcess, StoreUnavailable)


@get_and_head(
    router,
    "/workers",
    response_model=WorkerList,
    summary="Live workers",
    operation_id="getWorkers",
    responses=_ERRORS,
)
async def list_workers(
    runtime: RuntimeDep, principal: PrincipalDep, process_id: ProcessQuery = None
) -> WorkerList:
    """Every live worker (of one process with ``processID``), by process then id: a worker
    that stopped cleanly leaves at once (its goodbye heartbeat); one that fell silent, after
    ``SG_HEARTBEAT_SILENCE`` seconds. Each names the running jobs the caller may see and
    counts them all."""
    return await _workers(runtime, principal, process_id)


@get_and_head(
    router,
    "/processes/{processID}/workers",
    response_model=WorkerList,
    summary="Live workers of a process",
    operation_id="getProcessWorkers",
    responses=_ERRORS,
)
async def process_workers(
    process_id: ProcessId, runtime: RuntimeDep, principal: PrincipalDep
) -> WorkerList:
    """The process's live workers (as ``GET /workers?processID=``)."""
    return await _workers(runtime, principal, process_id)


async def _workers(runtime: RuntimeDep, principal: Principal, process_id: str | None) -> WorkerList:
    if process_id is not None and runtime.catalogue.get(process_id) is None:
        raise UnknownProcess(f"no process {process_id!r}")
    live = await runtime.fleet.live(process_id)
    seen = await runtime.fleet.visible(principal, live)
    return WorkerList(workers=[WorkerStatus.of(w, seen) for w in live])
