"""The tap behind waiting requests: a request that comes while the tap is being unbound gets
it bound again before it goes on, so no waiter is left without the copies it waits for.
The tap is a stand-in here that holds its unbinding until the test lets it finish; the
broker's side is tests/integration (Prefer: wait through two gateway processes)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import UUID
from uuid import uuid4 as new_job_id

import pytest

from gateway.store import JobRecord
from gateway.watch import JobWatch, Mailbox
from tests.support import eventually

pytestmark = pytest.mark.timeout(10)


class Tap:
    timeout = 30.0

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


class SlowTap:
    """A tap whose binding waits for the test; ``cut`` says whether it was cancelled, ``fails``
    what its bind raises."""

    timeout = 30.0

    def __init__(self, *, fails: BaseException | None = None) -> None:
        self.binding = asyncio.Event()
        self.answer = asyncio.Event()
        self.fails = fails
        self.cut = False
        self.done = False
        self.binds = 0
        self.unbinds = 0
        self.unbound = asyncio.Event()

    async def attach(self) -> None:
        self.binds += 1
        self.binding.set()
        try:
            await self.answer.wait()  # the bind calls on their way to the broker
        except asyncio.CancelledError:
            self.cut = True
            raise
        if self.fails is not None:
            raise self.fails
        self.done = True

    async def detach(self) -> None:
        self.unbinds += 1
        self.unbound.set()


async def _leave_while_binding(watch: JobWatch, tap: SlowTap) -> None:
    """An event stream whose client leaves while the tap is being bound for it; then the
    broker answers the bind."""

    async def stream() -> None:
        async with watch.subscribe(new_job_id()):
            await asyncio.Event().wait()

    streaming = asyncio.create_task(stream())
    await tap.binding.wait()
    streaming.cancel()  # the client went away
    await asyncio.gather(streaming, return_exceptions=True)
    tap.answer.set()


async def test_a_stream_whose_client_leaves_while_the_tap_binds_does_not_cut_the_bind() -> None:
    tap = SlowTap()
    watch = JobWatch(tap, linger=60)
    await _leave_while_binding(watch, tap)
    async with watch.waiting(new_job_id()):  # the next waiter binds it (again) and goes on
        pass
    assert not tap.cut, "a broker call was cut short: aiormq closes its channel for that"
    assert tap.done
    await watch.close()


async def test_a_tap_that_cannot_be_bound_costs_the_waiter_its_early_answer_only() -> None:
    tap = SlowTap(fails=ConnectionError("the channel is closed"))
    tap.answer.set()
    watch = JobWatch(tap, linger=60)
    job = new_job_id()
    async with watch.waiting(job) as finished:  # no error: the submission goes on
        assert not finished.done()
    await watch.close()


async def test_a_bind_whose_caller_left_is_still_undone_once_nobody_waits() -> None:
    tap = SlowTap()
    watch = JobWatch(tap, linger=0)
    await _leave_while_binding(watch, tap)  # the bind ends after its caller left
    await asyncio.wait_for(tap.unbound.wait(), 5)
    assert (tap.binds, tap.unbinds) == (1, 1)
    await watch.close()


async def test_waiters_that_come_during_a_bind_share_it() -> None:
    tap = SlowTap()
    watch = JobWatch(tap, linger=60)

    async def wait_one() -> None:
        async with watch.waiting(new_job_id()):
            pass

    waiting = [asyncio.create_task(wait_one()) for _ in range(3)]
    await tap.binding.wait()
    tap.answer.set()
    await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert tap.binds == 1
    await watch.close()


async def test_a_bind_the_broker_cancels_is_a_failure_not_the_waiters_cancellation() -> None:
    tap = SlowTap(fails=asyncio.CancelledError())  # aiormq fails pending calls so
    tap.answer.set()
    watch = JobWatch(tap, linger=60)
    async with watch.waiting(new_job_id()) as finished:
        assert not finished.done()
    await watch.close()


async def test_a_hold_that_cannot_bind_the_tap_raises_and_holds_nothing() -> None:
    tap = SlowTap(fails=ConnectionError("the channel is closed"))
    tap.answer.set()
    watch = JobWatch(tap, linger=0)
    with pytest.raises(ConnectionError):
        await watch.hold()  # a recovery barrier must see its own passing, or wait
    tap.fails = None
    async with watch.waiting(new_job_id()):
        pass
    await asyncio.wait_for(tap.unbound.wait(), 5)  # nothing held: the tap is let go
    await watch.close()


async def test_a_bind_that_waited_out_a_detach_is_undone_when_its_waiter_has_left() -> None:
    tap = Tap()  # its unbinding waits for the test
    watch = JobWatch(tap, linger=0)
    async with watch.waiting(new_job_id()):
        pass
    await tap.unbinding.wait()  # the detach is on its way, holding the lock

    async def client() -> None:
        async with watch.waiting(new_job_id()):
            await asyncio.Event().wait()

    leaving = asyncio.create_task(client())
    await asyncio.sleep(0)  # one turn: its bind waits for the detach
    leaving.cancel()  # and its client leaves before the bind is made
    await asyncio.gather(leaving, return_exceptions=True)
    tap.unbound.set()  # the detach ends; the bind follows, for nobody

    async def let_go() -> bool:
        return tap.calls == ["attach", "detach", "attach", "detach"] and not tap.bound

    await eventually(let_go, within=5, what="the orphaned bind undone")
    await watch.close()


async def test_a_waiter_goes_on_without_a_bind_the_broker_is_slow_to_answer_and_leaves_it_be() -> (
    None
):
    """It waits the tap's timeout, then goes on (its early answer is lost, not its job); the
    bind is not cut short, which would close the tap's channel, and ends in its own time."""
    tap = SlowTap()
    tap.timeout = 0.05
    watch = JobWatch(tap, linger=0)
    async with watch.waiting(new_job_id()):
        assert tap.binds == 1
        assert not tap.cut
    async with watch.waiting(new_job_id()):  # the bind still on its way: no second one
        assert tap.binds == 1
    tap.answer.set()
    await tap.unbound.wait()  # bound, and unbound again once nobody waits
    assert tap.done
    assert not tap.cut
    await watch.close()


