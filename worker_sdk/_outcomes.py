"""Reporting runs' ends: the terminal events of tasks that end together share one message.

An end waits, at most ``linger`` seconds, for the ends of the other tasks the worker holds;
the ends that come meanwhile, and those that follow while a report is on its way to the
broker, leave together in an ``outcomes`` message: one publish, one confirm and one delivery
to the gateway for all of them. A worker that holds no other task sends its end alone, at
once, so batching costs an unhurried worker no latency; a busy one sends fewer, larger
messages.

Every caller still learns the fate of its own event: :meth:`OutcomeSender.send` returns once
the message holding it is confirmed and raises what its publish raised, so a task is acked
only after its outcome is confirmed, whichever message carried it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aio_pika.abc import AbstractExchange

from .wire.messages import MAX_OUTCOMES, BarrierPassed, Heartbeat, JobEvent, Outcomes, TerminalEvent
from .wire.publish import outgoing, publish

# A batch's events' bodies add up to at most this many bytes; a larger event goes alone.
# Far below the smallest broker limit the gateway accepts (1 MiB), whatever else is set.
BATCH_BYTES = 64 * 1024


@dataclass(slots=True)
class _Pending:
    event: TerminalEvent
    body: bytes
    confirmed: asyncio.Future[None]


PublishOne = Callable[[TerminalEvent], Awaitable[None]]
PublishMany = Callable[[list[bytes]], Awaitable[None]]


class OutcomeSender:
    """Sends terminal events, alone when nothing else is on its way, else batched.

    ``publish_one`` publishes an event as its own message; ``publish_many`` publishes the
    bodies of several (each from ``to_bytes``) as one ``outcomes`` message. Both wait for
    the broker's confirm and raise the SDK's publish errors.
    """

    def __init__(
        self,
        publish_one: PublishOne,
        publish_many: PublishMany,
        *,
        max_events: int = MAX_OUTCOMES,
        max_bytes: int = BATCH_BYTES,
        in_flight: Callable[[], int] = lambda: 0,
        linger: float = 0.0,
    ) -> None:
        """``in_flight``: how many tasks the worker holds (those whose ends are pending
        included); ``linger``: how long an end may wait for theirs."""
        self._publish_one = publish_one
        self._in_flight = in_flight
        self._linger = linger
        self._arrived = asyncio.Event()
        self._publish_many = publish_many
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._pending: deque[_Pending] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self.ends = 0  # terminal events sent
        self.messages = 0  # in this many messages

    async def send(self, event: TerminalEvent, *, batchable: bool) -> None:
        """Publish ``event`` and return once the broker confirmed the message holding it.

        ``batchable``: the task's gateway reads ``outcomes`` messages
        (:attr:`~worker_sdk.wire.Task.batch_outcomes`); otherwise the event goes alone.
        """
        self.ends += 1
        if not batchable:
            self.messages += 1
            await self._publish_one(event)
            return
        confirmed = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(event, event.to_bytes(), confirmed))
        self._arrived.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await confirmed

    async def _flush(self) -> None:
        while self._pending:
            await self._await_company()
            batch = self._take()
            try:
                self.messages += 1
                if len(batch) == 1:
                    await self._publish_one(batch[0].event)
                else:
                    await self._publish_many([p.body for p in batch])
            except asyncio.CancelledError:  # nothing more leaves from here
                for pending in (*batch, *self._pending):
                    pending.confirmed.cancel()
                self._pending.clear()
                raise
            except Exception as exc:  # noqa: BLE001 - each waiter learns its publish failed
                for pending in batch:
                    if not pending.confirmed.done():
                        pending.confirmed.set_exception(exc)
                continue
            for pending in batch:
                if not pending.confirmed.done():
                    pending.confirmed.set_result(None)

    async def _await_company(self) -> None:
        """Wait, within the linger, while tasks the worker holds have not ended yet."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._linger
        while len(self._pending) < min(self._in_flight(), self._max_events):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                return

    def _take(self) -> list[_Pending]:
        """The next batch: the oldest event, then those after it that fit."""
        batch = [self._pending.popleft()]
        size = len(batch[0].body)
        while self._pending and len(batch) < self._max_events:
            following = self._pending[0]
            if size + len(following.body) > self._max_bytes:
                break
            size += len(following.body)
            batch.append(self._pending.popleft())
        return batch

    async def close(self) -> None:
        """Wait for the reports on their way (their callers wait too)."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)


class Reporter:
    """What a worker session publishes on the events exchange: each event on its own, and
    the terminal events through an :class:`OutcomeSender` (:attr:`outcomes`)."""

    def __init__(
        self,
        service: str,
        worker_id: str,
        timeout: float,
        *,
        in_flight: Callable[[], int] = lambda: 0,
        linger: float = 0.0,
    ) -> None:
        self.service = service
        self.worker_id = worker_id
        self.timeout = timeout
        self.exchange: AbstractExchange | None = None  # set once the session's channel is open
        self.outcomes = OutcomeSender(
            self.publish, self._publish_many, in_flight=in_flight, linger=linger
        )

    async def publish(
        self, event: JobEvent | Heartbeat | BarrierPassed, *, expiration: float | None = None
    ) -> None:
        """Publish one event (routing key ``<service>.<kind>``) and wait for its confirm."""
        assert self.exchange is not None
        job_id = getattr(event, "job_id", None)
        sent = outgoing(
            event.to_bytes(),
            type=event.kind,
            correlation_id=str(job_id) if job_id is not None else None,
            expiration=expiration,
        )
        await publish(self.exchange, sent, f"{event.service}.{event.kind}", timeout=self.timeout)

    async def _publish_many(self, bodies: list[bytes]) -> None:
        assert self.exchange is not None
        body = Outcomes.encode(self.service, self.worker_id, bodies)
        await publish(
            self.exchange,
            outgoing(body, type="outcomes"),
            f"{self.service}.outcomes",
            timeout=self.timeout,
        )
