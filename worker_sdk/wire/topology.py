"""RabbitMQ names and queue arguments shared by the gateway and every worker.

Both sides declare the topology idempotently at start, so either may come up first. Declaring
a queue that already exists with different arguments is refused by the broker
(``PRECONDITION_FAILED``); :class:`TopologyMismatch` turns that into a message that says which
setting disagrees.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import aiormq.exceptions
from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from pamqp.common import FieldTable

DEFAULT_NAMESPACE = "sg"
DEFAULT_DELIVERY_LIMIT = 5
# Deliveries of one event or dead letter before the gateway gives up on it. The gateway
# retries a failing store in place (the delivery stays unacknowledged), so only deliveries
# that died with their gateway process count: a message that crashes every gateway it
# reaches is parked in the poison queue after this many.
CONSUMER_DELIVERY_LIMIT = 10
POISON_MAX_LENGTH = 100_000
POISON_EVENTS_KEY = "poison.events"
POISON_DEAD_KEY = "poison.dead"
POISON_WEBHOOKS_KEY = "poison.webhooks"
# Seconds between a webhook's attempts (Standard Webhooks' usual schedule): eight attempts
# over about a day.
DEFAULT_WEBHOOK_DELAYS = (5, 300, 1800, 7200, 18000, 36000, 36000)
WEBHOOK_DELIVER_KEY = "deliver"


class TopologyMismatch(RuntimeError):
    """A queue exists on the broker with arguments other than the ones we declare."""


@dataclass(frozen=True, slots=True)
class Topology:
    """Every exchange and queue name under one namespace (``sg`` unless configured)."""

    namespace: str = DEFAULT_NAMESPACE

    @property
    def tasks_exchange(self) -> str:
        return f"{self.namespace}.tasks"

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def events_queue(self) -> str:
        return f"{self.namespace}.events"

    @property
    def control_exchange(self) -> str:
        return f"{self.namespace}.control"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.namespace}.dead"

    @property
    def poison_queue(self) -> str:
        """Events and dead letters that no gateway could handle, kept for an operator."""
        return f"{self.namespace}.poison"

    def task_queue(self, service: str) -> str:
        return f"{self.namespace}.task.{service}"

    def retry_queue(self, service: str, tier: int) -> str:
        return f"{self.namespace}.retry.{service}.{tier}s"

    @property
    def webhooks_exchange(self) -> str:
        return f"{self.namespace}.webhooks"

    @property
    def webhooks_queue(self) -> str:
        """Webhook deliveries due now (the gateway's, not the workers')."""
        return f"{self.namespace}.webhooks"

    def webhook_retry_queue(self, delay: int) -> str:
        """Where a webhook waits ``delay`` seconds before its next attempt."""
        return f"{self.namespace}.webhooks.retry.{delay}s"


@dataclass(frozen=True, slots=True)
class TaskQueueOptions:
    """The arguments of one service's task queue.

    ``delivery_limit`` bounds redeliveries (a task that kills its worker every time is
    dead-lettered instead of looping); ``max_length`` bounds the backlog (publishes past it
    are refused with a nack, so the client is told instead of the task being dropped).
    """

    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    max_length: int | None = None

    def arguments(self, topology: Topology, service: str) -> FieldTable:
        """The queue's arguments; its dead letters are routed by the service id, however a
        message reached the queue."""
        args: FieldTable = {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": topology.dead_letter_exchange,
            "x-dead-letter-routing-key": service,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        if self.max_length is not None:
            args["x-max-length"] = self.max_length
        return args


@dataclass(frozen=True, slots=True)
class CoreExchanges:
    tasks: AbstractExchange
    events: AbstractExchange
    control: AbstractExchange
    dead_letter: AbstractExchange


async def declare_exchanges(channel: AbstractChannel, topology: Topology) -> CoreExchanges:
    """Declare the four durable exchanges of the namespace."""
    tasks = await channel.declare_exchange(
        topology.tasks_exchange, ExchangeType.DIRECT, durable=True
    )
    events = await channel.declare_exchange(
        topology.events_exchange, ExchangeType.TOPIC, durable=True
    )
    control = await channel.declare_exchange(
        topology.control_exchange, ExchangeType.FANOUT, durable=True
    )
    dead_letter = await channel.declare_exchange(
        topology.dead_letter_exchange, ExchangeType.TOPIC, durable=True
    )
    return CoreExchanges(tasks=tasks, events=events, control=control, dead_letter=dead_letter)


async def declare_queue(
    channel: AbstractChannel, name: str, arguments: FieldTable, *, what: str
) -> AbstractQueue:
    """Declare a durable queue; :class:`TopologyMismatch` in one line when it exists with
    other arguments (the broker names the first argument that differs)."""
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        said = str(exc.args[0] if exc.args else exc).removeprefix("PRECONDITION_FAILED - ")
        raise TopologyMismatch(
            f"queue {name!r} exists on the broker with other arguments ({said}); {what}"
        ) from None


async def declare_task_queue(
    channel: AbstractChannel, topology: Topology, service: str, options: TaskQueueOptions
) -> AbstractQueue:
    """Declare ``{ns}.task.<service>`` and bind it to the tasks exchange."""
    queue = await declare_queue(
        channel,
        topology.task_queue(service),
        options.arguments(topology, service),
        what="align the catalogue's delivery_limit/max_queued with it, or delete the queue",
    )
    await queue.bind(topology.tasks_exchange, routing_key=service)
    return queue


def _consumer_queue_arguments(topology: Topology, poison_key: str) -> FieldTable:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": CONSUMER_DELIVERY_LIMIT,
        "x-dead-letter-exchange": topology.dead_letter_exchange,
        "x-dead-letter-routing-key": poison_key,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_topology(channel: AbstractChannel, topology: Topology) -> CoreExchanges:
    """Declare the exchanges and the namespace's shared queues: events, dead letters (tasks
    the broker gave up on, routed by their one-word service id) and poison (what the gateway
    could not handle, routed ``poison.*``).

    Workers declare them too, so an event is never unroutable because no gateway has run yet.
    """
    exchanges = await declare_exchanges(channel, topology)
    upgrade = "this gateway needs the new arguments: drain and delete the queue"
    events = await declare_queue(
        channel,
        topology.events_queue,
        _consumer_queue_arguments(topology, POISON_EVENTS_KEY),
        what=upgrade,
    )
    await events.bind(exchanges.events, routing_key="#")
    dead = await declare_queue(
        channel,
        topology.dead_letter_queue,
        _consumer_queue_arguments(topology, POISON_DEAD_KEY),
        what=upgrade,
    )
    await dead.bind(exchanges.dead_letter, routing_key="*")
    poison = await declare_queue(
        channel,
        topology.poison_queue,
        {"x-queue-type": "quorum", "x-max-length": POISON_MAX_LENGTH},
        what=upgrade,
    )
    await poison.bind(exchanges.dead_letter, routing_key="poison.#")
    return exchanges


RETRY_TIERS = (1, 5, 15, 60, 300, 900, 3600)


def retry_tier(delay: float) -> int:
    """The holding queue a delay waits in: the next tier up (the last for longer delays)."""
    return next((tier for tier in RETRY_TIERS if tier >= delay), RETRY_TIERS[-1])


async def declare_retry_queue(
    channel: AbstractChannel, topology: Topology, service: str, tier: int
) -> str:
    """Declare ``{ns}.retry.<service>.<tier>s``: every message waits ``tier`` seconds (one TTL
    per queue, so none waits behind a longer one), then goes back to the service's queue."""
    name = topology.retry_queue(service, tier)
    await channel.declare_queue(
        name,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-message-ttl": tier * 1000,
            "x-dead-letter-exchange": topology.tasks_exchange,
            "x-dead-letter-routing-key": service,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )
    return name


