"""Submitting and reading jobs: persist first, publish second (DESIGN §2 rule 1).

The service returns job records and raises the gateway's domain errors; the HTTP layer
shapes responses. A store failure propagates as :class:`~gateway.store.StoreError`, which the
error handlers translate once (503 ``store-unavailable``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.auth import Principal
from gateway.broker import Broker, BrokerDown, PublishRefused
from gateway.changes import Changes
from gateway.errors import (
    BrokerUnavailable,
    IdempotencyConflict,
    JobGone,
    QueueFull,
    QuotaExceeded,
    RateLimited,
    StoreUnavailable,
    UnknownJob,
    UnknownProcess,
)
from gateway.inputs import InputChecker
from gateway.limits import SubmitLimiter
from gateway.recovery import Recovery, task_for
from gateway.store import (
    ACTIVE,
    Delivery,
    DuplicateJob,
    JobQuery,
    JobRecord,
    JobStatus,
    JobStore,
    LegacyFields,
    Reason,
    StoreError,
    WebhookDelivery,
    new_job_id,
)
from gateway.tally import Tally
from gateway.watch import Mailbox
from gateway.webhooks import Subscriptions, subscribed
from worker_sdk.wire import CancelRequest, ErrorInfo, Task
from worker_sdk.wire.catalogue import Catalogue, ServiceSpec

log = logging.getLogger("gateway.jobs")

RETRY_AFTER = "5"
SUBMISSIONS = "submissions:"  # usage counter per service, for the monitoring routes


def _fingerprint(
    service: str, inputs: dict[str, Any], subscriber: dict[str, str] | None = None
) -> str:
    request: list[Any] = [service, inputs]
    if subscriber:  # only then, so that earlier fingerprints stay what they were
        request.append(subscriber)
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


REPLAY_LOOK = 0.5  # seconds between a waiting replay's reads of its job


class JobService:
    """The collaborator behind the job routes: every call is made on behalf of a principal."""

    def __init__(
        self,
        *,
        store: JobStore,
        broker: Broker,
        catalogue: Catalogue,
        changes: Changes,
        inputs: InputChecker,
        limiter: SubmitLimiter,
        recovery: Recovery,
        subscriptions: Subscriptions,
        max_active_jobs: int | None,
        idempotency_window: float,
    ) -> None:
        self._idempotency_window = idempotency_window
        self._subscriptions = subscriptions
        self._inputs = inputs
        self._store = store
        self._broker = broker
        self._catalogue = catalogue
        self._changes = changes
        self._limiter = limiter
        self._recovery = recovery
        self._max_active = max_active_jobs
        self._tally = Tally(store)

    def service(self, service_id: str) -> ServiceSpec:
        spec = self._catalogue.get(service_id)
        if spec is None:
            raise UnknownProcess(f"no process {service_id!r}; GET /processes lists them")
        return spec

    async def admit(self, spec: ServiceSpec, principal: Principal) -> None:
        """Scopes, rate and quota: raise 403 or 429 before anything is recorded."""
        principal.require(spec.scopes)
        wait = self._limiter.take(principal.subject)
        if wait is not None:
            raise RateLimited(
                f"{principal.subject} submits faster than the allowed rate",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        if self._max_active is not None:
            active = await self._store.count_active(principal.subject)
            if active >= self._max_active:
                raise QuotaExceeded(
                    f"{principal.subject} has {active} jobs accepted or running, the most allowed",
                    headers={"Retry-After": RETRY_AFTER},
                )

    async def submit(
        self,
        spec: ServiceSpec,
        inputs: dict[str, Any],
        *,
        principal: Principal,
        wait: float | None = None,
        idempotency_key: str | None = None,
        legacy: LegacyFields | None = None,
        delivery: Delivery | None = None,
        subscriber: dict[str, str] | None = None,
    ) -> tuple[JobRecord, bool]:
        """Record the job, publish its task and (with ``wait``) wait for its end.

        Returns the record as it stands when the call ends (terminal if the job finished
        within ``wait`` seconds, ``accepted`` otherwise) and whether it is the replay of an
        earlier submission with the same ``idempotency_key``. A task the broker did not
        confirm leaves the job ``failed``/``publish_failed`` and raises a 429 or 503 error.
        A ``subscriber`` (OGC callback URIs) is part of the submission's fingerprint and, for
        a new job, checked by the webhooks' URL policy with the inputs.
        """
        subscriber = subscribed(subscriber) if subscriber else None
        fingerprint = (
            _fingerprint(spec.id, inputs, subscriber) if idempotency_key is not None else ""
        )
        if idempotency_key is not None:
            earlier = await self._earlier(principal.subject, idempotency_key, fingerprint)
            if earlier is not None:
                earlier = await self._ended_within(earlier, wait)
                if earlier.reason != Reason.PUBLISH_FAILED:
                    return earlier, True
                # Its first attempt was never queued, and its key is released: this one queues.
        if legacy is None:
            await self._inputs.check(spec, inputs)
        else:  # the old routes check their misc themselves (InputChecker.check_legacy)
            self._inputs.check_bounds(inputs, root="/misc")
        if subscriber is not None:
            await self._subscriptions.check(subscriber)
        await self.admit(spec, principal)
        now = datetime.now(UTC)
        record = JobRecord(
            # an old route's job may be read by its uuid alone: 122 random bits, not 74
            id=new_job_id() if legacy is None else uuid.uuid4(),
            service=spec.id,
            owner=principal.subject,
            inputs=inputs,
            created=now,
            updated=now,
            idempotency_key=idempotency_key,
            request_hash=fingerprint or None,
            legacy=legacy,
            delivery=delivery,
            subscriber=subscriber,
            webhook_open=subscriber is not None,
        )
        task = task_for(record, spec)
        counter = f"{SUBMISSIONS}{spec.id}"
        try:
            counted = await self._store.insert(record, counter=counter)
        except DuplicateJob:
            # A concurrent submission with the same key won the insert: answer with its job.
            assert idempotency_key is not None
            earlier = await self._earlier(principal.subject, idempotency_key, fingerprint)
            if earlier is None:
                raise StoreUnavailable("the job holding this idempotency key vanished") from None
            return await self._ended_within(earlier, wait), True
        # The usage counter need not precede the task: count while the broker confirms.
        counting = None if counted else self._tally.add(counter)
        try:
            if not wait:
                await self._publish(record, task, spec)
                return record, False
            async with self._changes.watch.waiting(record.id) as finished:
                await self._publish(record, task, spec)
                try:
                    async with asyncio.timeout(wait):
                        return await asyncio.shield(finished), False
                except TimeoutError:
                    return record, False
        finally:
            if counting is not None:
                await counting

    async def _ended_within(self, record: JobRecord, wait: float | None) -> JobRecord:
        """A replayed job as a first submission would be answered: once it ends, within
        ``wait`` seconds (as it stands then, if it does not). Its end may have been published
        before this process's tap was bound, and applied by another replica, which tells only
        its own waiters: the store is read again every :data:`REPLAY_LOOK` seconds."""
        if not wait or record.status.terminal:
            return record
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        async with self._changes.watch.waiting(record.id) as finished:
            record = await self._store.get(record.id) or record  # it may have ended since
            while not record.status.terminal and (left := deadline - loop.time()) > 0:
                try:
                    async with asyncio.timeout(min(left, REPLAY_LOOK)):
                        return await asyncio.shield(finished)
                except TimeoutError:
                    record = await self._store.get(record.id) or record
        return record

    async def _earlier(self, owner: str, key: str, fingerprint: str) -> JobRecord | None:
        """The job this key already names, if still within the window; 409 if the key was
        used for another request. A job whose task was never confirmed is handed to the
        recovery pass, which queues it unless the broker holds it already."""
        earlier = await self._store.find_by_key(owner, key)
        if earlier is None:
            return None
        if earlier.created < datetime.now(UTC) - timedelta(seconds=self._idempotency_window):
            await self._store.release_key(earlier.id)
            return None
        if earlier.request_hash != fingerprint:
            raise IdempotencyConflict(
                f"the Idempotency-Key {key!r} was used for another request (job {earlier.id})"
            )
        if earlier.status is JobStatus.ACCEPTED and earlier.queued is None:
            self._recovery.hurry(earlier.service)
        return earlier

    async def _publish(self, record: JobRecord, task: Task, spec: ServiceSpec) -> None:
        try:
            async with self._recovery.publishing(record.id):
                await self._broker.publish_task(task, spec)
        except PublishRefused as exc:
            await self._fail_unpublished(record, exc)
            if spec.max_queued is not None:
                raise QueueFull(
                    f"job {record.id} not queued: the {spec.id!r} queue holds its maximum of "
                    f"{spec.max_queued} jobs; retry later",
                    headers={"Retry-After": RETRY_AFTER},
                ) from exc
            raise BrokerUnavailable(
                f"job {record.id} not queued: the broker refused its task: {exc}",
                headers={"Retry-After": RETRY_AFTER},
            ) from exc
        except BrokerDown as exc:
            await self._fail_unpublished(record, exc)
            raise BrokerUnavailable(
                f"job {record.id} not queued: {exc}", headers={"Retry-After": RETRY_AFTER}
            ) from exc
        self._changes.metrics.submitted.labels(spec.id).inc()

    async def _fail_unpublished(self, record: JobRecord, exc: Exception) -> None:
        error = ErrorInfo(code=Reason.PUBLISH_FAILED, type=type(exc).__name__, message=str(exc))
        log.warning("job %s not queued: %s", record.id, exc)
        try:
            if record.idempotency_key is not None:
                await self._store.release_key(record.id)  # the client's retry may queue it
            now = datetime.now(UTC)
            failed = await self._store.finish(
                record.id,
                status=JobStatus.FAILED,
                at=now,
                reason=Reason.PUBLISH_FAILED,
                error=error,
                expires_at=self.expiry(record.service, now),
                only_from={JobStatus.ACCEPTED},
            )
        except StoreError:
            log.exception("job %s: could not record the failed publish", record.id)
            return
        if failed is not None:
            self._changes.made(failed)

    async def get(self, job_id: uuid.UUID, principal: Principal | None) -> JobRecord:
        """The job, if the principal owns it (or is an admin); another's job is 404 too.

        ``principal=None`` reads a job submitted on the old routes with no token (its uuid is
        the capability, as on the old gateway); any other job is then 404.
        """
        record = await self._store.get(job_id)
        if record is None:
            owner = await self._store.tombstone(job_id)
            if owner is not None and principal is not None and principal.sees(owner):
                raise JobGone(f"job {job_id} was purged when its retention period ended")
            raise UnknownJob(f"no job {job_id}")
        if principal is None:
            if record.legacy is None:
                raise UnknownJob(f"no job {job_id}")
        elif not principal.sees(record.owner):
            raise UnknownJob(f"no job {job_id}")
        return record

    async def webhooks(
        self, job_id: uuid.UUID, principal: Principal
    ) -> tuple[JobRecord, list[WebhookDelivery]]:
        """The job (if the principal sees it) and its webhook deliveries so far."""
        record = await self.get(job_id, principal)
        return record, await self._store.webhook_deliveries(job_id)

    @asynccontextmanager
    async def changes(
        self, job_id: uuid.UUID, principal: Principal
    ) -> AsyncIterator[tuple[JobRecord, Mailbox]]:
        """The job as it stands, and a queue of its later changes (owner only)."""
        await self.get(job_id, principal)  # ownership, before anything is watched
        async with self._changes.watch.subscribe(job_id) as queue:
            yield await self.get(job_id, principal), queue

    @asynccontextmanager
    async def following(
        self, job_ids: Sequence[uuid.UUID], principal: Principal
    ) -> AsyncIterator[tuple[list[JobRecord], Mailbox]]:
        """Those of ``job_ids`` the principal may see, as they stand, and one queue of their
        later changes (the dashboard's live lists); unknown and others' jobs are left out."""
        visible = []
        for job_id in dict.fromkeys(job_ids):
            try:
                visible.append((await self.get(job_id, principal)).id)
            except (UnknownJob, JobGone):
                continue
        async with self._changes.watch.subscribe(*visible) as queue:
            current = [await self._store.get(job_id) for job_id in visible]
            yield [record for record in current if record is not None], queue

    def expiry(self, service: str, at: datetime) -> datetime:
        """When a job of ``service`` finished at ``at`` is purged."""
        return at + self._catalogue.retention(service)

    async def cancel(self, job_id: uuid.UUID, principal: Principal) -> JobRecord:
        """Stop a queued or running job (see :meth:`dismiss`); a finished job is returned as
        it is, result included (the old routes' cancel)."""
        record = await self.get(job_id, principal)
        if record.status in ACTIVE:
            cancelled = await self._cancel_active(record)
            if cancelled is not None:
                return cancelled
            record = await self.get(job_id, principal)  # it finished meanwhile
        return record

    async def dismiss(self, job_id: uuid.UUID, principal: Principal) -> JobRecord:
        """Cancel a queued or running job (it ends ``dismissed``/``cancelled`` now, and its
        workers are told to stop), or purge a finished job's result. Repeating is harmless."""
        record = await self.get(job_id, principal)
        if record.status is JobStatus.DISMISSED:
            return record  # cancelled: no result to purge, and nothing to change
        if record.status in ACTIVE:
            cancelled = await self._cancel_active(record)
            if cancelled is not None:
                return cancelled
        purged = await self._store.purge(job_id, at=datetime.now(UTC))
        if purged is None:
            return await self.get(job_id, principal)
        self._changes.seen(purged)
        return purged

    async def _cancel_active(self, record: JobRecord) -> JobRecord | None:
        now = datetime.now(UTC)
        cancelled = await self._store.finish(
            record.id,
            status=JobStatus.DISMISSED,
            at=now,
            reason=Reason.CANCELLED,
            expires_at=self.expiry(record.service, now),
        )
        if cancelled is not None:
            self._changes.made(cancelled)
            await self.stop_workers(record.id)
        return cancelled

    async def stop_workers(self, job_id: uuid.UUID) -> None:
        """Broadcast a cancel; a worker that misses it is told again when it reports a start."""
        try:
            await self._broker.publish_control(CancelRequest(job_id=job_id))
        except BrokerDown:
            log.warning(
                "job %s: cancel not broadcast (broker down); workers learn of it "
                "when they report the run",
                job_id,
            )

    async def page(
        self, principal: Principal, query: JobQuery, *, owner: str | None = None
    ) -> list[JobRecord]:
        """A page of the principal's jobs, newest first. An admin sees every job, or only
        ``owner``'s when it is given; anyone else sees their own whatever ``owner`` says."""
        shown = owner if principal.admin else principal.subject
        return await self._store.page_jobs(replace(query, owner=shown))

    async def recent(
        self, principal: Principal, since: datetime, *, limit: int = 5000
    ) -> list[JobRecord]:
        """The jobs created since ``since`` that the principal may see (every owner's for an
        admin), newest first, at most ``limit`` (the dashboard's figures of the last hour)."""
        query = JobQuery(owner=None, created_from=since, limit=limit)
        return await self.page(principal, query)
