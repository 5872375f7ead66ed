"""What a run tells the gateway while it runs: its start (late) and its progress (coalesced)."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .wire.publish import PublishLost, PublishRefused

log = logging.getLogger("worker_sdk")

PUBLISH_ERRORS = (PublishLost, PublishRefused)
_SURROGATE = re.compile("[\ud800-\udfff]")


class ProgressPump:
    """Coalesces a job's progress reports into at most one event per interval.

    ``offer`` may be called from any thread. The publishing task starts with the first
    report, so a job that reports nothing costs nothing.
    """

    def __init__(self, publish: Callable[[int, str | None, int], Awaitable[None]], interval: float):
        self._publish = publish
        self._interval = interval
        self._latest: tuple[int, str | None] | None = None
        self._seq = 0
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task: asyncio.Task[None] | None = None

    def offer(self, percent: int, message: str | None) -> None:
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.offer, percent, message)
            return
        if message is not None and not message.isascii():
            # A lone surrogate (a file name through os.fsdecode) cannot be sent as UTF-8.
            message = _SURROGATE.sub("\ufffd", message)
        self._latest = (percent, message)
        self._wake.set()
        if self._task is None:
            self._task = self._loop.create_task(self._pump())

    async def _send_latest(self) -> None:
        latest = self._latest
        if latest is None:
            return
        self._seq += 1
        # Cleared only once sent: a publish cut short (the pump cancelled when the job ends)
        # leaves the report for close() to send.
        await self._publish(latest[0], latest[1], self._seq)
        if self._latest is latest:
            self._latest = None

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._send_latest()
            except PUBLISH_ERRORS as exc:
                log.warning("progress event not published: %r", exc)
            await asyncio.sleep(self._interval)  # the coalescing window, not a synchronisation

    async def close(self) -> None:
        """Stop pumping and send the last report, if one is pending."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self._send_latest()
        except PUBLISH_ERRORS:
            log.warning("last progress event not published", exc_info=True)


class Announcer:
    """Publishes a run's ``started`` event late: after a delay, or before its first progress.

    A run that ends sooner sends only its terminal event, which then carries the start.
    """

    def __init__(self, publish: Callable[[], Coroutine[Any, Any, None]], delay: float) -> None:
        self._publish = publish
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(delay, self.now)

    def now(self) -> asyncio.Task[None]:
        """Announce now (once); the task that does it."""
        if self._task is None:
            self._timer.cancel()
            self._task = asyncio.create_task(self._publish())
        return self._task

    async def settle(self) -> bool:
        """Stop the timer and finish an announcement in flight; True if one was made."""
        self._timer.cancel()
        if self._task is None:
            return False
        try:
            await self._task
        except PUBLISH_ERRORS as exc:
            log.warning("start of a run not announced: %r", exc)
            return False
        return True
