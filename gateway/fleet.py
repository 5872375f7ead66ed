"""The live workers, from their heartbeats in the store (DESIGN §3: ``heartbeat`` events).

A worker is live from its first heartbeat until it says goodbye (the ``leaving`` heartbeat
of a clean shutdown: gone at once) or falls silent for ``SG_HEARTBEAT_SILENCE`` seconds
(gone then). Everything is read from the store, so every gateway process answers alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

from gateway.auth import Principal
from gateway.store import JobQuery, JobStatus, JobStore, WorkerState

# A page of a caller's active jobs, read to tell which of the running jobs are theirs.
_OWN_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Waiting:
    """What an ``accepted`` job waits on: the live workers of its service, and (when known)
    its place in the queue and when it should start."""

    live_workers: int
    position: int | None = None
    estimated_start: datetime | None = None

    def note(self, service: str) -> str | None:
        """The status message an accepted job shows while no worker could take it."""
        if self.live_workers > 0:
            return None
        return f"no live worker of {service}: the job waits until one starts"


class Fleet:
    """Reads the live workers from the store."""

    def __init__(self, store: JobStore, *, silence: float) -> None:
        self._store = store
        self._silence = timedelta(seconds=silence)

    def since(self, now: datetime | None = None) -> datetime:
        """The cut-off: workers heard from after it are live."""
        return (now or datetime.now(UTC)) - self._silence

    async def live(self, service: str | None = None) -> list[WorkerState]:
        """The live workers (of one service), by service then id."""
        return await self._store.live_workers(since=self.since(), service=service)

    async def count(self, service: str) -> int:
        """How many workers of the service are live."""
        return await self._store.active_workers(service, since=self.since())

    async def visible(
        self, principal: Principal, workers: Sequence[WorkerState]
    ) -> Callable[[UUID], bool]:
        """Which of the jobs these workers run the caller may see by id: every one for an
        admin, their own for anyone else (what a worker runs is counted for all, named only
        to its owner)."""
        if principal.admin:
            return lambda _: True
        if not any(worker.running for worker in workers):
            return lambda _: False
        return (await self._active(principal.subject)).__contains__

    async def _active(self, owner: str) -> set[UUID]:
        """The ids of ``owner``'s queued or running jobs (a worker runs a job before its
        ``started`` event, if any, is applied): bounded by what one caller may have active."""
        query = JobQuery(
            owner=owner,
            statuses=frozenset({JobStatus.ACCEPTED, JobStatus.RUNNING}),
            limit=_OWN_PAGE,
        )
        found: set[UUID] = set()
        while True:
            page = await self._store.page_jobs(query)
            found.update(record.id for record in page)
            if len(page) < query.limit:
                return found
            last = page[-1]
            query = replace(query, after=(last.created, last.id))
