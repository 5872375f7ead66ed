"""The outbox: every accepted job gets its task queued, even when a gateway died mid-submit.

A submission records the job, then publishes its task and waits for the broker's confirm.
A gateway killed between the two leaves a job ``accepted`` with no task anywhere — or with a
task the broker confirmed a moment before the process died. The recovery pass tells the two
apart without guessing, and queues the first kind within seconds:

1. **Marks.** Each confirmed first task is marked on its job (``queued``), in batches a few
   times a second. The mark only narrows the search: a job whose mark was lost with its
   process is a candidate like any other, and step 3 decides.
2. **Candidates.** Every ``recovery_interval`` (and at once when a client replays the
   ``Idempotency-Key`` of such a job), the pass looks for first attempts still ``accepted``
   with no mark, older than any publish still in flight (the publish timeout, plus the
   marks' delay). Publishes in flight in this process are skipped.
3. **Barrier.** For a service with candidates, the pass publishes a *barrier* through the
   service's task queue and waits until a worker reports it (or the broker dead-letters it).
   Queues are FIFO: by then every task published before the barrier has been delivered, and
   a delivered task's run is reported within ``started_delay``. After ``recovery_grace``, and
   once the events queue holds nothing unapplied, a candidate still ``accepted`` has no task
   in the broker.
4. **Republish.** Such a job is claimed (a short lease on the record, so two gateway replicas
   never both publish it), its task is published again with confirms, and it is marked.

So no accepted job waits for the reaper, and no task is published twice unless a worker
sat on a delivered task for longer than ``recovery_grace`` before reporting it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from gateway.broker import Broker, BrokerDown, PublishRefused
from gateway.store import JobRecord, JobStatus, JobStore, StoreError
from gateway.watch import JobWatch
from worker_sdk.wire import Barrier, LegacyDocument, Task
from worker_sdk.wire.catalogue import Catalogue, ServiceSpec

log = logging.getLogger("gateway.recovery")

MARK_INTERVAL = 0.25
CANDIDATES_PER_PASS = 500
CLAIM_LEASE = timedelta(seconds=30)


@dataclass
class _Barrier:
    """A barrier in flight through one service's queue, and the jobs it decides about."""

    id: uuid.UUID
    jobs: list[uuid.UUID]
    passed: asyncio.Event = field(default_factory=asyncio.Event)
    passed_at: float = 0.0


