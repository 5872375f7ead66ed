"""Jobs: the caller's list, status and results."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from gateway.api.schemas import JobList, Link, StatusInfo
from gateway.errors import (
    JobDismissed,
    JobFailed,
    ResultNotReady,
    ResultPurged,
    StoreUnavailable,
    Unauthorized,
    UnknownJob,
    responses,
)
from gateway.runtime import BaseUrlDep, JobsDep, PrincipalDep
from gateway.store import JobRecord, JobStatus

router = APIRouter(tags=["jobs"])


@router.get(
    "/jobs",
    response_model=JobList,
    summary="List your jobs",
    responses=responses(Unauthorized, StoreUnavailable),
)
async def list_jobs(
    jobs: JobsDep,
    principal: PrincipalDep,
    base: BaseUrlDep,
    process_id: Annotated[
        str | None, Query(alias="processID", max_length=64, description="Only this process.")
    ] = None,
    status: Annotated[
        list[JobStatus] | None, Query(description="Only these statuses (repeatable).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Jobs to skip.")] = 0,
) -> Response:
    """The caller's jobs, newest first (an admin sees everyone's); ``next`` links page on."""
    records = await jobs.list(
        principal, service=process_id, statuses=status or (), limit=limit, offset=offset
    )
    links = []
    if len(records) == limit:
        query = f"limit={limit}&offset={offset + limit}"
        if process_id:
            query += f"&processID={process_id}"
        for s in status or ():
            query += f"&status={s}"
        links.append(Link(href=f"{base}/jobs?{query}", rel="next", type="application/json"))
    body = JobList(jobs=[jobs.status_info(r, base) for r in records], links=links)
    return Response(body.model_dump_json(exclude_none=True), media_type="application/json")


@router.get(
    "/jobs/{job_id}",
    response_model=StatusInfo,
    summary="Job status",
    response_model_exclude_none=True,
    responses=responses(Unauthorized, UnknownJob, StoreUnavailable),
)
async def job_status(
    job_id: UUID, jobs: JobsDep, principal: PrincipalDep, base: BaseUrlDep
) -> Response:
    """Status, progress and timestamps of one of the caller's jobs."""
    return jobs.status_info(await jobs.get(job_id, principal), base).response()


@router.delete(
    "/jobs/{job_id}",
    response_model=StatusInfo,
    summary="Dismiss a job",
    response_model_exclude_none=True,
    responses=responses(Unauthorized, UnknownJob, StoreUnavailable),
)
async def dismiss_job(
    job_id: UUID, jobs: JobsDep, principal: PrincipalDep, base: BaseUrlDep
) -> Response:
    """Cancel a queued or running job, or purge a finished job's result.

    A queued or running job ends ``dismissed`` (reason ``cancelled``) at once and its workers
    are told to stop: cooperatively first, then, past their grace, by killing that job's
    process. A finished job keeps its status and loses its result (``GET .../results`` then
    answers 410). Repeating the call is harmless.
    """
    return jobs.status_info(await jobs.dismiss(job_id, principal), base).response()


@router.get(
    "/jobs/{job_id}/results",
    summary="Job results",
    responses={
        200: {"description": "The handler's JSON result."},
        **responses(
            Unauthorized,
            UnknownJob,
            ResultNotReady,
            JobDismissed,
            ResultPurged,
            JobFailed,
            StoreUnavailable,
        ),
    },
)
async def job_results(job_id: UUID, jobs: JobsDep, principal: PrincipalDep) -> Any:
    """The result of a successful job; 404 ``result-not-ready`` while it is queued or running,
    422 ``job-failed`` with the job's error when it failed."""
    job = await jobs.get(job_id, principal)
    if job.purged is not None:
        raise ResultPurged(f"job {job_id}'s result was purged at {job.purged.isoformat()}")
    match job.status:
        case JobStatus.SUCCESSFUL:
            return job.result
        case JobStatus.FAILED:
            raise JobFailed(
                f"job {job_id} failed ({job.reason}): "
                + (job.error.message if job.error else "no detail"),
                job_error=job.error,
            )
        case JobStatus.DISMISSED:
            raise JobDismissed(f"job {job_id} was dismissed ({job.reason}); it has no result")
        case _:
            raise ResultNotReady(f"job {job_id} is {job.status}; its result is not ready")


async def _owned_job(job_id: UUID, jobs: JobsDep, principal: PrincipalDep) -> JobRecord:
    """Ownership checked before a stream starts (errors inside a stream come too late)."""
    return await jobs.get(job_id, principal)


def _event(info: StatusInfo) -> ServerSentEvent:
    # The id rises with every change, so a client resumes after the last one it saw.
    return ServerSentEvent(
        event="status",
        id=str(int(info.updated.timestamp() * 1_000_000)),
        raw_data=info.model_dump_json(exclude_none=True),
    )


@router.get(
    "/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    summary="Follow a job (server-sent events)",
    responses=responses(Unauthorized, UnknownJob, StoreUnavailable),
)
async def job_events(
    job_id: UUID,
    jobs: JobsDep,
    principal: PrincipalDep,
    base: BaseUrlDep,
    _: Annotated[JobRecord, Depends(_owned_job)],
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> AsyncIterator[ServerSentEvent]:
    """A `status` event with the job's statusInfo now and at every change (progress included);
    the stream ends after the terminal state. Reconnect with `Last-Event-ID` to resume."""
    seen = int(last_event_id) if last_event_id and last_event_id.isdigit() else -1
    async with jobs.changes(job_id, principal) as (current, changes):
        record = current
        while True:
            info = jobs.status_info(record, base)
            event = _event(info)
            if event.id is not None and int(event.id) > seen:
                seen = int(event.id)
                yield event
            if record.status.terminal:
                return
            record = await changes.get()
