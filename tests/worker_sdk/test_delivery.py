"""Deliveries built as aio-pika builds them: every slot the same, on every kind of property;
and handed to consumers by a real broker, acked and rejected as aio-pika's own."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, DeliveryMode
from aio_pika.message import IncomingMessage
from aiormq.abc import DeliveredMessage
from pamqp import commands
from pamqp.header import ContentHeader

from tests.conftest import AMQP_URL
from worker_sdk.wire.delivery import Delivery, Queue
from worker_sdk.wire.supervisor import connect


class _Channel:
    is_closed = False


CHANNEL = _Channel()

# Each property: unset, set to a falsy value, set to a typical value.
VALUES: dict[str, tuple[Any, ...]] = {
    "content_type": (None, "", "application/json"),
    "content_encoding": (None, "", "gzip"),
    "headers": (None, {}, {"x-sg-refused": "unreadable: no", "n": 1}),
    "delivery_mode": (None, 1, 2),
    "priority": (None, 0, 9),
    "correlation_id": (None, "", "3f1c"),
    "reply_to": (None, "", "amq.rabbitmq.reply-to"),
    "expiration": (None, "0", "60000"),
    "message_id": (None, "", "a" * 32),
    "timestamp": (None, datetime(2026, 12, 3, 15, 46, 8, tzinfo=UTC)),
    "message_type": (None, "", "task"),
    "user_id": (None, "", "guest"),
    "app_id": (None, "", "sgw"),
    "cluster_id": (None, ""),  # pamqp builds no other (a decoded one may be: see below)
}


def _delivered(
    properties: commands.Basic.Properties,
    *,
    tag: int = 7,
    body: bytes = b'{"job": 1}',
    redelivered: bool = False,
) -> DeliveredMessage:
    deliver = commands.Basic.Deliver("ctag-1", tag, redelivered, "sg.tasks", "echo")
    header = ContentHeader(0, len(body), properties)
    return DeliveredMessage(delivery=deliver, header=header, body=body, channel=CHANNEL)  # type: ignore[arg-type]


def _slots(message: IncomingMessage) -> dict[str, Any]:
    """Every slot of an IncomingMessage and of the classes it derives from, by stored name."""
    held: dict[str, Any] = {}
    for cls in type(message).__mro__:
        for name in getattr(cls, "__slots__", ()):
            stored = f"_{cls.__name__.lstrip('_')}{name}" if name.startswith("__") else name
            held[stored] = getattr(message, stored, "<unset>")
    return held


def _cases() -> list[tuple[dict[str, Any], int, bool]]:
    """Every value of every property alone; all unset; all typical; all falsy; each of them
    with a delivery tag or none and with or without acks."""
    sets: list[dict[str, Any]] = [{}]
    for name, values in VALUES.items():
        sets.extend({name: value} for value in values if value is not None)
    sets.append({name: values[-1] for name, values in VALUES.items()})
    sets.append({name: values[1] for name, values in VALUES.items()})
    return [
        (props, tag, no_ack)
        for props in sets
        for tag, no_ack in itertools.product((0, 7), (False, True))
    ]


@pytest.mark.parametrize(("props", "tag", "no_ack"), _cases())
def test_a_delivery_holds_what_aio_pika_would_in_every_slot(
    props: dict[str, Any], tag: int, no_ack: bool
) -> None:
    delivered = _delivered(commands.Basic.Properties(**props), tag=tag)
    ours, theirs = Delivery(delivered, no_ack=no_ack), IncomingMessage(delivered, no_ack=no_ack)
    assert _slots(ours) == _slots(theirs)
    unset = [name for name, value in _slots(ours).items() if value == "<unset>"]
    assert unset == ["_loop", "_headers"]  # slots aio-pika's constructor leaves unset too
    assert ours.info() == theirs.info()
    assert ours.locked == theirs.locked
    assert ours.processed == theirs.processed


@pytest.mark.parametrize("body", [b"", b"x", bytes(range(256)) * 40])
def test_any_body_and_redelivery_flag_is_held_as_aio_pika_holds_it(body: bytes) -> None:
    delivered = _delivered(commands.Basic.Properties(), body=body, redelivered=True)
    assert _slots(Delivery(delivered)) == _slots(IncomingMessage(delivered))


def test_a_settled_delivery_is_locked_as_aio_pika_locks_it() -> None:
    delivered = _delivered(commands.Basic.Properties(message_type="task"))
    ours = Delivery(delivered, no_ack=True)
    with pytest.raises(ValueError, match="locked"):
        ours.type = "event"
    unsettled = Delivery(delivered)
    unsettled.type = "event"  # before it is settled, as aio-pika allows
    assert unsettled.type == "event"


def _bypassing(**values: Any) -> commands.Basic.Properties:
    """Properties holding values pamqp refuses to build (a lenient decoder can still yield
    them: the broker refuses them at publish, nothing else does)."""
    properties = commands.Basic.Properties()
    for name, value in values.items():
        object.__setattr__(properties, name, value)
    return properties


def test_a_cluster_id_pamqp_would_not_build_is_held_as_aio_pika_holds_it() -> None:
    delivered = _delivered(_bypassing(cluster_id="c1"))
    assert _slots(Delivery(delivered)) == _slots(IncomingMessage(delivered))
    assert Delivery(delivered).cluster_id == "c1"


def test_values_aio_pika_cannot_decode_are_read_as_none_not_raised() -> None:
    delivered = _delivered(_bypassing(expiration="soon", delivery_mode=3))
    with pytest.raises(ValueError, match="soon"):
        IncomingMessage(delivered)  # its consumer's callback would never be called
    ours = Delivery(delivered)
    assert ours.expiration is None
    assert ours.delivery_mode is DeliveryMode.NOT_PERSISTENT
    assert ours.body == b'{"job": 1}'


@pytest.mark.integration
async def test_consumers_of_a_connection_get_deliveries_they_ack_and_reject() -> None:
    """Through the broker: the queue is ours, each delivery reaches its callback as a
    Delivery, an ack settles it, a reject drops it, a requeue redelivers it, and the queue
    keeps its consumer for restoring after a reconnection until it is cancelled."""
    name = f"test-delivery-{uuid.uuid4().hex[:12]}"
    connection = await connect(AMQP_URL, name=name, timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(name, auto_delete=True)
        assert isinstance(queue, Queue)
        received: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

        async def take(message: AbstractIncomingMessage) -> None:
            await received.put(message)

        tag = await queue.consume(take)
        assert tag in queue._consumers  # restored after a reconnection, as aio-pika's
        for n in range(3):
            await channel.default_exchange.publish(
                aio_pika.Message(f"m{n}".encode(), message_id=f"id-{n}", type="task"), name
            )
        first, second, third = [await asyncio.wait_for(received.get(), 10) for _ in range(3)]
        assert all(isinstance(m, Delivery) for m in (first, second, third))
        assert [first.body, second.body, third.body] == [b"m0", b"m1", b"m2"]
        assert (first.message_id, first.type, first.routing_key) == ("id-0", "task", name)
        await first.ack()
        await second.reject(requeue=False)
        await third.reject(requeue=True)
        again = await asyncio.wait_for(received.get(), 10)
        assert (again.body, again.redelivered) == (b"m2", True)
        assert again.processed is False
        await again.ack()
        assert again.processed
        assert again.locked
        await queue.cancel(tag)
        assert tag not in queue._consumers
    finally:
        await connection.close()


@pytest.mark.integration
async def test_a_get_hands_back_a_delivery_as_aio_pika_would() -> None:
    """``get`` (a worker's ``--burst`` drain) returns a Delivery holding what aio-pika's own
    would, settled by its ack; ``no_ack`` ones come settled; an empty queue is ``None``, or
    ``QueueEmpty`` with ``fail``."""
    name = f"test-delivery-{uuid.uuid4().hex[:12]}"
    connection = await connect(AMQP_URL, name=name, timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(name, exclusive=True)  # never consumed
        for n in range(3):
            await channel.default_exchange.publish(
                aio_pika.Message(f"m{n}".encode(), message_id=f"id-{n}", priority=n), name
            )
        first = await queue.get(timeout=10)
        assert isinstance(first, Delivery)
        assert (first.body, first.message_id, first.message_count) == (b"m0", "id-0", 2)
        assert (first.routing_key, first.consumer_tag, first.processed) == (name, None, False)
        underlay = await channel.get_underlay_channel()
        got = await underlay.basic_get(name, no_ack=True, timeout=10)  # Basic.GetOk, as get's
        assert _slots(Delivery(got, no_ack=True)) == _slots(IncomingMessage(got, no_ack=True))
        await first.ack()
        assert first.processed
        last = await queue.get(no_ack=True, timeout=10)
        assert isinstance(last, Delivery)
        assert (last.body, last.message_count) == (b"m2", 0)
        assert last.processed
        assert last.locked
        assert await queue.get(fail=False, timeout=10) is None
        with pytest.raises(aio_pika.exceptions.QueueEmpty):
            await queue.get(timeout=10)
    finally:
        await connection.close()
