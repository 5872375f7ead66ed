"""Apply workers' events and dead-lettered tasks to the store (DESIGN §2 rule 4).

Every application is idempotent: the store's conditional updates make terminal states sticky
and progress monotonic within a run, so a duplicate, late or reordered event is a no-op. An
event for an unknown or finished job is logged and acked, never retried.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from gateway.catalogue import Catalogue
from gateway.metrics import Metrics
from gateway.store import ACTIVE, JobRecord, JobStatus, JobStore, Reason, StoreError, WorkerInfo
from gateway.watch import JobWatch
from worker_sdk import (
    Cancelled,
    ErrorInfo,
    Event,
    Failed,
    Heartbeat,
    Progress,
    Retrying,
    Started,
    Succeeded,
    Task,
    TerminalEvent,
    parse_event,
    settle,
)

log = logging.getLogger("gateway.events")

_REASONS = frozenset(r.value for r in Reason)
STORE_RETRY_DELAY = 1.0


def failure_reason(error: ErrorInfo) -> str:
    """The job's ``reason`` for a worker-reported error code."""
    return error.code if error.code in _REASONS else Reason.HANDLER_ERROR.value


def version_mismatch(catalogue: Catalogue, service: str, version: str | None) -> str | None:
    """The old gateway's code 204 message when a worker's version is not the catalogue's."""
    spec = catalogue.get(service)
    if spec is None or version is None or version == spec.version:
        return None
    return (
        f"Service {service} declares the version {spec.version} in its config file but "
        f"messages received from its worker contain the version {version}."
    )


def _run_fields(event: TerminalEvent) -> dict[str, Any]:
    """The attempt, and the run's start when no ``started`` event announced it."""
    fields: dict[str, Any] = {"attempt": event.attempt}
    if event.start is not None:
        fields["started"] = event.start.started_at
        fields["worker"] = WorkerInfo(
            id=event.worker_id, host=event.start.host, version=event.start.worker_version
        )
    return fields


