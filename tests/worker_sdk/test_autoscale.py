"""The autoscaler's decisions: grow at once on a backlog, shrink after a quiet spell, never
below what the worker holds; and its follower, stopped between two checks, never in the middle
of a broker call (cancelling one closes the channel that holds the worker's tasks)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractQueue
from aio_pika.exceptions import ChannelInvalidStateError

from worker_sdk._autoscale import Autoscale, Consumers, Follower, Scaler, follow_backlog


class FakeQueue:
    """Consumers' calls on a queue; ``closed``: each raises as on a channel that is gone."""

    def __init__(self, *, closed: bool = False) -> None:
        self.closed = closed
        self.consuming: list[str] = []
        self.callbacks: dict[str, Any] = {}
        self.channel = SimpleNamespace(is_closed=False)  # a connection out of reach: True
        self.silent = False  # the broker never answers a cancel

    async def consume(self, callback: Any) -> str:
        tag = f"ctag{len(self.consuming)}"
        self.consuming.append(tag)
        self.callbacks[tag] = callback
        return tag

    async def cancel(self, tag: str) -> None:
        if self.silent:
            await asyncio.Event().wait()
        if self.closed:
            raise ChannelInvalidStateError("Channel closed by RPC timeout")
        self.consuming.remove(tag)


async def _nothing(delivery: Any) -> None:
    return None


def _follower(
    ready: Callable[[], Awaitable[int]],
    *,
    consumers: Consumers | None = None,
    rescale: Callable[[int], None] = lambda _: None,
    concurrency: int = 1,
    interval: float = 0.01,
) -> Follower:
    """A follower of the backlog ``ready`` gives, on fake consumers unless given some."""
    held = consumers or Consumers(cast(AbstractQueue, FakeQueue()), _nothing)
    return Follower(
        lambda stop: follow_backlog(
            held,
            Scaler(Autoscale(1, 4), idle_after=10),
            ready=ready,
            concurrency=lambda: concurrency,
            rescale=rescale,
            interval=interval,
            stop=stop,
        )
    )


def test_bounds_are_read_as_min_colon_max() -> None:
    assert Autoscale.parse("1:4") == Autoscale(1, 4)
    assert Autoscale.parse(" 2 : 2 ") == Autoscale(2, 2)
    for bad in ("4", "4:1", "0:3", "a:b", "1:4:5", ""):
        with pytest.raises(ValueError, match="MIN"):
            Autoscale.parse(bad)


def test_a_backlog_grows_the_concurrency_at_once_up_to_the_maximum() -> None:
    scaler = Scaler(Autoscale(1, 4), idle_after=10)
    assert scaler.decide(1, held=1, waiting=2, now=0) == 3
    assert scaler.decide(3, held=3, waiting=50, now=0.1) == 4


def test_the_concurrency_shrinks_only_after_a_quiet_spell() -> None:
    scaler = Scaler(Autoscale(1, 4), idle_after=10)
    assert scaler.decide(4, held=0, waiting=0, now=100) == 4
    assert scaler.decide(4, held=0, waiting=0, now=109) == 4
    assert scaler.decide(4, held=0, waiting=0, now=110) == 1


def test_a_shrink_never_goes_below_what_the_worker_holds() -> None:
    scaler = Scaler(Autoscale(1, 4), idle_after=1)
    scaler.decide(4, held=2, waiting=0, now=0)
    assert scaler.decide(4, held=2, waiting=0, now=5) == 2


def test_work_in_between_restarts_the_quiet_spell() -> None:
    scaler = Scaler(Autoscale(1, 4), idle_after=10)
    scaler.decide(4, held=0, waiting=0, now=0)
    assert scaler.decide(4, held=4, waiting=0, now=5) == 4  # busy again
    assert scaler.decide(4, held=0, waiting=0, now=11) == 4  # quiet for 0 s, not 11
    assert scaler.decide(4, held=0, waiting=0, now=21) == 1


