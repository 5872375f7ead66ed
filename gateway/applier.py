"""Apply workers' events and dead-lettered tasks to the store (DESIGN §2 rule 4).

Every application is idempotent: the store's conditional updates make terminal states sticky
and progress monotonic within a run, so a duplicate, late or reordered event is a no-op. An
event for an unknown or finished job is logged and acked, never retried.

No message can stop the consumers. Whatever handling one raises, it is settled:

- a store that fails transiently is retried in place, with a growing pause, for as long as it
  fails (the delivery stays unacknowledged, so a gateway that dies meanwhile hands it to
  another);
- a message that cannot be read, is written for a newer contract, names no known service, or
  whose values the store refuses, is dead-lettered to the poison queue, and so is one whose
  handling raised anything else (logged with its traceback); a run's end the store refuses
  first ends its job without the refused values (:func:`gateway.ends.record_end`);
- the queues' delivery limits park a message that kills every gateway it reaches.

Times come from the gateway's clock: a worker's ``emitted_at`` is used only where it is not
in the future (a run's start and end), never to order or expire anything; the store moves a
start before the job's creation, or an end before its start, to that time (a clock behind).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from gateway.changes import Changes
from gateway.dead_letters import DeathOrder, NoJob, Requeue, dead_job, finish_dead, hand_on
from gateway.ends import RecentEnds, record_end
from gateway.store import (
    JobRecord,
    JobStatus,
    JobStore,
    Reason,
    StoreError,
    StoreRejected,
    WorkerInfo,
)
from gateway.unusable import Salvaged, Unusable, read_event, why_unusable
from worker_sdk.wire import (
    BARRIER,
    TASK,
    Barrier,
    BarrierPassed,
    Cancelled,
    ErrorInfo,
    Failed,
    Heartbeat,
    JobEvent,
    Outcomes,
    Progress,
    Retrying,
    Started,
    Succeeded,
    TerminalEvent,
    parse_event,
    settle,
)
from worker_sdk.wire.catalogue import Catalogue

log = logging.getLogger("gateway.events")

STORE_RETRY_FIRST = 0.5
STORE_RETRY_MAX = 10.0

BarrierCallback = Callable[[uuid.UUID], None]


def version_mismatch(catalogue: Catalogue, service: str, version: str | None) -> str | None:
    """The old gateway's code 204 message when a worker's version is not the catalogue's."""
    spec = catalogue.get(service)
    if spec is None or version is None or version == spec.version:
        return None
    return (
        f"Service {service} declares the version {spec.version} in its config file but "
        f"messages received from its worker contain the version {version}."
    )


