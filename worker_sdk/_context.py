"""What a handler sees of its job: identity, attempt and a progress channel."""

from __future__ import annotations

import threading
from collections.abc import Callable
from uuid import UUID

ProgressSink = Callable[[int, "str | None"], None]


class JobContext:
    """Handed to every handler as its first argument.

    ``progress`` may be called from an async handler, from a thread handler and from a
    child-process handler alike; calls are coalesced, so a handler may report as often as it
    likes without flooding the broker.
    """

    def __init__(
        self,
        *,
        job_id: UUID,
        service: str,
        attempt: int,
        worker_id: str,
        sink: ProgressSink,
    ) -> None:
        self.job_id = job_id
        self.service = service
        self.attempt = attempt
        self.worker_id = worker_id
        self._sink = sink
        self._cancelled = threading.Event()

    def progress(self, percent: int, message: str | None = None) -> None:
        """Report how far along the job is, as an integer from 0 to 100."""
        if isinstance(percent, bool) or not isinstance(percent, int):
            raise TypeError(f"progress must be an int from 0 to 100, not {percent!r}")
        if not 0 <= percent <= 100:
            raise ValueError(f"progress must be from 0 to 100, not {percent}")
        self._sink(percent, message)

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled or ran out of time: stop at the next safe point."""
        return self._cancelled.is_set()

    def _cancel(self) -> None:
        self._cancelled.set()
