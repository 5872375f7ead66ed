"""The live workers, from their heartbeats in the store (DESIGN §3: ``heartbeat`` events).

A worker is live from its first heartbeat until it says goodbye (the ``leaving`` heartbeat
of a clean shutdown: gone at once) or falls silent for ``SG_HEARTBEAT_SILENCE`` seconds
(gone then). Everything is read from the store, so every gateway process answers alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from gateway.auth import Principal
from gateway.store import JobStore, WorkerState


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
        to its owner). One lookup of the running jobs' owners, whatever their status (a job
        that ended stays in its worker's list until its next heartbeat)."""
        if principal.admin:
            return lambda _: True
        running = {job for worker in workers for job in worker.running}
        owners = await self._store.owners(running) if running else {}
        return lambda job: job in owners and principal.sees(owners[job])
