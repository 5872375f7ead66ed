"""Jobs: status and results."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Response

from gateway.api.schemas import StatusInfo
from gateway.errors import (
    JobDismissed,
    JobFailed,
    ResultNotReady,
    StoreUnavailable,
    UnknownJob,
    responses,
)
from gateway.runtime import BaseUrlDep, JobsDep
from gateway.store import JobStatus

router = APIRouter(tags=["jobs"])


@router.get(
    "/jobs/{job_id}",
    response_model=StatusInfo,
    summary="Job status",
    response_model_exclude_none=True,
    responses=responses(UnknownJob, StoreUnavailable),
)
async def job_status(job_id: UUID, jobs: JobsDep, base: BaseUrlDep) -> Response:
    """Status, progress and timestamps of one job."""
    return StatusInfo.of(await jobs.get(job_id), base).response()


@router.get(
    "/jobs/{job_id}/results",
    summary="Job results",
    responses={
        200: {"description": "The handler's JSON result."},
        **responses(UnknownJob, ResultNotReady, JobDismissed, JobFailed, StoreUnavailable),
    },
)
async def job_results(job_id: UUID, jobs: JobsDep) -> Any:
    """The result of a successful job; 404 ``result-not-ready`` while it is queued or running,
    422 ``job-failed`` with the job's error when it failed."""
    job = await jobs.get(job_id)
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
