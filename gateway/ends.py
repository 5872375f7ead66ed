"""A run's end in the store: its update (:func:`record_end`), and the jobs whose end this
process applied lately, so that a second copy of an end is skipped (:class:`RecentEnds`).

A waited job's end reaches the gateway process that waits for it twice, a few milliseconds
apart: on the shared events queue and on the process's tap. Terminal states are final, so
the copy that comes second would change nothing; it is skipped without touching the store,
and one that comes while the first is being applied waits for it (and applies itself only if
the first failed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import pydantic_core

from gateway.store import JobRecord, JobStatus, JobStore, Reason, StoreRejected, WorkerInfo
from gateway.store.model import RUN_REASONS
from worker_sdk.wire import Cancelled, ErrorInfo, Failed, Succeeded, TerminalEvent, check_value

log = logging.getLogger("gateway.events")

# How many ends are remembered; the oldest is forgotten first. The two copies of an end come
# milliseconds apart: a forgotten one costs only the store's no-op update.
RECENT_ENDS = 4096


class RecentEnds:
    """Job ids whose end this process applied and announced to its waiters and streams."""

    def __init__(self, size: int = RECENT_ENDS) -> None:
        self._size = size
        self._ended: dict[UUID, None] = {}  # oldest first
        self._ending: dict[UUID, asyncio.Future[None]] = {}  # being applied here

    def __contains__(self, job_id: UUID) -> bool:
        return job_id in self._ended

    def add(self, job_id: UUID) -> None:
        """``job_id`` has ended, and this process's waiters were told."""
        while len(self._ended) >= self._size:
            del self._ended[next(iter(self._ended))]
        self._ended[job_id] = None

    async def once(
        self, job_id: UUID, apply: Callable[[], Awaitable[JobRecord | None]]
    ) -> JobRecord | None:
        """``apply()`` (which calls :meth:`add` once the job has ended), unless the job's end
        was applied here: then ``None``, as for an end that changed nothing."""
        while (earlier := self._ending.get(job_id)) is not None:
            await asyncio.wait([earlier])
        if job_id in self._ended:
            return None
        ending = asyncio.get_running_loop().create_future()
        self._ending[job_id] = ending
        try:
            return await apply()
        finally:
            del self._ending[job_id]
            ending.set_result(None)


def failure_reason(error: ErrorInfo) -> str:
    """The job's ``reason`` for a worker-reported error code: the code itself when it names
    one of a run's failures, else ``handler_error``."""
    return error.code if error.code in RUN_REASONS else Reason.HANDLER_ERROR.value


async def record_end(
    store: JobStore,
    event: TerminalEvent,
    *,
    at: datetime,
    expires_at: datetime,
    now: datetime,
    max_result_depth: int,
    max_result_bytes: int | None = None,
) -> JobRecord | None:
    """The store's update for a run's end: the updated record, ``None`` when it changed nothing.

    A result past ``max_result_bytes`` as JSON (the service's, which the worker's SDK checks
    first: a worker of another make, or of a version that does not) fails its job
    ``result_too_large``, as the SDK would have; one the gateway cannot keep (too deep, not
    finite) fails it ``invalid_result``.

    An end whose values the store refuses (a result past MongoDB's 16 MiB document, say) still
    ends its job, without them: a success fails ``invalid_result``, a failure keeps its reason
    with the gateway's error in place of the worker's, a cancel dismisses it. Its task is gone
    once the worker's end is confirmed, so a job left running would have nothing left to end
    it. Only a refusal of that too is the caller's (:class:`~gateway.store.StoreRejected`).
    """
    try:
        return await _finish(store, event, at, expires_at, now, max_result_depth, max_result_bytes)
    except StoreRejected as exc:
        refused = exc
    log.warning("job %s: the store refused its %s (%s)", event.job_id, event.kind, refused)
    status, reason = JobStatus.FAILED, Reason.INVALID_RESULT.value
    if isinstance(event, Failed):
        reason = failure_reason(event.error)
    elif isinstance(event, Cancelled):
        status, reason = JobStatus.DISMISSED, Reason.CANCELLED.value
    error = ErrorInfo(
        code=reason,
        type="StoreRejected",
        message=f"the store refused the run's {event.kind} event: {refused}",
    )
    return await store.finish(
        event.job_id,
        status=status,
        at=at,
        reason=reason,
        error=None if status is JobStatus.DISMISSED else error,
        expires_at=expires_at,
        attempt=event.attempt,
    )


async def _finish(
    store: JobStore,
    event: TerminalEvent,
    at: datetime,
    expires_at: datetime,
    now: datetime,
    max_result_depth: int,
    max_result_bytes: int | None,
) -> JobRecord | None:
    run = _run_fields(event, now)
    if isinstance(event, Cancelled):
        return await store.finish(
            event.job_id,
            status=JobStatus.DISMISSED,
            at=at,
            reason=Reason.CANCELLED,
            expires_at=expires_at,
            **run,
        )
    if isinstance(event, Failed):
        return await store.finish(
            event.job_id,
            status=JobStatus.FAILED,
            at=at,
            reason=failure_reason(event.error),
            error=event.error,
            expires_at=expires_at,
            **run,
        )
    assert isinstance(event, Succeeded)
    error = _result_problem(event.result, max_result_depth, max_result_bytes)
    if error is None:
        return await store.finish(
            event.job_id,
            status=JobStatus.SUCCESSFUL,
            at=at,
            result=event.result,
            expires_at=expires_at,
            **run,
        )
    log.warning("job %s: %s; failing it", event.job_id, error.message)
    return await store.finish(
        event.job_id,
        status=JobStatus.FAILED,
        at=at,
        reason=error.code,
        error=error,
        expires_at=expires_at,
        **run,
    )


def _result_problem(result: Any, max_depth: int, max_bytes: int | None) -> ErrorInfo | None:
    """Why a run's result cannot be kept, or None."""
    problems = check_value(result, root="/result", max_depth=max_depth)
    if problems:
        where = "; ".join(f"{p.path}: {p.message}" for p in problems[:3])
        return ErrorInfo(
            code=Reason.INVALID_RESULT,
            type="InvalidResult",
            message=f"the handler's result cannot be kept: {where}",
        )
    if max_bytes is not None and (size := len(pydantic_core.to_json(result))) > max_bytes:
        return ErrorInfo(
            code=Reason.RESULT_TOO_LARGE,
            type="ResultTooLarge",
            message=f"the result is {size} bytes as JSON; this service allows {max_bytes}",
        )
    return None


def _run_fields(event: TerminalEvent, now: datetime) -> dict[str, Any]:
    """The attempt, and the run's start when no ``started`` event announced it."""
    fields: dict[str, Any] = {"attempt": event.attempt}
    if event.start is not None:
        fields["started"] = min(event.start.started_at, now)
        fields["worker"] = WorkerInfo(
            id=event.worker_id, host=event.start.host, version=event.start.worker_version
        )
    return fields
