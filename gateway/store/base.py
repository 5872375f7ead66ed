"""The store interface every implementation honours (the contract suite tests it).

Every state change is one atomic conditional update, so that any number of gateway replicas
may apply any event in any order: terminal states are sticky, a run's progress only rises,
and an update that does not apply returns ``None`` instead of raising.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from worker_sdk.wire import ErrorInfo

from .model import (
    ACTIVE,
    JobRecord,
    JobStatus,
    WebhookAttempt,
    WebhookDelivery,
    WorkerInfo,
    WorkerState,
)


class StoreError(RuntimeError):
    """The store could not be reached or refused an operation."""


class StoreRejected(StoreError):
    """The store refused this operation's values: retrying it will not help."""


class DuplicateJob(StoreRejected):
    """Another job of the same owner holds this idempotency key."""


@dataclass(frozen=True, slots=True)
class JobQuery:
    """One page of a job list: the filters, and the keyset position to continue after.

    Jobs come newest first, ordered by ``(created, id)`` descending; ``after`` is the
    ``(created, id)`` of the last job of the previous page, so a page at any depth costs one
    index seek (no offset is walked). ``statuses`` matches the status a client sees: a
    finished job whose result was dismissed (``purged``) counts as ``dismissed``.
    ``min_duration``/``max_duration`` (seconds) keep only jobs that started, with a run time
    of ``finished - started`` (``now - started`` while running), as OGC API – Processes
    defines it; when either is set and ``statuses`` is empty, accepted jobs are left out.
    """

    owner: str | None
    services: tuple[str, ...] = ()
    statuses: frozenset[JobStatus] = frozenset()
    created_from: datetime | None = None
    created_to: datetime | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    now: datetime | None = None
    after: tuple[datetime, UUID] | None = None
    limit: int = 100

    @property
    def timed(self) -> bool:
        return self.min_duration is not None or self.max_duration is not None

    def shown_statuses(self) -> frozenset[JobStatus]:
        """The statuses to match, with the duration filters' default applied."""
        if self.statuses or not self.timed:
            return self.statuses
        return frozenset(JobStatus) - {JobStatus.ACCEPTED}


@dataclass(frozen=True, slots=True)
class ServiceLoad:
    """A service's load as the store saw it at ``now`` (what the capacity figures are made of).

    ``arrivals[i]`` counts the jobs created since ``since[i]``, ``completions[i]`` the runs
    that ended since then (a job that started, whatever its end). ``first_created`` is the
    creation of the service's oldest job on record (rates over a window longer than the
    record are taken over the record). ``runs`` holds ``(queue wait, run time)`` in seconds
    of the most recent runs that ended, newest first: ``started - created`` and
    ``finished - started``.
    """

    accepted: int
    running: int
    arrivals: tuple[int, ...]
    completions: tuple[int, ...]
    first_created: datetime | None
    runs: tuple[tuple[float, float], ...]