def _record(job_id: UUID, seq: int, **fields: object) -> JobRecord:
    now = datetime.now(UTC)
    return JobRecord.model_validate(
        {"id": job_id, "service": "echo", "owner": "alice", "created": now, "updated": now}
        | {"seq": seq, **fields}
    )


async def test_a_mailbox_holds_the_latest_record_of_each_job_however_fast_they_change() -> None:
    """A consumer that lags (a client that stopped reading its stream) is owed each job's
    latest state only: the mailbox holds one record per job, not one per change."""
    box = Mailbox()
    first, second = new_job_id(), new_job_id()
    for seq in range(1, 10_001):
        box.put_nowait(_record(first, seq, progress=seq % 100, inputs={"pad": "x" * 100}))
        if seq == 5:
            box.put_nowait(_record(second, 1))
    assert len(box) == 2
    latest = await box.get()
    assert (latest.id, latest.seq) == (first, 10_000)  # the job that changed first, first
    assert (await box.get()).id == second
    assert len(box) == 0


async def test_a_record_older_than_the_one_waiting_is_dropped() -> None:
    box = Mailbox()
    job = new_job_id()
    box.put_nowait(_record(job, 7, status="running"))
    box.put_nowait(_record(job, 6))  # come late: the job's state before
    assert (await box.get()).seq == 7
    box.put_nowait(_record(job, 6))  # once taken, any record is news again
    assert (await box.get()).seq == 6


async def test_a_consumer_waiting_on_an_empty_mailbox_is_woken() -> None:
    box = Mailbox()
    job = new_job_id()
    getting = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    assert not getting.done()
    box.put_nowait(_record(job, 1))
    assert (await getting).seq == 1
