"""The gateway's side of RabbitMQ: one robust connection, confirmed publishes, consumers.

Every task publish uses publisher confirms, ``mandatory`` (an unroutable task is returned, not
dropped), persistent delivery, a unique ``message_id`` and a timeout: the caller learns that
the broker holds the task durably, or gets :class:`PublishRefused` / :class:`BrokerDown`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence

import aio_pika
from aio_pika import DeliveryMode, Message
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError, DeliveryError, PublishError

from gateway.catalogue import Catalogue, ServiceSpec
from worker_sdk import (
    CancelRequest,
    CoreExchanges,
    Task,
    Topology,
    declare_task_queue,
    declare_topology,
)

log = logging.getLogger("gateway.broker")

CONNECT_RETRY_DELAY = 1.0

Callback = Callable[[AbstractIncomingMessage], Awaitable[None]]


class BrokerDown(RuntimeError):
    """The broker cannot be reached, or did not confirm in time."""


class PublishRefused(RuntimeError):
    """The broker answered a publish with a nack (queue full) or returned it (unroutable)."""


class EventTap:
    """Binds and unbinds a private queue to the events exchange."""

    def __init__(self, queue: AbstractQueue, exchange: str, routing_keys: Sequence[str]) -> None:
        self._queue = queue
        self._exchange = exchange
        self._keys = tuple(routing_keys)

    async def attach(self) -> None:
        for key in self._keys:
            await self._queue.bind(self._exchange, routing_key=key)

    async def detach(self) -> None:
        for key in self._keys:
            await self._queue.unbind(self._exchange, routing_key=key)


class Broker:
    """Owns the gateway's AMQP connection; built and closed by the application lifespan."""

    def __init__(
        self,
        *,
        url: str,
        topology: Topology,
        catalogue: Catalogue,
        publish_timeout: float,
        connect_timeout: float,
        name: str,
    ) -> None:
        self.topology = topology
        self._url = url
        self._catalogue = catalogue
        self._publish_timeout = publish_timeout
        self._connect_timeout = connect_timeout
        self._name = name
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchanges: CoreExchanges | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []

    async def connect(self) -> None:
        """Connect, then declare the namespace's topology and every service's task queue.

        A broker that is still starting is retried every second until ``connect_timeout``
        has passed; then :class:`BrokerDown` says why.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout
        while True:
            try:
                self._connection = await aio_pika.connect_robust(
                    self._url,
                    timeout=max(1.0, deadline - loop.time()),
                    client_properties={"connection_name": self._name},
                )
                break
            except (OSError, AMQPError, TimeoutError) as exc:
                if loop.time() + CONNECT_RETRY_DELAY >= deadline:
                    raise BrokerDown(f"cannot connect to RabbitMQ: {exc!r}") from exc
                log.warning("RabbitMQ not reachable yet (%r); retrying", exc)
                await asyncio.sleep(CONNECT_RETRY_DELAY)  # the retry back-off
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._exchanges = await declare_topology(self._channel, self.topology)
        for spec in self._catalogue:
            await declare_task_queue(self._channel, self.topology, spec.id, spec.queue_options)

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def publish_task(self, task: Task, spec: ServiceSpec) -> None:
        """Publish ``task`` and wait for the broker's confirm.

        Raises :class:`PublishRefused` on a nack or a return and :class:`BrokerDown` when the
        broker is unreachable or silent past the publish timeout.
        """
        if self._exchanges is None or not self.connected:
            raise BrokerDown("not connected to RabbitMQ")
        message = Message(
            task.to_bytes(),
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=uuid.uuid4().hex,
            correlation_id=str(task.job_id),
            type="task",
            expiration=spec.queue_ttl,
            priority=spec.priority,
        )
        try:
            await self._exchanges.tasks.publish(
                message, routing_key=spec.id, mandatory=True, timeout=self._publish_timeout
            )
        except (DeliveryError, PublishError) as exc:
            raise PublishRefused(str(exc)) from exc
        except (TimeoutError, AMQPError, OSError, RuntimeError) as exc:
            raise BrokerDown(f"task not confirmed: {exc!r}") from exc

    async def publish_control(self, request: CancelRequest) -> None:
        """Tell every worker (each has its own queue on the control fanout), confirmed."""
        if self._exchanges is None or not self.connected:
            raise BrokerDown("not connected to RabbitMQ")
        message = Message(
            request.to_bytes(),
            content_type="application/json",
            message_id=uuid.uuid4().hex,
            correlation_id=str(request.job_id),
            type=request.kind,
        )
        try:
            # Not mandatory: with no worker running there is nobody to tell.
            await self._exchanges.control.publish(
                message, routing_key="", mandatory=False, timeout=self._publish_timeout
            )
        except (AMQPError, OSError, RuntimeError, TimeoutError) as exc:
            raise BrokerDown(f"control message not confirmed: {exc!r}") from exc

    async def consume(
        self,
        queue: str,
        callback: Callback,
        *,
        prefetch: int,
        no_ack: bool = False,
    ) -> None:
        """Consume a durable queue of the namespace on a channel of its own."""
        channel = await self._require_connection().channel()
        await channel.set_qos(prefetch_count=prefetch)
        declared = await channel.get_queue(queue, ensure=True)
        tag = await declared.consume(callback, no_ack=no_ack)
        self._consumers.append((declared, tag))

    async def tap(
        self, routing_keys: Sequence[str], callback: Callback, *, prefetch: int
    ) -> EventTap:
        """Consume copies of events on an exclusive queue that lives as long as this process.

        The queue starts unbound; :meth:`EventTap.attach` binds it to ``routing_keys``.
        """
        channel = await self._require_connection().channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(
            f"{self.topology.namespace}.watch.{uuid.uuid4().hex}", exclusive=True, auto_delete=True
        )
        tag = await queue.consume(callback, no_ack=True)
        self._consumers.append((queue, tag))
        return EventTap(queue, self.topology.events_exchange, routing_keys)

    async def check(self) -> None:
        """Raise :class:`BrokerDown` unless the broker answers now."""
        if not self.connected or self._channel is None or self._channel.is_closed:
            raise BrokerDown("not connected to RabbitMQ")
        try:
            await asyncio.wait_for(
                self._channel.declare_exchange(self.topology.tasks_exchange, passive=True),
                timeout=self._publish_timeout,
            )
        except (TimeoutError, AMQPError, OSError, RuntimeError) as exc:
            raise BrokerDown(f"RabbitMQ does not answer: {exc!r}") from exc

    async def queue_depth(self, queue: str) -> int:
        """Messages ready (not yet delivered) in one of the namespace's queues."""
        if self._channel is None or self._channel.is_closed:
            raise BrokerDown("not connected to RabbitMQ")
        # Straight to the underlying channel: a robust channel answers a passive declare of a
        # queue it knows from its cache, with the count of the first declaration.
        channel = await self._channel.get_underlay_channel()
        declared = await channel.queue_declare(queue, passive=True)
        return int(declared.message_count or 0)

    async def close(self) -> None:
        for queue, tag in reversed(self._consumers):
            try:
                await queue.cancel(tag)
            except (TimeoutError, AMQPError, OSError, RuntimeError):
                log.debug("consumer %s already gone", tag)
        self._consumers.clear()
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    def _require_connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise BrokerDown("not connected to RabbitMQ")
        return self._connection
