"""In-process fan-out of job changes to whoever waits on them (synchronous execution)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from gateway.store import JobRecord


class JobWatch:
    """Futures keyed by job id, resolved when the job reaches a terminal state."""

    def __init__(self) -> None:
        self._waiters: dict[UUID, set[asyncio.Future[JobRecord]]] = {}

    def interested(self, job_id: UUID) -> bool:
        return job_id in self._waiters

    def notify(self, record: JobRecord) -> None:
        if not record.status.terminal:
            return
        for future in self._waiters.get(record.id, ()):
            if not future.done():
                future.set_result(record)

    @contextmanager
    def waiting(self, job_id: UUID) -> Iterator[asyncio.Future[JobRecord]]:
        """Register before publishing, so that no terminal event can slip past the waiter."""
        future: asyncio.Future[JobRecord] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(future)
        try:
            yield future
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[job_id]
            future.cancel()
