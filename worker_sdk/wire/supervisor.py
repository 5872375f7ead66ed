"""Connecting to RabbitMQ and noticing when a connection must be rebuilt.

aio-pika's robust connections recover most losses by themselves, but not a channel whose
reopening raced with its connection's own closing: it stays closed for good. Both the
gateway and the workers therefore watch their channels and start over on a new connection
once one has stayed closed for ``reconnect_after`` seconds (:class:`Supervisor`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import AMQPError

from .delivery import Connection

log = logging.getLogger("worker_sdk.wire")

CONNECT_RETRY_DELAY = 1.0


class BrokerUnreachable(ConnectionError):
    """RabbitMQ did not accept a connection within the time allowed."""


async def connect(
    url: str,
    *,
    name: str,
    timeout: float,  # noqa: ASYNC109 - a deadline over several attempts, not one call
) -> AbstractRobustConnection:
    """A robust connection, retried every second while the broker is still starting, until
    ``timeout`` seconds have passed (then :class:`BrokerUnreachable` says why). Its queues hand
    their consumers :class:`~worker_sdk.wire.delivery.Delivery` objects."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await aio_pika.connect_robust(
                url,
                timeout=max(1.0, deadline - loop.time()),
                client_properties={"connection_name": name},
                connection_class=Connection,
            )
        except (OSError, AMQPError, TimeoutError) as exc:
            if loop.time() + CONNECT_RETRY_DELAY >= deadline:
                raise BrokerUnreachable(f"cannot connect to RabbitMQ: {exc!r}") from exc
            log.warning("RabbitMQ not reachable yet (%r); retrying", exc)
        await asyncio.sleep(CONNECT_RETRY_DELAY)  # the retry back-off


class Supervisor:
    """Says when a connection that stays broken must be dropped and built anew."""

    def __init__(self, reconnect_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.reconnect_after = reconnect_after
        self._clock = clock
        self.period = reconnect_after / 3  # how often to look, at most
        self._broken_since: float | None = None

    def due(self, broken: bool) -> bool:
        """Report whether the connection is broken now; True once it has been broken for
        ``reconnect_after`` seconds in a row (and then the count starts again)."""
        now = self._clock()
        if not broken:
            self._broken_since = None
            return False
        if self._broken_since is None:
            self._broken_since = now
        if now - self._broken_since < self.reconnect_after:
            return False
        self._broken_since = None
        return True