class EventApplier:
    """Turns events into store updates and tells the watch about every change."""

    def __init__(
        self,
        store: JobStore,
        watch: JobWatch,
        *,
        catalogue: Catalogue,
        stop_run: Callable[[uuid.UUID], Awaitable[None]] | None = None,
        reject_other_versions: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._store = store
        self._watch = watch
        self._catalogue = catalogue
        self._stop_run = stop_run
        self._reject_other_versions = reject_other_versions

    async def apply(self, event: Event) -> JobRecord | None:
        """Apply one event; the updated record, or ``None`` when it changed nothing."""
        record: JobRecord | None
        match event:
            case Started():
                worker = WorkerInfo(
                    id=event.worker_id, host=event.host, version=event.worker_version
                )
                record = await self._store.start(
                    event.job_id,
                    attempt=event.attempt,
                    run_id=event.run_id,
                    worker=worker,
                    at=event.emitted_at,
                )
                mismatch = version_mismatch(self._catalogue, event.service, event.worker_version)
                if mismatch and self._metrics is not None:
                    self._metrics.version_mismatch.labels(event.service, event.worker_version).inc()
                if record is None:
                    await self._stop_if_dismissed(event.job_id)
                elif mismatch and self._reject_other_versions:
                    record = await self._reject_version(event) or record
            case Progress():
                record = await self._store.progress(
                    event.job_id,
                    run_id=event.run_id,
                    seq=event.seq,
                    percent=event.percent,
                    message=event.message,
                    at=event.emitted_at,
                )
            case Retrying():
                record = await self._store.retrying(
                    event.job_id,
                    attempt=event.attempt,
                    message=f"attempt {event.attempt} in {event.delay:g}s: {event.error.message}",
                    at=event.emitted_at,
                )
            case Succeeded():
                record = await self._store.finish(
                    event.job_id,
                    status=JobStatus.SUCCESSFUL,
                    at=event.emitted_at,
                    result=event.result,
                    expires_at=event.emitted_at + self._catalogue.retention(event.service),
                    **_run_fields(event),
                )
            case Failed():
                record = await self._store.finish(
                    event.job_id,
                    status=JobStatus.FAILED,
                    at=event.emitted_at,
                    reason=failure_reason(event.error),
                    error=event.error,
                    expires_at=event.emitted_at + self._catalogue.retention(event.service),
                    **_run_fields(event),
                )
            case Cancelled():
                record = await self._store.finish(
                    event.job_id,
                    status=JobStatus.DISMISSED,
                    at=event.emitted_at,
                    reason=Reason.CANCELLED,
                    expires_at=event.emitted_at + self._catalogue.retention(event.service),
                    **_run_fields(event),
                )
            case Heartbeat():
                worker = WorkerInfo(id=event.worker_id, host=event.host, version=event.version)
                await self._store.heartbeat(worker, service=event.service, at=event.emitted_at)
                return None
        if record is None:
            log.debug("event %s for job %s changed nothing", event.kind, event.job_id)
            return None
        self._watch.notify(record)
        self._observe(record)
        return record

    def _observe(self, record: JobRecord) -> None:
        if self._metrics is None:
            return
        if record.status.terminal:
            self._metrics.ended(record)
        elif record.status is JobStatus.RUNNING and record.progress_seq == 0:
            self._metrics.started(record)

    async def _reject_version(self, event: Started) -> JobRecord | None:
        message = version_mismatch(self._catalogue, event.service, event.worker_version)
        assert message is not None
        log.warning("job %s: %s; failing it", event.job_id, message)
        error = ErrorInfo(code="204", type="VersionMismatchError", message=message)
        record = await self._store.finish(
            event.job_id,
            status=JobStatus.FAILED,
            at=event.emitted_at,
            reason=Reason.VERSION_MISMATCH,
            error=error,
            expires_at=event.emitted_at + self._catalogue.retention(event.service),
        )
        if self._stop_run is not None:
            await self._stop_run(event.job_id)
        return record

    async def _stop_if_dismissed(self, job_id: uuid.UUID) -> None:
        """A run started for a job already dismissed (its worker missed the broadcast)."""
        record = await self._store.get(job_id)
        if record is not None and record.status is JobStatus.DISMISSED and self._stop_run:
            log.info("job %s is dismissed but a worker started it; telling it to stop", job_id)
            await self._stop_run(job_id)

    async def on_event(self, message: AbstractIncomingMessage) -> None:
        """Consumer of ``{ns}.events``: apply, then ack; requeue only when the store fails."""
        try:
            event = parse_event(message.body)
        except ValidationError as exc:
            log.warning("dropping an unreadable event %s: %s", message.message_id, exc)
            await settle(message, "ack")
            return
        try:
            await self.apply(event)
        except StoreError:
            log.exception("store failed applying %s; the event goes back to the queue", event.kind)
            await asyncio.sleep(STORE_RETRY_DELAY)  # back off before the broker redelivers
            await settle(message, "requeue")
            return
        await settle(message, "ack")

    async def on_watched_event(self, message: AbstractIncomingMessage) -> None:
        """Consumer of this process's private copy of terminal events (no-ack).

        When a local request waits on the job, apply the event here (idempotently) so the
        waiter is answered whichever gateway replica applies the shared copy. Events nobody
        here waits on are skipped on their ``correlation_id`` without parsing the body.
        """
        try:
            if not self._watch.interested(uuid.UUID(message.correlation_id or "")):
                return
            event = parse_event(message.body)
        except (ValueError, ValidationError):
            return
        if isinstance(event, Heartbeat):
            return
        try:
            if await self.apply(event) is None:
                record = await self._store.get(event.job_id)
                if record is not None:
                    self._watch.notify(record)
        except StoreError:
            log.warning("store failed on a watched event for %s", event.job_id, exc_info=True)

    async def on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        """Consumer of ``{ns}.dead``: a task the broker gave up on ends the job."""
        death = str(message.headers.get("x-first-death-reason", ""))
        try:
            task = Task.model_validate_json(message.body)
        except ValidationError:
            log.error(  # noqa: TRY400 - a parse error's traceback says nothing more
                "dead-lettered message %s (%s) is not a task", message.message_id, death
            )
            await settle(message, "ack")
            return
        try:
            record = await self._finish_dead(task, death)
        except StoreError:
            log.exception("store failed on dead-lettered job %s", task.job_id)
            await asyncio.sleep(STORE_RETRY_DELAY)  # back off before the broker redelivers
            await settle(message, "requeue")
            return
        if record is not None:
            log.info("job %s ended %s/%s (%s)", task.job_id, record.status, record.reason, death)
            self._watch.notify(record)
            self._observe(record)
        await settle(message, "ack")

    async def _finish_dead(self, task: Task, death: str) -> JobRecord | None:
        now = datetime.now(UTC)
        expires_at = now + self._catalogue.retention(task.service)
        if death == "expired":
            record = await self._store.finish(
                task.job_id,
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
            return await self._store.finish(
                task.job_id,
                status=JobStatus.FAILED,
                at=now,
                reason=Reason.WORKER_LOST,
                error=error,
                expires_at=expires_at,
            )
        if death == "delivery_limit":
            spec = self._catalogue.get(task.service)
            deliveries = f"{spec.delivery_limit + 1} times" if spec else "repeatedly"
            error = ErrorInfo(
                code=Reason.WORKER_LOST,
                type="DeliveryLimit",
                message=f"the task was handed to workers {deliveries} and never finished: "
                "its worker died or gave it back each time",
            )
            return await self._store.finish(
                task.job_id,
                status=JobStatus.FAILED,
                at=now,
                reason=Reason.WORKER_LOST,
                error=error,
                expires_at=expires_at,
            )
        error = ErrorInfo(
            code=Reason.INVALID_TASK,
            type="Rejected",
            message=f"a worker refused the task ({death or 'unknown reason'})",
        )
        return await self._store.finish(
            task.job_id,
            status=JobStatus.FAILED,
            at=now,
            reason=Reason.INVALID_TASK,
            error=error,
            expires_at=expires_at,
            only_from=ACTIVE,
        )
