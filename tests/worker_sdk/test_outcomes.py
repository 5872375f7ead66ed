"""The outcome sender on its own: which terminal events share a message, and what each
caller learns. The publishes are stand-ins that hold their confirm until the test releases it;
tests/integration/test_outcomes.py runs the same through the real broker."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from worker_sdk._outcomes import OutcomeSender
from worker_sdk.wire import Outcomes, Succeeded, TerminalEvent, parse_event
from worker_sdk.wire.publish import PublishLost

pytestmark = pytest.mark.timeout(10)


def _ended(result: object = None) -> Succeeded:
    return Succeeded(
        job_id=uuid.uuid4(), service="echo", run_id=uuid.uuid4(), worker_id="w", result=result
    )


class Broker:
    """Records what is published; each publish waits until :meth:`confirm` (or fails)."""

    def __init__(self) -> None:
        self.published: list[list[uuid.UUID]] = []
        self.gates: list[asyncio.Future[None]] = []
        self.arrived = asyncio.Event()

    async def _held(self, ids: list[uuid.UUID]) -> None:
        self.published.append(ids)
        gate = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        self.arrived.set()
        await gate

    async def one(self, event: TerminalEvent) -> None:
        await self._held([event.job_id])

    async def many(self, bodies: list[bytes]) -> None:
        outcomes = parse_event(Outcomes.encode("echo", "w", bodies))
        assert isinstance(outcomes, Outcomes)
        await self._held([e.job_id for e in outcomes.events])

    async def nth(self, n: int) -> asyncio.Future[None]:
        """The confirm of the ``n``-th publish (from 1), once it is made."""
        while len(self.gates) < n:
            self.arrived.clear()
            await self.arrived.wait()
        return self.gates[n - 1]


async def test_an_idle_sender_sends_at_once_and_a_busy_one_batches() -> None:
    broker = Broker()
    sender = OutcomeSender(broker.one, broker.many)
    first = _ended()
    sending = asyncio.create_task(sender.send(first, batchable=True))
    gate = await broker.nth(1)
    assert broker.published == [[first.job_id]]  # alone, without waiting for company

    later = [_ended() for _ in range(5)]
    waiting = [asyncio.create_task(sender.send(e, batchable=True)) for e in later]
    await asyncio.sleep(0)  # let them queue behind the publish in flight
    assert not any(w.done() for w in waiting)
    gate.set_result(None)
    await sending
    (await broker.nth(2)).set_result(None)
    await asyncio.gather(*waiting)
    assert broker.published == [[first.job_id], [e.job_id for e in later]]
    assert (sender.ends, sender.messages) == (6, 2)


async def test_events_of_one_turn_leave_together() -> None:
    broker = Broker()
    sender = OutcomeSender(broker.one, broker.many)
    ended = [_ended() for _ in range(3)]
    sending = [asyncio.create_task(sender.send(e, batchable=True)) for e in ended]
    (await broker.nth(1)).set_result(None)
    await asyncio.gather(*sending)
    assert broker.published == [[e.job_id for e in ended]]


async def test_a_failed_publish_fails_each_of_its_events_and_not_the_next() -> None:
    broker = Broker()
    sender = OutcomeSender(broker.one, broker.many)
    first = asyncio.create_task(sender.send(_ended(), batchable=True))
    gate = await broker.nth(1)
    batch = [asyncio.create_task(sender.send(_ended(), batchable=True)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set_result(None)
    await first
    (await broker.nth(2)).set_exception(PublishLost("gone"))
    for waiting in batch:
        with pytest.raises(PublishLost):
            await waiting
    after = asyncio.create_task(sender.send(_ended(), batchable=True))
    (await broker.nth(3)).set_result(None)
    await after  # the sender goes on after a failure


async def test_batches_keep_to_their_count_and_size() -> None:
    broker = Broker()
    sender = OutcomeSender(broker.one, broker.many, max_events=4, max_bytes=1900)
    first = asyncio.create_task(sender.send(_ended(), batchable=True))
    gate = await broker.nth(1)
    big = _ended("x" * 1500)
    small = [_ended() for _ in range(6)]
    queued = [*small[:2], big, *small[2:]]
    waiting = [asyncio.create_task(sender.send(e, batchable=True)) for e in queued]
    await asyncio.sleep(0)
    gate.set_result(None)
    await first
    for n in (2, 3, 4):
        (await broker.nth(n)).set_result(None)
    await asyncio.gather(*waiting)
    sizes = [len(ids) for ids in broker.published[1:]]
    assert sizes == [2, 1, 4]  # the large one alone, then at most 4
    assert broker.published[2] == [big.job_id]
    assert sorted(j for ids in broker.published[1:] for j in ids) == sorted(
        e.job_id for e in queued
    )


async def test_a_task_of_an_older_gateway_is_reported_alone() -> None:
    broker = Broker()
    sender = OutcomeSender(broker.one, broker.many)
    first = asyncio.create_task(sender.send(_ended(), batchable=True))
    await broker.nth(1)
    alone = _ended()
    sending = asyncio.create_task(sender.send(alone, batchable=False))
    await broker.nth(2)  # sent beside the publish in flight, not queued behind it
    assert broker.published[-1] == [alone.job_id]
    for pending in broker.gates:
        pending.set_result(None)
    await asyncio.gather(first, sending)


async def test_a_cancelled_sender_cancels_its_waiters() -> None:
    broker = Broker()
    sender = OutcomeSender(broker.one, broker.many)
    first = asyncio.create_task(sender.send(_ended(), batchable=True))
    await broker.nth(1)
    queued = asyncio.create_task(sender.send(_ended(), batchable=True))
    await asyncio.sleep(0)
    assert sender._flusher is not None
    sender._flusher.cancel()
    for waiting in (first, queued):
        with pytest.raises(asyncio.CancelledError):
            await waiting


def test_the_batch_body_is_the_model_with_the_events_as_serialised() -> None:
    ended = [_ended({"n": i}) for i in range(3)]
    body = Outcomes.encode("echo", "w-1", [e.to_bytes() for e in ended])
    assert json.loads(body)["events"] == [json.loads(e.to_bytes()) for e in ended]
    parsed = parse_event(body)
    assert isinstance(parsed, Outcomes)
    assert parsed.service == "echo"
    assert parsed.worker_id == "w-1"
    assert list(parsed.events) == ended


async def test_an_end_waits_for_the_other_tasks_the_worker_holds() -> None:
    broker = Broker()
    held = 3
    sender = OutcomeSender(broker.one, broker.many, in_flight=lambda: held, linger=60)
    ended = [_ended() for _ in range(3)]
    sending = [asyncio.create_task(sender.send(ended[0], batchable=True))]
    for event in ended[1:]:  # the others end in later turns
        await asyncio.sleep(0)
        assert broker.published == []
        sending.append(asyncio.create_task(sender.send(event, batchable=True)))
    (await broker.nth(1)).set_result(None)
    await asyncio.gather(*sending)
    assert broker.published == [[e.job_id for e in ended]]


async def test_the_linger_bounds_the_wait_for_tasks_that_do_not_end() -> None:
    broker = Broker()
    sender = OutcomeSender(broker.one, broker.many, in_flight=lambda: 5, linger=0.01)
    alone = _ended()
    sending = asyncio.create_task(sender.send(alone, batchable=True))
    (await broker.nth(1)).set_result(None)  # the four others never end: it leaves alone
    await sending
    assert broker.published == [[alone.job_id]]
