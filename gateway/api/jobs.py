"""Jobs: the caller's list, status and results."""

from __future__ import annotations

import asyncio
import re
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
from gateway.runtime import JobsDep, Presenter, PresenterDep, PrincipalDep
from gateway.store import JobRecord, JobStatus

router = APIRouter(tags=["jobs"])

_EVENT_ID = re.compile(r"[0-9]{1,18}", re.ASCII)


@router.get(
    "/jobs",
    response_model=JobList,
    summary="List your jobs",
    responses=responses(Unauthorized, StoreUnavailable),
)
async def list_jobs(
    jobs: JobsDep,
    principal: PrincipalDep,
    present: PresenterDep,
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
    base = present.base
    links = []
    if len(records) == limit:
        query = f"limit={limit}&offset={offset + limit}"
        if process_id:
            query += f"&processID={process_id}"
        for s in status or ():
            query += f"&status={s}"
        links.append(Link(href=f"{base}/jobs?{query}", rel="next", type="application/json"))
    body = JobList(jobs=[present(r) for r in records], links=links)
    return Response(body.model_dump_json(exclude_none=True), media_type="application/json")


@router.get(
    "/jobs/{job_id}",
    response_model=StatusInfo,
    summary="Job status",
    response_model_exclude_none=True,
    responses=responses(Unauthorized, UnknownJob, StoreUnavailable),
)
async def job_status(
    job_id: UUID, jobs: JobsDep, principal: PrincipalDep, present: PresenterDep
) -> Response:
    """Status, progress and timestamps of one of the caller's jobs."""
    return present(await jobs.get(job_id, principal)).response()


@router.delete(
    "/jobs/{job_id}",
    response_model=StatusInfo,
    summary="Dismiss a job",
    response_model_exclude_none=True,
    responses=responses(Unauthorized, UnknownJob, StoreUnavailable),
)
async def dismiss_job(
    job_id: UUID, jobs: JobsDep, principal: PrincipalDep, present: PresenterDep
) -> Response:
    """Cancel a queued or running job, or purge a finished job's result.

    A queued or running job ends ``dismissed`` (reason ``cancelled``) at once and its workers
    are told to stop: cooperatively first, then, past their grace, by killing that job's
    process. A finished job keeps its status and loses its result (``GET .../results`` then
    answers 410). Repeating the call is harmless.
    """
    return present(await jobs.dismiss(job_id, principal)).response()


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


def _event(record: JobRecord, present: Presenter) -> ServerSentEvent:
    # The id is the job's change counter, assigned by the store: it rises with every change
    # whatever the workers' clocks say, so a client resumes after the last one it saw.
    return ServerSentEvent(
        event="status",
        id=str(record.seq),
        raw_data=present(record).model_dump_json(exclude_none=True),
    )


def _last_seen(last_event_id: str | None) -> int:
    """The ``Last-Event-ID`` a client resumes from: a change counter, else from the start."""
    if last_event_id is None or not _EVENT_ID.fullmatch(last_event_id):
        return 0
    return int(last_event_id)


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
    present: PresenterDep,
    _: Annotated[JobRecord, Depends(_owned_job)],
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> AsyncIterator[ServerSentEvent]:
    """A `status` event with the job's statusInfo now and at every change (progress included);
    the stream ends after the terminal state, or when the caller's token expires. Reconnect
    with `Last-Event-ID` to resume after the last event received."""
    seen = _last_seen(last_event_id)
    async with jobs.changes(job_id, principal) as (current, changes):
        record = current
        while True:
            if record.seq > seen:
                seen = record.seq
                yield _event(record, present)
            if record.status.terminal:
                return
            remaining = principal.remaining()
            if remaining is not None and remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    record = await changes.get()
            except TimeoutError:
                return  # the token expired: the client reconnects with a fresh one