class Recovery:
    """Marks confirmed tasks and republishes the tasks that never reached the broker."""

    def __init__(
        self,
        store: JobStore,
        broker: Broker,
        catalogue: Catalogue,
        watch: JobWatch,
        *,
        interval: float,
        older_than: float,
        grace: float,
    ) -> None:
        self._store = store
        self._broker = broker
        self._catalogue = catalogue
        self._watch = watch
        self._interval = interval
        self._older_than = timedelta(seconds=older_than)
        self._grace = grace
        self._marks: set[uuid.UUID] = set()
        self._in_flight: set[uuid.UUID] = set()
        self._barriers: dict[str, _Barrier] = {}
        self._wake = asyncio.Event()
        self.recovered = 0

    @asynccontextmanager
    async def publishing(self, job_id: uuid.UUID) -> AsyncIterator[None]:
        """Wrap a first task's publish: the job is marked once the context exits cleanly."""
        self._in_flight.add(job_id)
        try:
            yield
            self._marks.add(job_id)
        finally:
            self._in_flight.discard(job_id)

    def hurry(self, service: str) -> None:
        """Look for this service's unqueued jobs now rather than at the next interval."""
        self._wake.set()

    def barrier_passed(self, barrier_id: uuid.UUID) -> None:
        """A worker reported a barrier (or the broker dead-lettered it)."""
        for barrier in self._barriers.values():
            if barrier.id == barrier_id and not barrier.passed.is_set():
                barrier.passed_at = asyncio.get_running_loop().time()
                barrier.passed.set()
                self._wake.set()

    @property
    def pending(self) -> int:
        """Barriers in flight."""
        return len(self._barriers)

    def _barrier_due(self, now: float) -> bool:
        return any(
            b.passed.is_set() and now - b.passed_at >= self._grace for b in self._barriers.values()
        )

    async def run(self) -> None:
        """Mark and recover until cancelled; the first pass runs at once."""
        loop = asyncio.get_running_loop()
        next_pass = loop.time()
        try:
            while True:
                await self._flush_marks()
                now = loop.time()
                if now >= next_pass or self._wake.is_set() or self._barrier_due(now):
                    self._wake.clear()
                    await self._pass()
                    next_pass = loop.time() + self._interval
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
                # lands as the event is set, and the gateway's shutdown then waits forever.
                with suppress(TimeoutError):
                    async with asyncio.timeout(MARK_INTERVAL):
                        await self._wake.wait()
        finally:
            for _ in self._barriers:
                self._watch.release()
            self._barriers.clear()
            await asyncio.shield(self._flush_marks())

    async def _flush_marks(self) -> None:
        if not self._marks:
            return
        marks, self._marks = self._marks, set()
        try:
            await self._store.mark_queued(marks, at=datetime.now(UTC))
        except StoreError as exc:
            log.warning("could not mark %d queued job(s) (%s); retrying", len(marks), exc)
            self._marks |= marks

    async def _pass(self) -> None:
        for spec in self._catalogue:
            try:
                await self._service_pass(spec)
            except (StoreError, BrokerDown, PublishRefused) as exc:
                log.warning("recovery of %s postponed: %s", spec.id, exc)
            except Exception:
                log.exception("recovery of %s failed; trying again next pass", spec.id)

    async def _service_pass(self, spec: ServiceSpec) -> None:
        barrier = self._barriers.get(spec.id)
        if barrier is None:
            await self._send_barrier(spec)
            return
        if not barrier.passed.is_set():
            return
        loop = asyncio.get_running_loop()
        if loop.time() - barrier.passed_at < self._grace:
            return
        ready, _ = await self._broker.queue_stats(self._broker.topology.events_queue)
        if ready:
            return  # reports of tasks delivered before the barrier may wait in there
        del self._barriers[spec.id]
        self._watch.release()
        for job_id in barrier.jobs:
            record = await self._store.get(job_id)
            if record is not None and _unqueued(record):
                await self._republish(record, spec)

    async def _send_barrier(self, spec: ServiceSpec) -> None:
        before = datetime.now(UTC) - self._older_than
        candidates = [
            record.id
            for record in await self._store.unqueued(
                service=spec.id, before=before, limit=CANDIDATES_PER_PASS
            )
            if record.id not in self._in_flight
        ]
        if not candidates:
            return
        barrier = _Barrier(id=uuid.uuid4(), jobs=candidates)
        await self._watch.hold()
        self._barriers[spec.id] = barrier
        try:
            await self._broker.publish_barrier(
                Barrier(barrier_id=barrier.id, service=spec.id), spec
            )
        except BaseException:
            del self._barriers[spec.id]
            self._watch.release()
            raise
        log.info(
            "%d %s job(s) accepted with no confirmed task; barrier %s sent",
            len(candidates),
            spec.id,
            barrier.id,
        )

    async def _republish(self, record: JobRecord, spec: ServiceSpec) -> None:
        now = datetime.now(UTC)
        if not await self._store.claim_recovery(record.id, at=now, lease=CLAIM_LEASE):
            return
        await self._broker.publish_task(task_for(record, spec), spec)
        await self._store.mark_queued([record.id], at=datetime.now(UTC))
        self.recovered += 1
        log.warning("job %s: its task never reached the broker; queued it again", record.id)


def task_for(record: JobRecord, spec: ServiceSpec) -> Task:
    """The task that runs ``record``'s first attempt (also what recovery publishes again)."""
    legacy = record.legacy
    return Task(
        job_id=record.id,
        service=spec.id,
        service_version=spec.version,
        inputs=record.inputs,
        max_attempts=spec.max_attempts,
        document=LegacyDocument(url=legacy.document_url) if legacy else None,
        misc=record.inputs if legacy else None,
        annotation_service_url=legacy.annotation_service_url if legacy else None,
        submitted_at=record.created,
        time_limit=spec.time_limit,
        deadline=record.created + timedelta(seconds=spec.queue_ttl),
        max_result_bytes=spec.max_result_bytes,
        batch_outcomes=True,
    )


def _unqueued(record: JobRecord) -> bool:
    return record.status is JobStatus.ACCEPTED and record.queued is None and record.attempt == 1
