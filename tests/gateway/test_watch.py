"""The tap behind waiting requests: a request that comes while the tap is being unbound gets
it bound again before it goes on, so no waiter is left without the copies it waits for.
The tap is a stand-in here that holds its unbinding until the test lets it finish; the
broker's side is tests/integration (Prefer: wait through two gateway processes)."""

from __future__ import annotations

import asyncio
from uuid import uuid4 as new_job_id

import pytest

from gateway.watch import JobWatch

pytestmark = pytest.mark.timeout(10)


class Tap:
    def __init__(self) -> None:
        self.bound = False
        self.calls: list[str] = []
        self.unbinding = asyncio.Event()
        self.unbound = asyncio.Event()

    async def attach(self) -> None:
        self.calls.append("attach")
        self.bound = True

    async def detach(self) -> None:
        self.calls.append("detach")
        self.unbinding.set()
        await self.unbound.wait()  # the unbind calls on their way to the broker
        self.bound = False


async def test_a_waiter_that_comes_during_a_detach_binds_the_tap_again() -> None:
    tap = Tap()
    watch = JobWatch(tap, linger=0)
    async with watch.waiting(new_job_id()):
        assert tap.bound
    await tap.unbinding.wait()  # nobody waits: the detach has begun

    entered = asyncio.Event()

    async def waiter() -> None:
        async with watch.waiting(new_job_id()):
            entered.set()
            assert tap.bound, "a waiter went on while its tap was unbound"
            await asyncio.sleep(0)

    waiting = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    assert not entered.is_set()  # it waits for the detach to finish first
    tap.unbound.set()
    await waiting
    assert tap.calls == ["attach", "detach", "attach"]
    await watch.close()
