"""Settling a delivery when its channel may already be gone."""

from __future__ import annotations

import logging
from typing import Literal

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError

log = logging.getLogger("worker_sdk")

Outcome = Literal["ack", "requeue", "reject"]


async def settle(message: AbstractIncomingMessage, outcome: Outcome) -> bool:
    """Ack, requeue or reject (to the dead-letter exchange) a delivery.

    Returns False when the channel closed under it: nothing is lost, since the broker requeues
    every unsettled delivery of a closed channel, but the caller must not assume it settled.
    """
    try:
        if outcome == "ack":
            await message.ack()
        else:
            await message.reject(requeue=outcome == "requeue")
    except (AMQPError, RuntimeError, ConnectionError) as exc:
        log.warning(
            "could not %s delivery %s (%r); the broker redelivers it",
            outcome,
            message.message_id,
            exc,
        )
        return False
    return True
