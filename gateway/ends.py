"""The jobs whose end this process applied lately, so that a second copy of an end is skipped.

A waited job's end reaches the gateway process that waits for it twice, a few milliseconds
apart: on the shared events queue and on the process's tap. Terminal states are final, so
the copy that comes second would change nothing; it is skipped without touching the store,
and one that comes while the first is being applied waits for it (and applies itself only if
the first failed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from uuid import UUID

from gateway.store import JobRecord

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
