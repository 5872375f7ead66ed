"""A worker session's heartbeats: who it is and what it runs, every interval, and a last one
when it leaves; the same loop watches the session's channel."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

from aio_pika.abc import AbstractChannel

from ._progress import PUBLISH_ERRORS
from .wire.messages import Heartbeat
from .wire.supervisor import Supervisor

if TYPE_CHECKING:
    from ._outcomes import Reporter
    from ._worker import Worker

log = logging.getLogger("worker_sdk")


class Heartbeats:
    """Mixed into :class:`~worker_sdk._session.Session`."""

    worker: Worker
    worker_id: str
    host: str
    concurrency: int
    _channel: AbstractChannel | None
    _jobs: dict[asyncio.Task[None], uuid.UUID]
    _lost: asyncio.Event
    _reporter: Reporter

    def _beat(self, *, leaving: bool = False) -> Heartbeat:
        return Heartbeat(
            worker_id=self.worker_id,
            service=self.worker.service,
            version=self.worker.version,
            host=self.host,
            concurrency=self.concurrency,
            running=[] if leaving else [j for j in self._jobs.values() if j.int],
            leaving=leaving,
        )

    async def _goodbye(self, heartbeat: asyncio.Task[None]) -> None:
        """A clean stop: no more heartbeats, and a last one that says the worker is leaving,
        so that the gateway stops counting it at once (not after its heartbeat silence)."""
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        try:
            await self._reporter.publish(self._beat(leaving=True))
        except PUBLISH_ERRORS as exc:
            log.warning("goodbye not published (the gateway will notice the silence): %r", exc)

    async def _heartbeats(self) -> None:
        """Announce the worker, and watch its channel (the watchdog behind reconnect_after)."""
        interval = self.worker.heartbeat_interval
        supervisor = Supervisor(self.worker.reconnect_after)
        while True:
            if supervisor.due(self._channel is not None and self._channel.is_closed):
                self._lost.set()
            try:
                await self._reporter.publish(self._beat(), expiration=interval * 3)
            except PUBLISH_ERRORS as exc:
                log.warning("heartbeat not published: %r", exc)
            await asyncio.sleep(min(interval, supervisor.period))  # the period
