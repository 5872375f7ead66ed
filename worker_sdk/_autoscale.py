"""Local autoscaling: a worker's concurrency follows its backlog, between two bounds.

Like Celery's ``--autoscale``: the worker grows at once when tasks wait (in its queue, or
held by it beyond what it runs), and shrinks after it has had less work than its
concurrency for ``idle_after`` seconds, never below what it holds: a shrink cuts no job, it
only stops taking new ones.

RabbitMQ applies a prefetch count to the consumers started after it is set, never to one
that is consuming, so an autoscaled worker consumes with one consumer per unit of
concurrency, each with a prefetch of one: growing starts consumers, shrinking cancels idle
ones. The worker never holds more tasks than its concurrency, at any moment.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from .wire.messages import MAX_CONCURRENCY

log = logging.getLogger("worker_sdk")

# What a broker call may raise while the channel is closed or reopening.
BROKER_ERRORS = (AMQPError, ChannelInvalidStateError, ConnectionError, TimeoutError)

_BOUNDS = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class Autoscale:
    """The bounds of a worker's concurrency (``MIN:MAX``)."""

    minimum: int
    maximum: int

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum <= MAX_CONCURRENCY:
            raise ValueError(
                f"autoscale needs 1 <= MIN <= MAX <= {MAX_CONCURRENCY}, "
                f"not {self.minimum}:{self.maximum}"
            )

    @classmethod
    def parse(cls, text: str) -> Autoscale:
        """``"1:4"`` → ``Autoscale(1, 4)``; raises ``ValueError`` naming the expected form."""
        match = _BOUNDS.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not MIN:MAX (for example 1:4)")
        return cls(int(match[1]), int(match[2]))


class Scaler:
    """Decides a worker's concurrency from what it holds and what waits for it."""

    def __init__(self, bounds: Autoscale, *, idle_after: float) -> None:
        self.bounds = bounds
        self.idle_after = idle_after
        self._low_since: float | None = None

    def decide(self, current: int, *, held: int, waiting: int, now: float) -> int:
        """The concurrency to run at: ``held`` tasks are in the worker (running, or waiting
        for a slot), ``waiting`` ready in its queue; ``now`` a monotonic time."""
        wanted = max(self.bounds.minimum, min(self.bounds.maximum, held + waiting))
        if wanted >= current:
            self._low_since = None
            return wanted
        if self._low_since is None:
            self._low_since = now
        if now - self._low_since < self.idle_after:
            return current
        self._low_since = None
        return wanted


class Consumers:
    """One consumer of ``queue`` per unit of concurrency, each with a prefetch of one (set on
    the channel before the first)."""

    def __init__(
        self,
        queue: AbstractQueue,
        callback: Callable[[AbstractIncomingMessage], Awaitable[None]],
    ) -> None:
        self._queue = queue
        self._callback = callback
        self._tags: list[str] = []
        self._held: Counter[str] = Counter()
        self._cancelled = False

    @property
    def held(self) -> int:
        """Tasks delivered and not yet settled, whichever consumer took them."""
        return sum(self._held.values())

    def __len__(self) -> int:
        return len(self._tags)

    async def _deliver(self, delivery: AbstractIncomingMessage) -> None:
        if self._cancelled:
            # A consumer the broker still had (its cancel unanswered, or restored by a channel
            # that reopened): the task is left unsettled, and goes back with the connection.
            return
        tag = delivery.consumer_tag or ""
        self._held[tag] += 1
        try:
            await self._callback(delivery)
        finally:
            self._held[tag] -= 1
            if not self._held[tag]:
                del self._held[tag]

    async def resize(self, count: int) -> None:
        """Start consumers, or cancel idle ones (those holding nothing), until ``count``."""
        while len(self._tags) < count:
            self._tags.append(await self._queue.consume(self._deliver))
        idle = [t for t in self._tags if not self._held[t]]
        while len(self._tags) > count and idle:
            tag = idle.pop()
            self._tags.remove(tag)
            await self._queue.cancel(tag)

    async def cancel(self, within: float) -> None:
        """Cancel every consumer; what they hold is still settled by its job, and what comes
        after is left unsettled. On a channel that is gone (a broker out of reach) the broker
        is not asked, and one that does not answer within ``within`` seconds is given up on:
        a stop never hangs here."""
        self._cancelled = True
        try:
            if not self._queue.channel.is_closed:
                async with asyncio.timeout(within):
                    while self._tags:
                        await self._queue.cancel(self._tags[-1])
                        self._tags.pop()
        except BROKER_ERRORS as exc:
            log.warning("consumers not cancelled: the channel is gone (%r)", exc)
        finally:
            # A robust queue forgets a consumer (a reopened channel does not restore it) at
            # its cancel's first step, before the call waits for the broker: cut at once.
            for tag in self._tags:
                with suppress(*BROKER_ERRORS):
                    async with asyncio.timeout(0):
                        await self._queue.cancel(tag)
            self._tags.clear()


async def follow_backlog(
    consumers: Consumers,
    scaler: Scaler,
    *,
    ready: Callable[[], Awaitable[int]],
    concurrency: Callable[[], int],
    rescale: Callable[[int], None],
    interval: float,
    stop: asyncio.Event,
) -> None:
    """Every ``interval``, set the concurrency from the tasks held and those ``ready`` in the
    queue: ``rescale`` the rest of the worker (its pool of children), then the consumers.

    Returns once ``stop`` is set, between two checks: a check is never cut short, since a
    broker call cancelled before its answer makes aiormq close the channel, and with it go
    the tasks the worker holds (back to the queue, to run again elsewhere).
    """
    loop = asyncio.get_running_loop()
    while True:
        try:
            async with asyncio.timeout(interval):  # the period of the check
                await stop.wait()
            return
        except TimeoutError:
            pass
        try:
            waiting = await ready()
        except BROKER_ERRORS as exc:
            log.warning("autoscale: the queue's length is unknown (%r)", exc)
            continue
        if stop.is_set():  # asked to stop while the broker answered: resize nothing
            return
        current = concurrency()
        target = scaler.decide(current, held=consumers.held, waiting=waiting, now=loop.time())
        if target != current:
            log.info(
                "autoscale: concurrency %d -> %d (%d held, %d waiting)",
                current,
                target,
                consumers.held,
                waiting,
            )
            rescale(target)
        try:
            await consumers.resize(target)
        except BROKER_ERRORS as exc:  # the channel is down: the next check tries again
            log.warning("autoscale: consumers not resized (%r)", exc)


class Follower:
    """A backlog follower (``follow``: :func:`follow_backlog` given its stop event) in a
    task of its own, stopped between two checks."""

    def __init__(self, follow: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(follow(self._stop))

    async def stop(self, grace: float) -> BaseException | None:
        """Let the check in flight, if any, end (for at most ``grace`` seconds: a broker
        that does not answer is cut short all the same); return what ended the follower
        before, if anything did (a worker must not stop as if asked to)."""
        self._stop.set()
        await asyncio.wait({self.task}, timeout=grace)
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        return None if self.task.cancelled() else self.task.exception()


async def ready_tasks(channel: AbstractChannel, queue: str) -> int:
    """Tasks ready in ``queue`` (delivered ones are not counted), from a passive declare on
    the channel underneath: aio-pika answers a passive declare of a queue it knows from its
    cache, with the length it had then."""
    underlay = await channel.get_underlay_channel()
    declared = await underlay.queue_declare(queue, passive=True)
    return declared.message_count or 0
