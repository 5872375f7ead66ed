"""Processes: the catalogue's services, and job submission (OGC API – Processes Part 1)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Path, Response

from gateway.api.schemas import (
    ExecuteRequest,
    Link,
    ProcessDescription,
    ProcessList,
    ProcessSummary,
    StatusInfo,
)
from gateway.errors import (
    BadRequest,
    BrokerUnavailable,
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    QueueFull,
    QuotaExceeded,
    RateLimited,
    StoreUnavailable,
    Unauthorized,
    UnknownProcess,
    responses,
)
from gateway.runtime import BaseUrlDep, JobsDep, PresenterDep, PrincipalDep, RuntimeDep

router = APIRouter(tags=["processes"])

ProcessId = Annotated[str, Path(description="The service id from the catalogue.", max_length=64)]
_WAIT = re.compile(r"(?:^|[\s,;])wait\s*=\s*(\d{1,6})(?:$|[\s,;])")


def _prefer_wait(prefer: str | None, limit: float) -> float | None:
    """Seconds asked for by ``Prefer: wait=N`` (capped), or None for asynchronous execution."""
    if not prefer or "respond-async" in prefer:
        return None
    match = _WAIT.search(prefer)
    if match is None:
        return None
    return min(float(match.group(1)), limit)


@router.get(
    "/processes",
    response_model=ProcessList,
    summary="List the processes",
    response_model_exclude_none=True,
)
async def list_processes(runtime: RuntimeDep, base: BaseUrlDep) -> ProcessList:
    """Every service of the catalogue."""
    return ProcessList(
        processes=[ProcessSummary.of(spec, base) for spec in runtime.catalogue],
        links=[Link(href=f"{base}/processes", rel="self", type="application/json")],
    )


@router.get(
    "/processes/{process_id}",
    response_model=ProcessDescription,
    summary="Describe a process",
    response_model_exclude_none=True,
    responses=responses(UnknownProcess),
)
async def describe_process(
    process_id: ProcessId, jobs: JobsDep, base: BaseUrlDep
) -> ProcessDescription:
    """The service with the JSON Schema its inputs must match."""
    return ProcessDescription.describe(jobs.service(process_id), base)


@router.post(
    "/processes/{process_id}/execution",
    response_model=StatusInfo,
    status_code=201,
    summary="Execute a process (create a job)",
    response_model_exclude_none=True,
    responses={
        200: {"model": StatusInfo, "description": "Finished within the Prefer: wait=N time."},
        **responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            IdempotencyConflict,
            UnknownProcess,
            InvalidInput,
            QueueFull,
            RateLimited,
            QuotaExceeded,
            BrokerUnavailable,
            StoreUnavailable,
        ),
    },
)
async def execute(
    process_id: ProcessId,
    body: ExecuteRequest,
    jobs: JobsDep,
    runtime: RuntimeDep,
    present: PresenterDep,
    principal: PrincipalDep,
    prefer: Annotated[
        str | None,
        Header(
            description="`respond-async` (the default) answers 201 at once; `wait=N` waits up "
            "to N seconds for the job to end and answers 200 if it did."
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Retry safely: the same key (per caller) answers with the first job "
            "(200, `Idempotent-Replayed: true`) and never queues twice; reused with another "
            "request body, 409.",
        ),
    ] = None,
) -> Response:
    """Validate the inputs, record the job and queue it; 201 with ``Location`` once queued.

    The job exists before its task: a task the broker does not confirm leaves the job
    ``failed``/``publish_failed`` and the answer is 503 (or 429 when the service's queue is
    full) — never 201 for a job that is not durably queued.
    """
    spec = jobs.service(process_id)
    if body.subscriber is not None:
        raise BadRequest("this gateway does not deliver callbacks: remove `subscriber`")
    wait = _prefer_wait(prefer, runtime.settings.max_wait)
    record, replayed = await jobs.submit(
        spec, body.inputs, principal=principal, wait=wait, idempotency_key=idempotency_key
    )
    headers = {"Location": f"{present.base}/jobs/{record.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    elif wait is not None:
        headers["Preference-Applied"] = f"wait={int(wait)}"
    status = 200 if record.status.terminal or replayed else 201
    return present(record).response(status_code=status, headers=headers)
