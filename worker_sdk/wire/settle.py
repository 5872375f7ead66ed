"""Settling a delivery when its channel may already be gone."""

from __future__ import annotations

import logging
from typing import Literal

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError

from . import acks

log = logging.getLogger("worker_sdk")

Outcome = Literal["ack", "requeue", "reject"]


async def settle(message: AbstractIncomingMessage, outcome: Outcome) -> bool:
    """Ack, requeue or reject (to the dead-letter exchange) a delivery.

    The ack of a delivery :func:`~worker_sdk.wire.acks.track` saw may go out with others of
    its channel (:mod:`worker_sdk.wire.acks`). Returns False when the channel closed under
    it: nothing is lost, since the broker requeues every unsettled delivery of a closed
    channel, but the caller must not assume it settled.
    """
    channel = acks.tracked(message)
    try:
        if outcome == "ack" and channel is not None:
            await acks.ack(channel, message)
        elif outcome == "ack":
            await message.ack()
        else:
            try:
                await message.reject(requeue=outcome == "requeue")
            finally:
                if channel is not None:
                    acks.untrack(channel, message)
    except (AMQPError, RuntimeError, ConnectionError) as exc:
        log.warning(
            "could not %s delivery %s (%r); the broker redelivers it",
            outcome,
            message.message_id,
            exc,
        )
        return False
    return True