async def test_a_stop_lets_the_check_in_flight_end() -> None:
    asked, answer = asyncio.Event(), asyncio.Event()
    finished: list[bool] = []

    async def ready() -> int:  # a passive declare the broker answers late
        asked.set()
        try:
            await answer.wait()
        except asyncio.CancelledError:
            finished.append(False)
            raise
        finished.append(True)
        return 10  # a backlog: a check that went on would grow the worker

    queue = FakeQueue()
    consumers = Consumers(cast(AbstractQueue, queue), _nothing)
    await consumers.resize(2)
    follower = _follower(ready, consumers=consumers, concurrency=2)
    await asyncio.wait_for(asked.wait(), 5)
    stopping = asyncio.create_task(follower.stop(grace=30))
    await asyncio.sleep(0)  # the stop is asked for while the check waits on the broker
    assert not stopping.done()
    answer.set()
    await asyncio.wait_for(stopping, 5)
    assert finished == [True]
    assert follower.task.done()
    assert not follower.task.cancelled()
    assert len(queue.consuming) == 2  # stopped: its answer changed nothing


async def test_a_stop_between_checks_ends_the_follower_at_once() -> None:
    calls: list[int] = []

    async def ready() -> int:
        calls.append(1)
        return 0

    follower = _follower(ready, interval=3600)
    await asyncio.wait_for(follower.stop(grace=30), 5)
    assert follower.task.done()
    assert not follower.task.cancelled()
    assert calls == []


async def test_a_check_the_broker_never_answers_is_cut_short_after_the_grace() -> None:
    asked = asyncio.Event()

    async def ready() -> int:
        asked.set()
        await asyncio.Event().wait()  # never answered
        return 0

    follower = _follower(ready)
    await asyncio.wait_for(asked.wait(), 5)
    await asyncio.wait_for(follower.stop(grace=0.05), 5)
    assert follower.task.cancelled()


async def test_consumers_on_a_channel_that_is_gone_are_dropped_without_an_error() -> None:
    queue = FakeQueue()
    consumers = Consumers(cast(AbstractQueue, queue), _nothing)
    await consumers.resize(3)
    queue.closed = True
    await consumers.cancel(within=5)
    assert len(consumers) == 0


async def test_consumers_of_a_broker_out_of_reach_are_dropped_without_asking_it() -> None:
    queue = FakeQueue()
    consumers = Consumers(cast(AbstractQueue, queue), _nothing)
    await consumers.resize(2)
    queue.channel.is_closed = True  # aio-pika would wait for the connection to come back
    queue.silent = True
    await asyncio.wait_for(consumers.cancel(within=60), 5)
    assert len(consumers) == 0


async def test_a_cancel_the_broker_never_answers_is_given_up_on() -> None:
    queue = FakeQueue()
    consumers = Consumers(cast(AbstractQueue, queue), _nothing)
    await consumers.resize(2)
    queue.silent = True
    await asyncio.wait_for(consumers.cancel(within=0.05), 5)
    assert len(consumers) == 0


async def test_a_delivery_after_the_cancel_is_left_unsettled_and_not_run() -> None:
    queue = FakeQueue()
    ran: list[object] = []

    async def run(delivery: Any) -> None:
        ran.append(delivery)

    consumers = Consumers(cast(AbstractQueue, queue), run)
    await consumers.resize(1)
    (deliver,) = queue.callbacks.values()
    first = SimpleNamespace(consumer_tag="ctag0")
    await deliver(first)
    queue.silent = True  # the broker does not answer the cancel: the consumer stays
    await asyncio.wait_for(consumers.cancel(within=0.05), 5)
    await deliver(SimpleNamespace(consumer_tag="ctag0"))
    assert ran == [first]
    assert consumers.held == 0


async def test_a_follower_that_failed_says_so_when_stopped() -> None:
    async def ready() -> int:
        return 10  # a backlog: the follower grows the worker

    def rescale(_: int) -> None:
        raise OSError("cannot start another child process")

    follower = _follower(ready, rescale=rescale)
    await asyncio.wait_for(asyncio.wait({follower.task}), 5)  # it ended on its own
    failure = await follower.stop(grace=5)  # the worker does not stop as if asked to
    assert isinstance(failure, OSError)
    assert "child process" in str(failure)
