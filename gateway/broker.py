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
from typing import TypeVar

import aiormq.abc
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
    HeadersType,
)
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from worker_sdk.wire import (
    BARRIER,
    TASK,
    Barrier,
    CancelRequest,
    CoreExchanges,
    Task,
    Topology,
    acks,
    declare_task_queue,
    declare_topology,
)
from worker_sdk.wire.catalogue import Catalogue, ServiceSpec
from worker_sdk.wire.publish import Outgoing, PublishLost, PublishRefused, outgoing, publish
from worker_sdk.wire.supervisor import BrokerUnreachable, Supervisor, connect
from worker_sdk.wire.topology import (
    WEBHOOK_DELIVER_KEY,
    declare_webhook_queues,
    webhook_retry_key,
)

WEBHOOK = "webhook"
# How long an inspection waits before asking again a probe channel that is being reopened.
PROBE_REOPEN_PAUSE = 0.01

T = TypeVar("T")
AbstractUnderlay = aiormq.abc.AbstractChannel

log = logging.getLogger("gateway.broker")

Callback = Callable[[AbstractIncomingMessage], Awaitable[None]]


class BrokerDown(RuntimeError):
    """The broker cannot be reached, or did not confirm in time."""


__all__ = ["Broker", "BrokerDown", "EventTap", "PublishRefused"]


class EventTap:
    """Binds and unbinds a private queue to the events exchange (re-created with the
    connection by the watchdog, bindings included). ``timeout``: how long a waiter waits for
    a bind (never cut short: aiormq would close the tap's channel) before it goes on."""

    def __init__(
        self, routing_keys: Sequence[str], callback: Callback, prefetch: int, timeout: float
    ) -> None:
        self.keys = tuple(routing_keys)
        self.callback = callback
        self.prefetch = prefetch
        self.timeout = timeout
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


