"""Deliveries handed to consumers as aio-pika's ``IncomingMessage``, for less.

For every delivery, aio-pika builds an ``IncomingMessage`` through ``Message.__init__``, whose
26 attribute sets each go through a Python-level ``__setattr__`` that checks a lock (35 µs of
every delivery, against 10 µs for the same object built here), then runs the consumer's
callback in a task of its own, inside the task aiormq already runs for the delivery. Every
task a worker runs and every event the gateway applies pays both.

A connection from :func:`~worker_sdk.wire.supervisor.connect` declares its queues as
:class:`Queue`, whose consumers, and whose ``get`` (a worker's ``--burst`` drain), are handed
a :class:`Delivery`: an ``IncomingMessage`` whose
every slot holds what aio-pika's own constructor puts there (a test compares them, slot by
slot, over every kind of property), awaited in aiormq's task. Acks, rejects, the lock once
settled and the robust connection's restoring of consumers after a reconnection are aio-pika's,
unchanged. Two values aio-pika cannot decode, and with which it leaves the delivery unacked
and its callback never called (holding a prefetch slot until the channel closes), are read
as none instead: an ``expiration`` that is not a number of milliseconds, a ``delivery_mode``
that is neither 1 nor 2 (RabbitMQ refuses both at publish; the decoding does not rely on it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Literal, overload

import aiormq
from aio_pika.abc import AbstractIncomingMessage, ConsumerTag, DeliveryMode, TimeoutType
from aio_pika.exceptions import QueueEmpty
from aio_pika.message import IncomingMessage
from aio_pika.robust_channel import RobustChannel
from aio_pika.robust_connection import RobustConnection
from aio_pika.robust_queue import RobustQueue
from aiormq.abc import DeliveredMessage
from pamqp.common import Arguments

Callback = Callable[[AbstractIncomingMessage], Awaitable[Any]]

_set = object.__setattr__  # past Message.__setattr__'s lock check: nothing is locked yet
_MODES = {1: DeliveryMode.NOT_PERSISTENT, 2: DeliveryMode.PERSISTENT}


def _expiration(value: object) -> float | None:
    """aio-pika's ``decode_expiration``: milliseconds as a string, in seconds."""
    if not isinstance(value, str):
        return None
    try:
        return float(value) / 1000
    except ValueError:
        return None


def _text(value: object) -> str | None:
    """aio-pika's ``optional(value, str)``: an empty string is none."""
    return str(value) if value else None


class Delivery(IncomingMessage):
    """aio-pika's ``IncomingMessage`` of a delivery, with its slots set directly."""

    __slots__ = ()

    def __init__(self, message: DeliveredMessage, no_ack: bool = False) -> None:
        properties = message.header.properties
        body = message.body if isinstance(message.body, bytes) else bytes(message.body)
        mode = properties.delivery_mode
        tag = message.delivery_tag
        settled = bool(no_ack or not tag)
        _set(self, "_IncomingMessage__channel", message.channel)
        _set(self, "_IncomingMessage__no_ack", no_ack)
        _set(self, "_IncomingMessage__processed", settled)
        _set(self, "_Message__lock", settled)
        _set(self, "body", body)
        _set(self, "body_size", len(body))
        _set(self, "headers", properties.headers or {})
        _set(self, "content_type", properties.content_type)
        _set(self, "content_encoding", properties.content_encoding)
        _set(self, "delivery_mode", _MODES.get(mode or 1, DeliveryMode.NOT_PERSISTENT))
        _set(self, "priority", int(properties.priority) if properties.priority else 0)
        _set(self, "correlation_id", _text(properties.correlation_id))
        _set(self, "reply_to", _text(properties.reply_to))
        _set(self, "expiration", _expiration(properties.expiration))
        _set(self, "message_id", _text(properties.message_id))
        _set(self, "timestamp", properties.timestamp)
        _set(self, "type", _text(properties.message_type))
        _set(self, "user_id", _text(properties.user_id))
        _set(self, "app_id", _text(properties.app_id))
        _set(self, "cluster_id", properties.cluster_id)
        _set(self, "consumer_tag", message.consumer_tag)
        _set(self, "delivery_tag", tag)
        _set(self, "exchange", message.exchange)
        _set(self, "message_count", message.message_count)
        _set(self, "redelivered", message.redelivered)
        _set(self, "routing_key", message.routing_key)


async def _deliver(callback: Callback, no_ack: bool, message: DeliveredMessage) -> None:
    await callback(Delivery(message, no_ack=no_ack))


class Queue(RobustQueue):
    """aio-pika's robust queue, whose consumers are handed a :class:`Delivery`."""

    __slots__ = ()

    async def consume(
        self,
        callback: Callback,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: Arguments = None,
        consumer_tag: ConsumerTag | None = None,
        timeout: TimeoutType = None,  # noqa: ASYNC109 - aio-pika's signature, passed on
        robust: bool = True,
    ) -> ConsumerTag:
        """As aio-pika's ``RobustQueue.consume``, with ``callback`` awaited in aiormq's task
        for each delivery; a robust consumer is consumed again after a reconnection."""
        channel: aiormq.abc.AbstractChannel = await self.channel.get_underlay_channel()
        consumed = await channel.basic_consume(
            queue=self.name,
            consumer_callback=partial(_deliver, callback, no_ack),
            exclusive=exclusive,
            no_ack=no_ack,
            arguments=arguments,
            consumer_tag=consumer_tag,
            timeout=timeout,
        )
        tag = consumed.consumer_tag
        if tag is None:  # as aio-pika: pamqp's type allows it, the broker never sends it
            raise RuntimeError("Consumer tag is None")
        if robust:
            self._consumers[tag] = {
                "callback": callback,
                "no_ack": no_ack,
                "exclusive": exclusive,
                "arguments": arguments,
            }
        return tag

    @overload
    async def get(
        self,
        *,
        no_ack: bool = False,
        fail: Literal[True] = ...,
        timeout: TimeoutType = ...,  # noqa: ASYNC109
    ) -> Delivery: ...

    @overload
    async def get(
        self,
        *,
        no_ack: bool = False,
        fail: Literal[False] = ...,
        timeout: TimeoutType = ...,  # noqa: ASYNC109
    ) -> Delivery | None: ...

    async def get(
        self,
        *,
        no_ack: bool = False,
        fail: bool = True,
        timeout: TimeoutType = 5,  # noqa: ASYNC109 - aio-pika's signature, passed on
    ) -> Delivery | None:
        """As aio-pika's ``Queue.get``: the next message as a :class:`Delivery`; when the
        queue is empty, ``None``, or :class:`~aio_pika.exceptions.QueueEmpty` with ``fail``."""
        channel: aiormq.abc.AbstractChannel = await self.channel.get_underlay_channel()
        message = await channel.basic_get(self.name, no_ack=no_ack, timeout=timeout)
        if isinstance(message.delivery, aiormq.spec.Basic.GetEmpty):
            if fail:
                raise QueueEmpty
            return None
        return Delivery(message, no_ack=no_ack)


class Channel(RobustChannel):
    """aio-pika's robust channel, declaring :class:`Queue`."""

    QUEUE_CLASS = Queue


class Connection(RobustConnection):
    """aio-pika's robust connection, opening :class:`Channel`."""

    CHANNEL_CLASS = Channel
