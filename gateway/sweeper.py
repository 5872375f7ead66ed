"""The periodic sweep: retention (purge expired jobs) and the reaper (no job stays stuck).

The reaper fails two kinds of stuck records, each past a generous grace:

- ``accepted`` jobs older than their queue TTL: their task was never queued (the gateway
  stopped between recording and publishing) or was lost, since a queued task that expires is
  dead-lettered and ends the job ``dismissed``/``expired`` well before. A job waiting for
  another attempt is counted from its retry, not its creation: the retry's copy of the task
  waits its delay (up to the longest retry tier, an hour), then in the task queue with no
  expiration of its own, however long ago the job was created;
- ``running`` jobs past their service's time limit whose worker has gone silent (no
  heartbeat): the worker died and no other worker took the task back.

It also forgets workers not heard of for :data:`WORKER_MEMORY` (each worker session leaves a
record; a day of silence is far past anything the reaper or ``GET /workers`` asks of it).

Every gateway process may sweep; each update is conditional, so racing sweeps are harmless.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.changes import Changes
from gateway.store import JobStatus, JobStore, Reason, StoreError
from worker_sdk.wire import ErrorInfo
from worker_sdk.wire.catalogue import Catalogue
from worker_sdk.wire.topology import RETRY_TIERS

log = logging.getLogger("gateway.sweeper")

WORKER_MEMORY = timedelta(days=1)


@dataclass
class SweepReport:
    purged: int = 0
    never_queued: int = 0
    worker_lost: int = 0
    workers_forgotten: int = 0


class Sweeper:
    """Retention and reaping over one store; :meth:`run` repeats :meth:`sweep` forever."""

    def __init__(
        self,
        store: JobStore,
        catalogue: Catalogue,
        changes: Changes,
        *,
        grace: float,
        silence: float,
    ) -> None:
        self._store = store
        self._catalogue = catalogue
        self._changes = changes
        self._grace = timedelta(seconds=grace)
        self._silence = timedelta(seconds=silence)

    async def run(self, interval: float) -> None:
        """Sweep every ``interval`` seconds, the first time one interval after start."""
        while True:
            await asyncio.sleep(interval)  # the sweep period
            try:
                report = await self.sweep(datetime.now(UTC))
                if report != SweepReport():
                    log.info("sweep: %s", report)
            except StoreError:
                log.warning("sweep failed; trying again next round", exc_info=True)
            except Exception:
                # Whatever a sweep meets (a row no code foresaw), the next one must still run.
                log.exception("sweep failed; trying again next round")

    async def sweep(self, now: datetime) -> SweepReport:
        report = SweepReport(
            purged=await self._store.expire(now),
            workers_forgotten=await self._store.forget_workers(
                before=now - max(WORKER_MEMORY, self._silence)
            ),
        )
        for spec in self._catalogue:
            retention = timedelta(seconds=spec.retention)
            cutoff = now - timedelta(seconds=spec.queue_ttl) - self._grace
            # A retry's copy of the task waits its delay in a holding queue first (at most
            # the longest tier), then in the task queue with no expiration of its own.
            retried = cutoff - timedelta(seconds=RETRY_TIERS[-1])
            for job in await self._store.stale(
                service=spec.id, status=JobStatus.ACCEPTED, before=cutoff, retried_before=retried
            ):
                error = ErrorInfo(
                    code=Reason.NOT_QUEUED,
                    type="NotQueued",
                    message="the job was recorded but its task never reached a worker",
                )
                done = await self._store.finish(
                    job.id,
                    status=JobStatus.FAILED,
                    at=now,
                    reason=Reason.NOT_QUEUED,
                    error=error,
                    expires_at=now + retention,
                    only_from={JobStatus.ACCEPTED},
                )
                if done is not None:
                    report.never_queued += 1
                    self._changes.made(done)
            if spec.time_limit is None:
                continue
            cutoff = now - timedelta(seconds=spec.time_limit) - self._grace
            for job in await self._store.stale(
                service=spec.id, status=JobStatus.RUNNING, before=cutoff
            ):
                seen = await self._store.last_heartbeat(job.worker.id) if job.worker else None
                if seen is not None and seen > now - self._silence:
                    continue  # its worker is alive: the time limit will end the run
                error = ErrorInfo(
                    code=Reason.WORKER_LOST,
                    type="WorkerSilent",
                    message="the job ran past its time limit and its worker stopped sending "
                    "heartbeats",
                )
                done = await self._store.finish(
                    job.id,
                    status=JobStatus.FAILED,
                    at=now,
                    reason=Reason.WORKER_LOST,
                    error=error,
                    expires_at=now + retention,
                    only_from={JobStatus.RUNNING},
                )
                if done is not None:
                    report.worker_lost += 1
                    self._changes.made(done)
        return report
