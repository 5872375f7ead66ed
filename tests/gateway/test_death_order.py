"""Deaths wait for the events before them: released together by a round that began after
they came, held while the events queue holds anything ready, and released at the limit."""

from __future__ import annotations

import asyncio

import pytest

from gateway.dead_letters import DeathOrder


class Queue:
    """The events queue's ready count, as the broker would tell it, and how often asked."""

    def __init__(self, ready: int = 0) -> None:
        self.ready = ready
        self.asked = 0
        self.down = False
        self._asking = asyncio.Condition()

    async def __call__(self) -> int:
        async with self._asking:
            self.asked += 1
            self._asking.notify_all()
        if self.down:
            raise ConnectionError("the broker does not answer")
        return self.ready

    async def asked_at_least(self, times: int) -> None:
        async with self._asking:
            await asyncio.wait_for(self._asking.wait_for(lambda: self.asked >= times), 5)


async def test_waiting_deaths_are_released_together_by_one_round() -> None:
    queue = Queue()
    order = DeathOrder(queue, grace=0.01, limit=10)
    await asyncio.wait_for(asyncio.gather(*(order.wait() for _ in range(100))), 5)
    assert queue.asked == 2  # one round: nothing ready, the grace, nothing ready again


async def test_a_death_waits_while_events_are_ready() -> None:
    queue = Queue(ready=3)
    order = DeathOrder(queue, grace=0.01, limit=10)
    waiting = asyncio.create_task(order.wait())
    await queue.asked_at_least(3)  # looked, and looked again: still events before it
    assert not waiting.done()
    queue.ready = 0
    await asyncio.wait_for(waiting, 5)


async def test_a_broker_that_cannot_tell_holds_deaths_back() -> None:
    queue = Queue()
    queue.down = True
    order = DeathOrder(queue, grace=0.01, limit=10)
    waiting = asyncio.create_task(order.wait())
    await queue.asked_at_least(2)
    assert not waiting.done()
    queue.down = False
    await asyncio.wait_for(waiting, 5)


async def test_a_death_is_released_at_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    order = DeathOrder(Queue(ready=1), grace=0.01, limit=0.1)
    await asyncio.wait_for(order.wait(), 5)
    assert "waited 0.1s for the events before it" in caplog.text


async def test_a_death_that_comes_during_a_round_waits_for_the_next() -> None:
    queue = Queue()
    order = DeathOrder(queue, grace=0.2, limit=10)
    first = asyncio.create_task(order.wait())
    await queue.asked_at_least(1)  # the round has begun: its grace runs
    second = asyncio.create_task(order.wait())
    await asyncio.wait_for(first, 5)
    assert not second.done()
    await asyncio.wait_for(second, 5)
    assert queue.asked == 4  # two rounds