class JobStore(Protocol):
    """Async persistence of job records."""

    async def open(self) -> None:
        """Connect and create the schema and indexes if missing."""

    async def close(self) -> None:
        """Release every resource; safe to call twice or after a failed open."""

    async def ping(self) -> None:
        """Raise :class:`StoreError` when the store cannot answer."""

    async def insert(self, record: JobRecord, *, counter: str | None = None) -> bool:
        """Add a new job; :class:`DuplicateJob` when its owner's idempotency key is taken.

        With ``counter``, the store may add one to that usage counter in the same write,
        where it costs the store less than a :meth:`bump` of its own; it says whether it
        did, and the caller counts the job otherwise."""

    async def get(self, job_id: UUID) -> JobRecord | None:
        """The job, or ``None``."""

    async def owners(self, job_ids: Collection[UUID]) -> dict[UUID, str]:
        """The owner of each of these jobs that exists (whatever its status)."""

    async def find_by_key(self, owner: str, key: str) -> JobRecord | None:
        """The owner's job holding this idempotency key, or ``None``."""

    async def release_key(self, job_id: UUID) -> None:
        """Free the job's idempotency key for reuse (expired window, failed publish)."""

    async def page_jobs(self, query: JobQuery) -> list[JobRecord]:
        """At most ``query.limit`` jobs matching ``query``, newest first, after its keyset
        position (see :class:`JobQuery`)."""

    async def service_load(
        self, service: str, *, since: Sequence[datetime], sample: int = 500
    ) -> ServiceLoad:
        """The service's load: its accepted and running jobs now, its arrivals and
        completions since each of ``since``, and its ``sample`` most recent runs (see
        :class:`ServiceLoad`). Index-backed: counts and a bounded read, never a scan of
        the service's history."""

    async def queue_position(self, record: JobRecord) -> int:
        """How many ``accepted`` jobs of the record's service were created before it (ties
        broken by id): its place in the queue, counting from 0."""

    async def count_active(self, owner: str) -> int:
        """How many of the owner's jobs are accepted or running."""

    async def purge(self, job_id: UUID, *, at: datetime) -> JobRecord | None:
        """Drop the result of a finished job and mark it purged (once)."""

    async def expire(self, now: datetime, *, limit: int = 1000) -> int:
        """Delete jobs whose ``expires_at`` has passed (their webhook deliveries too), leaving
        tombstones; how many."""

    async def mark_queued(self, job_ids: Collection[UUID], *, at: datetime) -> None:
        """Record that the broker confirmed these jobs' first tasks (the outbox's mark)."""

    async def unqueued(
        self, *, service: str, before: datetime, limit: int = 100
    ) -> list[JobRecord]:
        """First attempts of the service still ``accepted`` without a confirmed task, created
        before ``before``, oldest first: the candidates of the recovery pass."""

    async def claim_recovery(self, job_id: UUID, *, at: datetime, lease: timedelta) -> bool:
        """Take the right to republish an unqueued job's task for ``lease``: True for one
        caller at a time, and only while the job's first attempt is ``accepted`` with no
        mark. A job back to ``accepted`` for a retry is never claimed: its first task reached
        a worker, whether or not its mark was kept."""

    async def owed_webhooks(self, *, before: datetime, limit: int = 100) -> list[JobRecord]:
        """Jobs that may owe a webhook (``webhook_open``) and changed since the last one was
        queued (``webhook_seq < seq``), last updated before ``before``, oldest first: the
        candidates of the webhooks' outbox sweep."""

    async def mark_webhook(self, job_id: UUID, *, seq: int, close: bool) -> None:
        """Record that the webhook of the job's change ``seq`` is queued (or that it owed
        none); never moves ``webhook_seq`` back. ``close`` clears ``webhook_open``: the
        terminal state's webhook is queued and nothing more is owed."""

    async def record_webhook_attempt(self, attempt: WebhookAttempt) -> None:
        """Add an attempt to the delivery of ``attempt.event_id`` (created at its first):
        one more attempt, its status and error, the next attempt's time; ``delivered`` keeps
        the first success and ``exhausted`` is never cleared. Nothing is recorded for a job
        that is gone (removed by retention while its schedule went on): nothing would remove
        the delivery then."""

    async def defer_webhook(
        self, *, event_id: str, job_id: UUID, type: str, url: str, due: datetime
    ) -> None:
        """Record that the next attempt of ``event_id`` was deferred to ``due`` (its receiver
        busy): the delivery's ``next_attempt``, created without attempts when none was made
        yet; no attempt is counted, and a delivered or exhausted one is left as it is; nothing
        for a job that is gone."""

    async def webhook_delivery(self, event_id: str) -> WebhookDelivery | None:
        """The delivery of one webhook event, or ``None`` before its first attempt or
        deferral."""

    async def webhook_deliveries(self, job_id: UUID) -> list[WebhookDelivery]:
        """The job's webhook deliveries, in the order of their first attempt (deferred ones
        not attempted yet first)."""

    async def tombstone(self, job_id: UUID) -> str | None:
        """The owner of a job deleted by retention, or ``None``."""

    async def stale(
        self,
        *,
        service: str,
        status: JobStatus,
        before: datetime,
        retried_before: datetime | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        """Jobs of the service in ``status`` since before ``before``: running ones by when
        they started; accepted ones by when they were created, but an accepted job waiting
        for another attempt by when its retry was recorded (``updated``), before
        ``retried_before`` (``before`` if not given)."""

    async def heartbeat(
        self,
        worker: WorkerInfo,
        *,
        service: str,
        at: datetime,
        concurrency: int = 0,
        running: Collection[UUID] = (),
    ) -> None:
        """Record that a worker is alive, running these jobs: its last time seen only rises,
        and a heartbeat older than the one recorded changes nothing else either."""

    async def worker_left(self, worker_id: str, *, at: datetime) -> None:
        """Record a worker's goodbye: it no longer counts as live, whatever heartbeat of its
        own arrives late (worker ids are never reused)."""

    async def forget_workers(self, *, before: datetime) -> int:
        """Delete the workers last heard of before ``before`` (gone or long silent); how
        many."""

    async def last_heartbeat(self, worker_id: str) -> datetime | None:
        """When the worker was last heard of."""

    async def active_workers(self, service: str, *, since: datetime) -> int:
        """Workers of the service heard from after ``since`` that have not said goodbye."""

    async def live_workers(
        self, *, since: datetime, service: str | None = None
    ) -> list[WorkerState]:
        """The workers (of one service) heard from after ``since`` that have not said
        goodbye, by service then id."""

    async def counter_since(self, counter: str) -> datetime | None:
        """When the counter was first bumped (its last reset), or ``None``."""

    async def bump(self, counter: str, by: int = 1) -> None:
        """Add ``by`` to a usage counter (created at 0)."""

    async def counters(self, prefix: str = "") -> dict[str, int]:
        """The usage counters whose names start with ``prefix``."""

    async def start(
        self, job_id: UUID, *, attempt: int, run_id: UUID, worker: WorkerInfo, at: datetime
    ) -> JobRecord | None:
        """Mark the job running under a new run, unless it is finished or the run is older."""

    async def retrying(
        self, job_id: UUID, *, attempt: int, message: str, at: datetime
    ) -> JobRecord | None:
        """Put an active job back to ``accepted`` for its next ``attempt`` (once per attempt)."""

    async def progress(
        self,
        job_id: UUID,
        *,
        run_id: UUID,
        seq: int,
        percent: int,
        message: str | None,
        at: datetime,
    ) -> JobRecord | None:
        """Record progress of the current run if it is newer and not lower."""

    async def finish(
        self,
        job_id: UUID,
        *,
        status: JobStatus,
        at: datetime,
        reason: str | None = None,
        result: Any = None,
        error: ErrorInfo | None = None,
        attempt: int | None = None,
        started: datetime | None = None,
        worker: WorkerInfo | None = None,
        expires_at: datetime | None = None,
        only_from: Collection[JobStatus] = ACTIVE,
    ) -> JobRecord | None:
        """Move the job to a terminal state if its status is in ``only_from``.

        ``started`` and ``worker`` fill those fields when no ``started`` event set them (a
        run short enough to end before it was announced). With ``attempt`` (a run's end), a
        job already on a later attempt is left as it is: a late end of an earlier run (one run
        twice after a redelivery) must not end the attempt that followed its retry.
        """
