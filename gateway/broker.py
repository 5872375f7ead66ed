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
from dataclasses import dataclass

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


def _reraise_if_cancelled() -> None:
    """aiormq cancels a pending confirm when its channel closes: that CancelledError is a lost
    publish, unless this task itself is being cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class BrokerDown(RuntimeError):
    """The broker cannot be reached, or did not confirm in time."""


class PublishRefused(RuntimeError):
    """The broker answered a publish with a nack (queue full) or returned it (unroutable)."""


class EventTap:
    """Binds and unbinds a private queue to the events exchange (re-created with the
    connection by the watchdog, bindings included)."""

    def __init__(self, routing_keys: Sequence[str], callback: Callback, prefetch: int) -> None:
        self.keys = tuple(routing_keys)
        self.callback = callback
        self.prefetch = prefetch
        self.queue: AbstractQueue | None = None
        self.exchange = ""
        self.attached = False

    async def attach(self) -> None:
        assert self.queue is not None
        for key in self.keys:
            await self.queue.bind(self.exchange, routing_key=key)
        self.attached = True

    async def detach(self) -> None:
        assert self.queue is not None
        for key in self.keys:
            await self.queue.unbind(self.exchange, routing_key=key)
        self.attached = False


@dataclass(frozen=True, slots=True)
class _Consumer:
    queue: str
    callback: Callback
    prefetch: int


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
        self._channels: list[AbstractChannel] = []
        self._registered: list[_Consumer] = []
        self._tap: EventTap | None = None
        self._watchdog: asyncio.Task[None] | None = None

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
        except asyncio.CancelledError as exc:
            _reraise_if_cancelled()
            raise BrokerDown("task not confirmed: its channel closed") from exc
        except Exception as exc:  # aiormq fails pending confirms with a bare Exception
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
        except asyncio.CancelledError as exc:
            _reraise_if_cancelled()
            raise BrokerDown("control message not confirmed: its channel closed") from exc
        except Exception as exc:  # aiormq fails pending confirms with a bare Exception
            raise BrokerDown(f"control message not confirmed: {exc!r}") from exc

    async def consume(self, queue: str, callback: Callback, *, prefetch: int) -> None:
        """Consume a durable queue of the namespace on a channel of its own (again after a
        reconnection by the watchdog)."""
        consumer = _Consumer(queue, callback, prefetch)
        self._registered.append(consumer)
        await self._start_consumer(consumer)

    async def _start_consumer(self, consumer: _Consumer) -> None:
        channel = await self._require_connection().channel()
        await channel.set_qos(prefetch_count=consumer.prefetch)
        self._channels.append(channel)
        declared = await channel.get_queue(consumer.queue, ensure=True)
        tag = await declared.consume(consumer.callback)
        self._consumers.append((declared, tag))

    async def tap(
        self, routing_keys: Sequence[str], callback: Callback, *, prefetch: int
    ) -> EventTap:
        """Consume copies of events on an exclusive queue that lives as long as this process.

        The queue starts unbound; :meth:`EventTap.attach` binds it to ``routing_keys``.
        """
        self._tap = EventTap(routing_keys, callback, prefetch)
        await self._start_tap(self._tap)
        return self._tap

    async def _start_tap(self, tap: EventTap) -> None:
        channel = await self._require_connection().channel()
        await channel.set_qos(prefetch_count=tap.prefetch)
        self._channels.append(channel)
        tap.queue = await channel.declare_queue(
            f"{self.topology.namespace}.watch.{uuid.uuid4().hex}", exclusive=True, auto_delete=True
        )
        tap.exchange = self.topology.events_exchange
        tag = await tap.queue.consume(tap.callback, no_ack=True)
        self._consumers.append((tap.queue, tag))
        if tap.attached:
            await tap.attach()

    def start_watchdog(self, reconnect_after: float) -> None:
        """Rebuild the connection, its channels and consumers when any stays closed for
        ``reconnect_after`` seconds: aio-pika's robust objects recover most losses, but not a
        channel whose reopening raced with its connection's own closing."""
        self._watchdog = asyncio.create_task(self._watch(reconnect_after))

    async def _watch(self, reconnect_after: float) -> None:
        loop = asyncio.get_running_loop()
        broken_since: float | None = None
        while True:
            await asyncio.sleep(min(1.0, reconnect_after / 3))  # the watchdog's period
            channels = [self._channel, *self._channels]
            broken = not self.connected or any(c is None or c.is_closed for c in channels)
            if not broken:
                broken_since = None
                continue
            broken_since = broken_since if broken_since is not None else loop.time()
            if loop.time() - broken_since < reconnect_after:
                continue
            log.error("RabbitMQ channels stayed closed for %.0fs; reconnecting", reconnect_after)
            try:
                await self._rebuild()
                broken_since = None
            except (BrokerDown, AMQPError, OSError, RuntimeError, TimeoutError):
                log.exception("reconnection failed; trying again")

    async def _rebuild(self) -> None:
        await self._drop_connection()
        await self.connect()
        for consumer in self._registered:
            await self._start_consumer(consumer)
        if self._tap is not None:
            await self._start_tap(self._tap)
        log.info("RabbitMQ connection rebuilt with %d consumer(s)", len(self._consumers))

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
        messages, _ = await self.queue_stats(queue)
        return messages

    async def queue_stats(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of one of the namespace's queues."""
        if self._channel is None or self._channel.is_closed:
            raise BrokerDown("not connected to RabbitMQ")
        # Straight to the underlying channel: a robust channel answers a passive declare of a
        # queue it knows from its cache, with the count of the first declaration.
        try:
            channel = await self._channel.get_underlay_channel()
            declared = await channel.queue_declare(queue, passive=True)
        except (AMQPError, RuntimeError, OSError) as exc:
            raise BrokerDown(f"cannot inspect {queue}: {exc!r}") from exc
        return int(declared.message_count or 0), int(declared.consumer_count or 0)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        for queue, tag in reversed(self._consumers):
            try:
                await queue.cancel(tag)
            except (TimeoutError, AMQPError, OSError, RuntimeError):
                log.debug("consumer %s already gone", tag)
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        self._consumers.clear()
        self._channels.clear()
        self._channel = None
        self._exchanges = None
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await asyncio.wait_for(connection.close(), timeout=self._publish_timeout)
            except (TimeoutError, AMQPError, OSError, RuntimeError):
                log.debug("the old connection did not close cleanly")

    def _require_connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise BrokerDown("not connected to RabbitMQ")
        return self._connection