def _tracking(callback: Callback) -> Callback:
    async def tracked(message: AbstractIncomingMessage) -> None:
        acks.track(message)
        await callback(message)

    return tracked


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
        webhook_delays: Sequence[int] | None = None,
    ) -> None:
        self.topology = topology
        self._webhook_delays = webhook_delays
        self._url = url
        self._catalogue = catalogue
        self._publish_timeout = publish_timeout
        self._connect_timeout = connect_timeout
        self._name = name
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        # Inspections (passive declares) go on a channel of their own: aiormq closes a channel
        # whose call is cancelled before its answer, and the publishing channel's closing
        # would fail every publish on its way.
        self._probe: AbstractRobustChannel | None = None
        self._exchanges: CoreExchanges | None = None
        self._webhooks: AbstractExchange | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._channels: list[AbstractChannel] = []
        self._registered: list[_Consumer] = []
        self._tap: EventTap | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._whole = True  # false from a rebuild's start until every consumer is back

    async def connect(self) -> None:
        """Connect, then declare the namespace's topology and every service's task queue.

        A broker that is still starting is retried every second until ``connect_timeout``
        has passed; then :class:`BrokerDown` says why.
        """
        try:
            self._connection = await connect(
                self._url, name=self._name, timeout=self._connect_timeout
            )
        except BrokerUnreachable as exc:
            raise BrokerDown(str(exc)) from exc
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._probe = await self._connection.channel(publisher_confirms=False)
        self._exchanges = await declare_topology(self._channel, self.topology)
        for spec in self._catalogue:
            await declare_task_queue(self._channel, self.topology, spec.id, spec.queue_options)
        if self._webhook_delays is not None:
            self._webhooks = await declare_webhook_queues(
                self._channel, self.topology, self._webhook_delays
            )

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    def _exchanges_or_down(self) -> CoreExchanges:
        if self._exchanges is None or not self.connected:
            raise BrokerDown("not connected to RabbitMQ")
        return self._exchanges

    async def _publish(
        self, exchange: AbstractExchange, sent: Outgoing, key: str, *, mandatory: bool = True
    ) -> None:
        try:
            await publish(exchange, sent, key, timeout=self._publish_timeout, mandatory=mandatory)
        except PublishLost as exc:
            raise BrokerDown(f"{sent.type} not confirmed: {exc}") from exc

    async def publish_task(
        self, task: Task, spec: ServiceSpec, *, headers: HeadersType | None = None
    ) -> None:
        """Publish ``task`` and wait for the broker's confirm.

        Raises :class:`PublishRefused` on a nack or a return and :class:`BrokerDown` when the
        broker is unreachable or silent past the publish timeout.
        """
        exchanges = self._exchanges_or_down()
        sent = outgoing(
            task.to_bytes(),
            type=TASK,
            correlation_id=str(task.job_id),
            expiration=spec.queue_ttl,
            priority=spec.priority,
            headers=headers,
        )
        await self._publish(exchanges.tasks, sent, spec.id)

    async def publish_barrier(self, barrier: Barrier, spec: ServiceSpec) -> None:
        """Publish a barrier through the service's task queue (see :mod:`gateway.recovery`)."""
        exchanges = self._exchanges_or_down()
        sent = outgoing(barrier.to_bytes(), type=BARRIER, expiration=spec.queue_ttl)
        await self._publish(exchanges.tasks, sent, spec.id)

    async def publish_webhook(
        self,
        body: bytes,
        *,
        job_id: uuid.UUID,
        delay: int | None,
        headers: HeadersType | None = None,
    ) -> None:
        """Queue a webhook delivery, due now or after ``delay`` seconds (one of the retry
        schedule's), and wait for the broker's confirm."""
        self._exchanges_or_down()
        if self._webhooks is None:
            raise BrokerDown("webhooks are not enabled on this gateway")
        key = WEBHOOK_DELIVER_KEY if delay is None else webhook_retry_key(delay)
        sent = outgoing(body, type=WEBHOOK, correlation_id=str(job_id), headers=headers)
        await self._publish(self._webhooks, sent, key)

    async def publish_control(self, request: CancelRequest) -> None:
        """Tell every worker (each has its own queue on the control fanout), confirmed."""
        exchanges = self._exchanges_or_down()
        sent = outgoing(
            request.to_bytes(),
            type=request.kind,
            correlation_id=str(request.job_id),
            persistent=False,
        )
        # Not mandatory: with no worker running there is nobody to tell.
        await self._publish(exchanges.control, sent, "", mandatory=False)

    async def consume(
        self, queue: str, callback: Callback, *, prefetch: int, coalesce_acks: bool = False
    ) -> None:
        """Consume a durable queue of the namespace on a channel of its own (again after a
        reconnection by the watchdog). With ``coalesce_acks``, the acks of deliveries settled
        in the same turn of the loop go out as one (:mod:`worker_sdk.wire.acks`)."""
        consumer = _Consumer(queue, _tracking(callback) if coalesce_acks else callback, prefetch)
        self._registered.append(consumer)
        await self._start_consumer(consumer)

    async def _start_consumer(self, consumer: _Consumer) -> None:
        channel = await self._require_connection().channel()
        await channel.set_qos(prefetch_count=consumer.prefetch)
        self._channels.append(channel)
        declared = await channel.get_queue(consumer.queue, ensure=True)
        await self._on_broker_cancel(channel, consumer.queue)
        tag = await declared.consume(consumer.callback)
        self._consumers.append((declared, tag))

    async def _on_broker_cancel(self, channel: AbstractChannel, queue: str) -> None:
        """When the broker cancels the consumer of ``channel`` (its queue was deleted, or its
        quorum lost), the consumers are no longer whole: readiness says so, and the watchdog
        rebuilds them (declaring the topology again) after ``reconnect_after`` seconds. The
        channel stays open, so nothing else would notice: events would go unconsumed, and
        workers, whose events could no longer be routed, would hand every task back."""

        def cancelled(frame: object) -> None:
            log.error("RabbitMQ cancelled the consumer of %s (was it deleted?); rebuilding", queue)
            self._whole = False

        async def watch(*_: object) -> None:  # again on each channel aio-pika reopens
            underlay = await channel.get_underlay_channel()
            underlay.on_consumer_cancel_callbacks.add(cancelled)

        await watch()
        if isinstance(channel, AbstractRobustChannel):
            channel.reopen_callbacks.add(watch)

    async def tap(
        self, routing_keys: Sequence[str], callback: Callback, *, prefetch: int
    ) -> EventTap:
        """Consume copies of events on an exclusive queue that lives as long as this process.

        The queue starts unbound; :meth:`EventTap.attach` binds it to ``routing_keys``.
        """
        self._tap = EventTap(routing_keys, callback, prefetch, self._publish_timeout)
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
        await self._on_broker_cancel(channel, tap.queue.name)
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
        supervisor = Supervisor(reconnect_after)
        while True:
            await asyncio.sleep(min(1.0, supervisor.period))  # the watchdog's period
            channels = [self._channel, self._probe, *self._channels]
            broken = not self._whole or not self.connected
            broken = broken or any(c is None or c.is_closed for c in channels)
            if not supervisor.due(broken):
                continue
            log.error("RabbitMQ channels stayed closed for %.0fs; reconnecting", reconnect_after)
            try:
                await self._rebuild()
            except (BrokerDown, AMQPError, OSError, RuntimeError, TimeoutError):
                log.exception("reconnection failed; trying again")

    async def _rebuild(self) -> None:
        """A new connection with every consumer and the tap; one that fails part way (a
        consumer's first delivery closing its channel, the broker going away again) is done
        again whole at the watchdog's next turn, however healthy the channels look."""
        self._whole = False
        await self._drop_connection()
        await self.connect()
        for consumer in self._registered:
            await self._start_consumer(consumer)
        if self._tap is not None:
            await self._start_tap(self._tap)
        self._whole = True
        log.info("RabbitMQ connection rebuilt with %d consumer(s)", len(self._consumers))

    async def check(self) -> None:
        """Raise :class:`BrokerDown` unless the broker answers now: a passive declare of the
        tasks exchange, asked of the broker itself (a robust channel answers one it declared
        from its cache)."""
        exchange = self.topology.tasks_exchange
        if not self._whole:
            raise BrokerDown("reconnecting: the event consumers are not all running")
        try:
            await self._inspect(lambda c: c.exchange_declare(exchange, passive=True))
        except BrokerDown as exc:
            raise BrokerDown(f"RabbitMQ does not answer: {exc}") from exc

    async def _inspect(self, call: Callable[[AbstractUnderlay], Awaitable[T]]) -> T:
        """``call`` on the probe channel's underlying channel, within the publish timeout. A
        probe closed by an inspection cut short is being reopened by aio-pika: it is waited
        for and asked again, instead of being reported down."""
        probe = self._probe
        if probe is None or not self.connected or self._channel is None or self._channel.is_closed:
            raise BrokerDown("not connected to RabbitMQ")  # at once: an outage is not waited on
        try:
            async with asyncio.timeout(self._publish_timeout):
                while True:
                    await probe.ready()
                    channel = await probe.get_underlay_channel()
                    try:
                        return await call(channel)
                    except ChannelInvalidStateError:
                        if self._probe is not probe or not self.connected:
                            raise
                    await asyncio.sleep(PROBE_REOPEN_PAUSE)  # while aio-pika reopens it
        except (TimeoutError, AMQPError, OSError, RuntimeError) as exc:
            raise BrokerDown(repr(exc)) from exc

    async def queue_depth(self, queue: str) -> int:
        """Messages ready (not yet delivered) in one of the namespace's queues."""
        messages, _ = await self.queue_stats(queue)
        return messages

    async def queue_stats(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of one of the namespace's queues."""
        # Straight to the underlying channel: a robust channel answers a passive declare of a
        # queue it knows from its cache, with the count of the first declaration.
        try:
            declared = await self._inspect(
                lambda channel: channel.queue_declare(queue, passive=True)
            )
        except BrokerDown as exc:
            raise BrokerDown(f"cannot inspect {queue}: {exc}") from exc
        return int(declared.message_count or 0), int(declared.consumer_count or 0)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        # Not while the broker is out of reach (aio-pika's cancel would wait for it to come
        # back), nor for longer than a publish may take.
        try:
            async with asyncio.timeout(self._publish_timeout):
                for queue, tag in reversed(self._consumers if self.connected else []):
                    try:
                        await queue.cancel(tag)
                    except (AMQPError, OSError, RuntimeError):
                        log.debug("consumer %s already gone", tag)
        except TimeoutError:
            log.warning("consumers not cancelled within %.0fs", self._publish_timeout)
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        self._consumers.clear()
        self._channels.clear()
        self._channel = None
        self._probe = None
        self._exchanges = None
        self._webhooks = None
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                async with asyncio.timeout(self._publish_timeout):
                    await connection.close()
            except (TimeoutError, AMQPError, OSError, RuntimeError):
                log.debug("the old connection did not close cleanly")

    def _require_connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise BrokerDown("not connected to RabbitMQ")
        return self._connection
