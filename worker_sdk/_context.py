"""What a handler sees of its job: identity, attempt and a progress channel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from ._fetch import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, fetch
from .wire.urls import UrlPolicy

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
        url_policy: UrlPolicy | None = None,
        document_url: str | None = None,
        annotation_service_url: str | None = None,
        misc: dict[str, Any] | None = None,
        submitted_at: datetime | None = None,
    ) -> None:
        self.job_id = job_id
        self.service = service
        self.attempt = attempt
        self.worker_id = worker_id
        self._sink = sink
        self.url_policy = url_policy if url_policy is not None else UrlPolicy()
        #: The old ServiceGateway fields of tasks submitted on its routes.
        self.document_url = document_url
        self.annotation_service_url = annotation_service_url
        self.misc = misc or {}
        self.submitted_at = submitted_at
        # A flag, not a threading.Event: nothing waits on it, a handler's thread only reads
        # it, and making an Event (a lock and a condition) took 6 µs of every run.
        self._cancelled = False

    def progress(self, percent: int, message: str | None = None) -> None:
        """Report how far along the job is, as an integer from 0 to 100."""
        if isinstance(percent, bool) or not isinstance(percent, int):
            raise TypeError(f"progress must be an int from 0 to 100, not {percent!r}")
        if not 0 <= percent <= 100:
            raise ValueError(f"progress must be from 0 to 100, not {percent}")
        if message is not None and not isinstance(message, str):
            raise TypeError(f"a progress message is a str, not {type(message).__name__}")
        self._sink(percent, message)

    def fetch(
        self,
        url: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = DEFAULT_TIMEOUT,
        progress: tuple[int, int] | None = None,
    ) -> bytes:
        """Download a document under the worker's URL policy (blocking: for thread and process
        handlers; async handlers use :meth:`afetch`).

        Refuses non-public addresses (checked at connect time and at every redirect) unless
        allow-listed, and caps the size and the time. With ``progress=(low, high)`` the
        download reports progress from ``low`` to ``high`` percent.
        """

        def report(received: int, total: int | None) -> None:
            if progress is not None and total:
                low, high = progress
                self.progress(low + (high - low) * min(received, total) // total)

        return fetch(
            url, policy=self.url_policy, max_bytes=max_bytes, timeout=timeout, on_chunk=report
        )

    async def afetch(
        self,
        url: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the download's own HTTP timeout
        progress: tuple[int, int] | None = None,
    ) -> bytes:
        """:meth:`fetch` on a thread, for async handlers."""
        return await asyncio.to_thread(
            self.fetch, url, max_bytes=max_bytes, timeout=timeout, progress=progress
        )

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled or ran out of time: stop at the next safe point."""
        return self._cancelled

    def _cancel(self) -> None:
        self._cancelled = True
