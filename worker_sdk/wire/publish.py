"""Confirmed publishing: the one way the gateway and the workers put a message on the broker.

Every publish that matters waits for the broker's confirm, with ``mandatory`` set (an
unroutable message comes back instead of vanishing), a unique ``message_id`` and a timeout.
The caller learns one of three things: the broker holds the message; it refused it
(:class:`PublishRefused`: a nack, e.g. a full queue, or a return); or nobody knows
(:class:`PublishLost`: the confirm never came — a timeout, a closed channel, a dropped
connection). aiormq reports the last case in several shapes (a ``CancelledError`` on the
pending confirm, a bare ``Exception``, ``ConnectionError``); they are all mapped here.
"""

from __future__ import annotations

import asyncio
import uuid

from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractExchange, HeadersType
from aio_pika.exceptions import DeliveryError, PublishError

JSON = "application/json"


class PublishRefused(RuntimeError):
    """The broker answered with a nack (e.g. a full queue) or returned the message."""


class PublishLost(RuntimeError):
    """The broker's confirm never came: the message may or may not be held."""


def message(
    body: bytes,
    *,
    type: str,
    correlation_id: str | None = None,
    expiration: float | None = None,
    priority: int | None = None,
    persistent: bool = True,
    headers: HeadersType | None = None,
) -> Message:
    """A JSON message with a fresh ``message_id``."""
    return Message(
        body,
        content_type=JSON,
        delivery_mode=DeliveryMode.PERSISTENT if persistent else DeliveryMode.NOT_PERSISTENT,
        message_id=uuid.uuid4().hex,
        correlation_id=correlation_id,
        type=type,
        expiration=expiration,
        priority=priority,
        headers=headers,
    )


async def publish(
    exchange: AbstractExchange,
    outgoing: Message,
    routing_key: str,
    *,
    timeout: float,  # noqa: ASYNC109 - aio-pika's own confirm timeout, passed through
    mandatory: bool = True,
) -> None:
    """Publish and wait for the confirm; raise :class:`PublishRefused` or
    :class:`PublishLost` (see the module docstring). The channel must have publisher
    confirms on and ``on_return_raises`` set."""
    try:
        await exchange.publish(
            outgoing, routing_key=routing_key, mandatory=mandatory, timeout=timeout
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