class EventApplier:
    """Turns events into store updates and announces every change it makes."""

    def __init__(
        self,
        store: JobStore,
        changes: Changes,
        *,
        catalogue: Catalogue,
        stop_run: Callable[[uuid.UUID], Awaitable[None]] | None = None,
        reject_other_versions: bool = False,
        max_result_depth: int = 32,
        death_order: DeathOrder | None = None,
        requeue: Requeue | None = None,
    ) -> None:
        self._deaths = death_order
        self._requeue = requeue
        self._store = store
        self._changes = changes
        self._metrics = changes.metrics
        self._catalogue = catalogue
        self._stop_run = stop_run
        self._reject_other_versions = reject_other_versions
        self._max_result_depth = max_result_depth
        self._barrier_listeners: list[BarrierCallback] = []
        self._ended = RecentEnds()

    def on_barrier(self, callback: BarrierCallback) -> None:
        """Call ``callback(barrier_id)`` whenever this process sees a barrier pass."""
        self._barrier_listeners.append(callback)

    def _barrier_passed(self, barrier_id: uuid.UUID) -> None:
        for callback in self._barrier_listeners:
            callback(barrier_id)

    async def apply(
        self, event: JobEvent | Heartbeat | BarrierPassed, *, now: datetime | None = None
    ) -> JobRecord | None:
        """Apply one event; the updated record, or ``None`` when it changed nothing.

        Raises :class:`Unusable` for an event no retry will make usable, and
        :class:`~gateway.store.StoreError` when the store fails.
        """
        now = now or datetime.now(UTC)
        if isinstance(event, BarrierPassed):
            self._barrier_passed(event.barrier_id)
            return None
        spec = self._catalogue.get(event.service)
        if spec is None:
            raise Unusable(f"{event.kind} event for {event.service!r}, not in the catalogue")
        if isinstance(event, Retrying) and event.attempt > spec.max_attempts:
            # Its job would wait for an attempt no task carries, every real event of the
            # run in progress ignored as an earlier attempt's.
            raise Unusable(
                f"retrying event for attempt {event.attempt} of job {event.job_id}: "
                f"{spec.id!r} allows {spec.max_attempts}"
            )
        if isinstance(event, Heartbeat):
            if event.leaving:
                await self._store.worker_left(event.worker_id, at=now)
                return None
            worker = WorkerInfo(id=event.worker_id, host=event.host, version=event.version)
            await self._store.heartbeat(
                worker,
                service=event.service,
                at=now,
                concurrency=event.concurrency,
                running=event.running,
            )
            return None
        if isinstance(event, Succeeded | Failed | Cancelled):  # applied once here (RecentEnds)
            return await self._ended.once(event.job_id, lambda: self._change(event, now))
        return await self._change(event, now)

    async def _change(self, event: JobEvent, now: datetime) -> JobRecord | None:
        """The store's update for ``event``, announced; ``None`` when it changed nothing."""
        at = min(event.emitted_at, now)
        expires_at = now + self._catalogue.retention(event.service)
        record: JobRecord | None
        match event:
            case Started():
                record = await self._start(event, at)
            case Progress():
                record = await self._store.progress(
                    event.job_id,
                    run_id=event.run_id,
                    seq=event.seq,
                    percent=event.percent,
                    message=event.message,
                    at=at,
                )
            case Retrying():
                record = await self._store.retrying(
                    event.job_id,
                    attempt=event.attempt,
                    message=f"attempt {event.attempt} in {event.delay:g}s: {event.error.message}",
                    at=at,
                )
            case Succeeded() | Failed() | Cancelled():
                record = await record_end(
                    self._store,
                    event,
                    at=at,
                    expires_at=expires_at,
                    now=now,
                    max_result_depth=self._max_result_depth,
                    max_result_bytes=self._max_result_bytes(event.service),
                )
        if record is None:
            log.debug("event %s for job %s changed nothing", event.kind, event.job_id)
            return None
        self._changes.made(record)
        if record.status.terminal:
            self._ended.add(record.id)
        return record

    def _max_result_bytes(self, service: str) -> int | None:
        spec = self._catalogue.get(service)
        return spec.max_result_bytes if spec is not None else None

    async def _start(self, event: Started, at: datetime) -> JobRecord | None:
        worker = WorkerInfo(id=event.worker_id, host=event.host, version=event.worker_version)
        record = await self._store.start(
            event.job_id, attempt=event.attempt, run_id=event.run_id, worker=worker, at=at
        )
        mismatch = version_mismatch(self._catalogue, event.service, event.worker_version)
        if mismatch:
            self._metrics.version_mismatch.labels(event.service).inc()
        if record is None:
            await self._stop_if_finished(event.job_id)
        elif mismatch and self._reject_other_versions:
            self._changes.made(record)
            record = await self._reject_version(event, mismatch, at) or record
        return record

    async def _reject_version(self, event: Started, message: str, at: datetime) -> JobRecord | None:
        log.warning("job %s: %s; failing it", event.job_id, message)
        error = ErrorInfo(code="204", type="VersionMismatchError", message=message)
        record = await self._store.finish(
            event.job_id,
            status=JobStatus.FAILED,
            at=at,
            reason=Reason.VERSION_MISMATCH,
            error=error,
            expires_at=at + self._catalogue.retention(event.service),
        )
        if self._stop_run is not None:
            await self._stop_run(event.job_id)
        return record

    async def _stop_if_finished(self, job_id: uuid.UUID) -> None:
        """A run started for a job that has ended (dismissed while its worker missed the
        broadcast, or run twice): tell the run to stop."""
        record = await self._store.get(job_id)
        if record is not None and record.status.terminal and self._stop_run is not None:
            log.info(
                "job %s is %s but a worker started it; telling it to stop", job_id, record.status
            )
            await self._stop_run(job_id)

    async def _with_store(self, what: str, work: Callable[[], Awaitable[object]]) -> None:
        """Run ``work``, retrying while the store fails transiently; a rejection is final."""
        pause = STORE_RETRY_FIRST
        while True:
            try:
                await work()
                return
            except StoreRejected as exc:
                raise Unusable(f"the store refused it: {exc}") from exc
            except StoreError as exc:
                log.warning("store failed on %s (%s); retrying in %.1fs", what, exc, pause)
            await asyncio.sleep(pause)  # back-off while the store is down
            pause = min(pause * 2, STORE_RETRY_MAX)

    async def _settled(
        self, message: AbstractIncomingMessage, queue: str, handle: Callable[[], Awaitable[None]]
    ) -> None:
        """Run ``handle``, then ack; dead-letter what is unusable or raised anything else."""
        try:
            await handle()
        except Unusable as exc:
            self._metrics.events_refused.labels(queue, why_unusable(exc)).inc()
            log.warning("message %r on %s set aside: %s", message.message_id, queue, exc)
            await settle(message, "reject")
            return
        except Exception:
            self._metrics.events_refused.labels(queue, "failed").inc()
            log.exception("message %r on %s failed; set aside", message.message_id, queue)
            await settle(message, "reject")
            return
        await settle(message, "ack")

    async def on_event(self, message: AbstractIncomingMessage) -> None:
        """Consumer of ``{ns}.events``: apply, then ack (see the module's docstring)."""

        async def handle() -> None:
            event = read_event(message.body)
            if isinstance(event, Outcomes):
                await self._apply_outcomes(event)
                return
            await self._with_store(f"{event.kind} event", lambda: self.apply(event))

        await self._settled(message, "events", handle)

    async def _apply_outcomes(self, outcomes: Outcomes) -> None:
        """Apply the terminal events of an ``outcomes`` message together, so that the store
        commits them in one transaction; each is retried on its own while the store fails.
        One that is unusable, or does not parse (:class:`Salvaged`), does not hold the others
        back: they are applied, then the message is set aside with its reason."""
        now = datetime.now(UTC)

        async def one(event: TerminalEvent) -> None:
            await self._with_store(f"{event.kind} event", lambda: self.apply(event, now=now))

        results = await asyncio.gather(*(one(e) for e in outcomes.events), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, Exception):
                raise failure
        if failures:
            first = failures[0]
            if isinstance(first, Unusable):
                raise Unusable(
                    f"{len(failures)} of its {len(outcomes.events)} events were not applied, "
                    f"the first: {first}"
                ) from first.__cause__
            raise first
        if isinstance(outcomes, Salvaged) and (refusal := outcomes.refusal()) is not None:
            raise refusal

    async def on_watched_event(self, message: AbstractIncomingMessage) -> None:
        """Consumer of this process's private copy of events (no-ack).

        When a local request waits on the job, apply the event here (idempotently) so the
        waiter is answered whichever gateway replica applies the shared copy. Events nobody
        here waits on are skipped on their ``correlation_id`` without parsing the body; the
        shared copy is the one that counts, so nothing here is retried or set aside.
        """
        if message.type == BARRIER:
            try:
                event = parse_event(message.body)
            except (ValueError, ValidationError):
                return
            if isinstance(event, BarrierPassed):
                self._barrier_passed(event.barrier_id)
            return
        try:
            if message.type == "outcomes":
                outcomes = read_event(message.body)  # the ends that parse, as the shared copy's
                if isinstance(outcomes, Outcomes):
                    for inner in outcomes.events:
                        if self._changes.watch.interested(inner.job_id):
                            await self._apply_watched(inner)
                return
            if not self._changes.watch.interested(uuid.UUID(message.correlation_id or "")):
                return
            event = parse_event(message.body)
        except (ValueError, ValidationError, Unusable):
            return
        if isinstance(event, Heartbeat | BarrierPassed | Outcomes):
            return
        await self._apply_watched(event)

    async def _apply_watched(self, event: JobEvent) -> None:
        try:
            if await self.apply(event) is not None or event.job_id in self._ended:
                return  # its waiters were told when it changed
        except Unusable:
            log.warning("could not apply a watched event for %s", event.job_id, exc_info=True)
            return
        except StoreError:  # a commit that failed may have kept the change all the same
            log.warning("could not apply a watched event for %s", event.job_id, exc_info=True)
        try:  # tell the waiters the job as the store holds it
            record = await self._store.get(event.job_id)
        except StoreError:
            log.warning("could not read back the job %s", event.job_id, exc_info=True)
            return
        if record is not None:
            self._changes.seen(record)
            if record.status.terminal:
                self._ended.add(record.id)

    async def on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        """Consumer of ``{ns}.dead``: a task the broker or a worker gave up on ends the job;
        a barrier that died (expired, refused) has passed all the same."""

        async def handle() -> None:
            if message.type == BARRIER:
                self._passed_barrier(message.body)
                return
            try:
                job_id, service, death = dead_job(message)
            except NoJob as exc:
                raise Unusable(str(exc)) from exc
            if self._deaths is not None:  # after the events published before it
                await self._deaths.wait()
            requeue = self._requeue
            if death == "expired" and requeue is not None and message.type == TASK:
                handed_on = False

                async def hand() -> None:
                    nonlocal handed_on
                    handed_on = await hand_on(self._store, self._catalogue, message, requeue)

                await self._with_store(f"expired task of job {job_id}", hand)
                if handed_on:
                    return
            await self._with_store(
                f"dead-lettered job {job_id}", lambda: self._end_dead(job_id, service, death)
            )

        await self._settled(message, "dead", handle)

    def _passed_barrier(self, body: bytes) -> None:
        try:
            barrier = Barrier.model_validate_json(body)
        except ValidationError as exc:  # set aside and counted, as any unreadable message
            raise Unusable(f"a dead barrier that is none: {exc.error_count()} error(s)") from exc
        self._barrier_passed(barrier.barrier_id)

    async def _end_dead(self, job_id: uuid.UUID, service: str | None, death: str) -> None:
        record = await finish_dead(self._store, self._catalogue, job_id, service, death)
        if record is not None:
            log.info("job %s ended %s/%s (%s)", job_id, record.status, record.reason, death)
            self._changes.made(record)