def webhook_retry_key(delay: int) -> str:
    return f"retry.{delay}s"


async def declare_webhook_queues(
    channel: AbstractChannel, topology: Topology, delays: Iterable[int]
) -> AbstractExchange:
    """Declare the webhooks' exchange, the queue of deliveries due now and one holding queue
    per delay of the retry schedule (one TTL per queue, so none waits behind a longer one;
    expired, a delivery goes back to the queue of those due)."""
    exchange = await channel.declare_exchange(
        topology.webhooks_exchange, ExchangeType.DIRECT, durable=True
    )
    due = await declare_queue(
        channel,
        topology.webhooks_queue,
        _consumer_queue_arguments(topology, POISON_WEBHOOKS_KEY),
        what="this gateway needs the new arguments: drain and delete the queue",
    )
    await due.bind(exchange, routing_key=WEBHOOK_DELIVER_KEY)
    for delay in sorted(set(delays)):
        holding = await declare_queue(
            channel,
            topology.webhook_retry_queue(delay),
            {
                "x-queue-type": "quorum",
                "x-message-ttl": delay * 1000,
                "x-dead-letter-exchange": topology.webhooks_exchange,
                "x-dead-letter-routing-key": WEBHOOK_DELIVER_KEY,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
            what="drain and delete the queue",
        )
        await holding.bind(exchange, routing_key=webhook_retry_key(delay))
    return exchange


async def delete_topology(
    channel: AbstractChannel,
    topology: Topology,
    services: Iterable[str],
    *,
    webhook_delays: Iterable[int] = DEFAULT_WEBHOOK_DELAYS,
) -> None:
    """Delete every queue and exchange of the namespace for these services and this webhook
    retry schedule (tests, bench, decommissioning). Messages in them are lost."""
    queues = [topology.events_queue, topology.dead_letter_queue, topology.poison_queue]
    for service in services:
        queues.append(topology.task_queue(service))
        queues.extend(topology.retry_queue(service, tier) for tier in RETRY_TIERS)
    queues.append(topology.webhooks_queue)
    queues.extend(topology.webhook_retry_queue(delay) for delay in set(webhook_delays))
    for name in queues:
        await channel.queue_delete(name, if_unused=False, if_empty=False)
    for name in (
        topology.tasks_exchange,
        topology.events_exchange,
        topology.control_exchange,
        topology.dead_letter_exchange,
        topology.webhooks_exchange,
    ):
        await channel.exchange_delete(name)
