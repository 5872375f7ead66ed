"""Dead letters: tasks the broker gave up on (expired, past their delivery limit) or a worker
refused, each of which ends its job with the reason, and barriers, which pass all the same."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from gateway.store import ACTIVE, JobRecord, JobStatus, JobStore, Reason
from worker_sdk.wire import REFUSED_HEADER, ErrorInfo, Task, parse_task
from worker_sdk.wire.catalogue import Catalogue


class NoJob(ValueError):
    """A dead letter that names no job."""


def dead_job(message: AbstractIncomingMessage) -> tuple[uuid.UUID, str | None, str]:
    """The job a dead-lettered task belongs to, its service, and why it died: the job from the
    body when it parses, else from the ``correlation_id`` (a task too deep or too new to parse
    still ends its job); the reason a worker gave, else the broker's."""
    refused = message.headers.get(REFUSED_HEADER)
    death = str(refused) if refused else str(message.headers.get("x-first-death-reason", "") or "")
    try:
        task = parse_task(message.body)
    except (ValueError, ValidationError):
        task = None
    if isinstance(task, Task):
        return task.job_id, task.service, death
    try:
        return uuid.UUID(message.correlation_id or ""), message.routing_key, death
    except ValueError as exc:
        raise NoJob("a dead letter that names no job") from exc


async def finish_dead(
    store: JobStore, catalogue: Catalogue, job_id: uuid.UUID, service: str | None, death: str
) -> JobRecord | None:
    """End a job whose task the broker or a worker gave up on, by the death's reason:
    ``expired`` (no worker took it in time), ``delivery_limit`` (its workers kept dying) or
    a refusal (a worker could not use it)."""
    now = datetime.now(UTC)
    expires_at = now + catalogue.retention(service or "")
    if death == "expired":
        record = await store.finish(
            job_id,
            status=JobStatus.DISMISSED,
            at=now,
            reason=Reason.EXPIRED,
            expires_at=expires_at,
            only_from={JobStatus.ACCEPTED},
        )
        if record is not None:
            return record
        error = ErrorInfo(
            code=Reason.WORKER_LOST,
            type="Expired",
            message="the job's worker was lost and no other worker took it before it expired",
        )
        reason = Reason.WORKER_LOST
    elif death == "delivery_limit":
        spec = catalogue.get(service or "")
        deliveries = f"{spec.delivery_limit + 1} times" if spec else "repeatedly"
        error = ErrorInfo(
            code=Reason.WORKER_LOST,
            type="DeliveryLimit",
            message=f"the task was handed to workers {deliveries} and never finished: "
            "its worker died or gave it back each time",
        )
        reason = Reason.WORKER_LOST
    else:
        error = ErrorInfo(
            code=Reason.INVALID_TASK,
            type="Rejected",
            message=f"a worker refused the task: {death or 'no reason given'}",
        )
        reason = Reason.INVALID_TASK
    return await store.finish(
        job_id,
        status=JobStatus.FAILED,
        at=now,
        reason=reason,
        error=error,
        expires_at=expires_at,
        only_from=ACTIVE,
    )
