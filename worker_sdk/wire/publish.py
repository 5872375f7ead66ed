"""Confirmed publishing: the one way the gateway and the workers put a message on the broker.

Every publish that matters waits for the broker's confirm, with ``mandatory`` set (an
unroutable message comes back instead of vanishing), a unique ``message_id`` and a timeout.
The caller learns one of three things: the broker holds the message; it refused it
(:class:`PublishRefused`: a nack, e.g. a full queue, or a return); or nobody knows
(:class:`PublishLost`: the confirm never came — a timeout, a closed channel, a dropped
connection). aiormq reports the last case in several shapes (a ``CancelledError`` on the
pending confirm, a bare ``Exception``, ``ConnectionError``); they are all mapped here.

A message to publish is an :class:`Outgoing`: its body and its AMQP properties, built as
pamqp's own frame values and handed to the channel's ``basic_publish`` as they are. Building
aio-pika's ``Message`` and then its properties costs five times as much, on every task, event
and outcome of every job; aio-pika's ``Exchange.publish`` adds nothing to that call but its
own checks, which the channel repeats. Their properties encode themselves
(:class:`Properties`) without pamqp's generic encoder, which took about half of a task's
frames' encoding.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Mapping
from typing import NamedTuple

from aio_pika import Exchange
from aio_pika.abc import AbstractChannel, AbstractExchange
from aio_pika.exceptions import ChannelInvalidStateError, DeliveryError, PublishError
from pamqp.commands import Basic
from pamqp.common import FieldValue

JSON = "application/json"
_BYTE = struct.Struct(">B")
_FLAGS = struct.Struct(">H")
# The properties :class:`Properties` encodes itself, in their wire order, with their flag;
# any other property set makes pamqp encode them all.
_SHORT, _OCTET, _TABLE = "short", "octet", "table"
_OWN = (
    ("content_type", 0x8000, _SHORT),
    ("headers", 0x2000, _TABLE),
    ("delivery_mode", 0x1000, _OCTET),
    ("priority", 0x0800, _OCTET),
    ("correlation_id", 0x0400, _SHORT),
    ("expiration", 0x0100, _SHORT),
    ("message_id", 0x0080, _SHORT),
    ("message_type", 0x0020, _SHORT),
)


class Properties(Basic.Properties):
    """pamqp's ``Basic.Properties`` whose ``marshal`` writes the properties :func:`outgoing`
    sets (short strings, delivery mode, priority, empty headers) itself, byte for byte as
    pamqp does: pamqp's encoder looks up each property's type and encodes it through three
    calls, 17 µs a message on the machine measured (as much as the rest of a task's frames),
    on every task, event and outcome. Any other value (headers, a property this module never
    sets, a string over 255 bytes, a number out of an octet's range) is left to pamqp, which
    encodes or refuses it as before."""

    # No __slots__ of its own: pamqp's methods iterate ``self.__slots__``, which must stay
    # the base class's list of properties.

    def marshal(self) -> bytes:
        if not (
            self.content_encoding is None
            and self.reply_to is None
            and self.timestamp is None
            and self.user_id is None
            and self.app_id is None
            and self.cluster_id in (None, "")
        ):
            return super().marshal()
        flags, parts = 0, []
        for name, flag, kind in _OWN:
            value = getattr(self, name)
            if value is None or value == "":  # absent, as pamqp reads it
                continue
            if kind is _SHORT and type(value) is str and len(data := value.encode()) <= 255:
                parts.append(_BYTE.pack(len(data)) + data)
            elif kind is _OCTET and type(value) is int and 0 <= value <= 255:
                parts.append(_BYTE.pack(value))
            elif kind is _TABLE and not value:
                parts.append(b"\0\0\0\0")  # an empty table, as pamqp writes it
            else:
                return super().marshal()
            flags |= flag
        return _FLAGS.pack(flags) + b"".join(parts)


class PublishRefused(RuntimeError):
    """The broker answered with a nack (e.g. a full queue) or returned the message."""


class PublishLost(RuntimeError):
    """The broker's confirm never came: the message may or may not be held."""


class Outgoing(NamedTuple):
    """A message to publish: its body and its AMQP properties."""

    body: bytes
    properties: Basic.Properties

    @property
    def type(self) -> str | None:
        return self.properties.message_type


def _message_id() -> str:
    """128 random bits in hex: the id only names a message in logs, so the process's own
    generator (reseeded in a forked child) serves; ``uuid4`` asks the kernel, a system call
    per message."""
    return f"{random.getrandbits(128):032x}"


def outgoing(
    body: bytes,
    *,
    type: str,
    correlation_id: str | None = None,
    expiration: float | None = None,
    priority: int | None = None,
    persistent: bool = True,
    headers: Mapping[str, FieldValue] | None = None,
) -> Outgoing:
    """A JSON message with a fresh ``message_id``; ``expiration`` in seconds (whole
    milliseconds on the wire, as aio-pika writes it)."""
    return Outgoing(
        body,
        Properties(
            content_type=JSON,
            delivery_mode=2 if persistent else 1,
            message_id=_message_id(),
            correlation_id=correlation_id,
            message_type=type,
            expiration=None if expiration is None else str(int(expiration * 1000)),
            priority=priority or 0,  # as aio-pika writes them: absent is 0 and {}
            headers=dict(headers) if headers else {},
        ),
    )


async def publish(
    exchange: AbstractExchange,
    sent: Outgoing,
    routing_key: str,
    *,
    timeout: float,  # noqa: ASYNC109 - aio-pika's own confirm timeout, passed through
    mandatory: bool = True,
) -> None:
    """Publish and wait for the confirm; raise :class:`PublishRefused` or
    :class:`PublishLost` (see the module docstring). The channel must have publisher
    confirms on and ``on_return_raises`` set."""
    try:
        channel = _channel(exchange)
        if channel.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} is closed")
        underlay = await channel.get_underlay_channel()
        await underlay.basic_publish(
            sent.body,
            exchange=exchange.name,
            routing_key=routing_key,
            properties=sent.properties,
            mandatory=mandatory,
            timeout=timeout,
        )
    except (DeliveryError, PublishError) as exc:
        raise PublishRefused(str(exc) or type(exc).__name__) from exc
    except asyncio.CancelledError as exc:
        # aiormq cancels a pending confirm when its channel closes: a lost publish, unless
        # this task itself is being cancelled.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise PublishLost("the channel closed before the broker confirmed") from exc
    except Exception as exc:  # timeouts, closed channels, aiormq's bare Exception
        raise PublishLost(f"not confirmed: {exc!r}") from exc


def _channel(exchange: AbstractExchange) -> AbstractChannel:
    """The exchange's channel: every aio-pika exchange has one; its abstract type omits it.
    Publishing to an internal exchange is refused here, as aio-pika refuses it."""
    if not isinstance(exchange, Exchange):
        raise TypeError(f"not an aio-pika exchange: {exchange!r}")
    if exchange.internal:
        raise ValueError(f"cannot publish to the internal exchange {exchange.name!r}")
    return exchange.channel
