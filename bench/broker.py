"""The bench's own broker calls: the raw publish ceiling, purging and deleting its queues."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable

import aio_pika

from bench.support import AMQP_URL, BODY
from worker_sdk.wire import (
    TaskQueueOptions,
    Topology,
    declare_task_queue,
    declare_topology,
    delete_topology,
)

RAW_SERVICE = "rawbench"


async def raw_publish_rate(namespace: str, total: int, window: int = 64) -> float:
    """Confirmed, persistent, mandatory publishes to a quorum queue with ``window`` in flight:
    the ceiling of any submit that is confirmed before it is answered."""
    topology = Topology(namespace)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_topology(channel, topology)
        await declare_task_queue(channel, topology, RAW_SERVICE, TaskQueueOptions())
        exchange = await channel.get_exchange(topology.tasks_exchange)
        slots = asyncio.Semaphore(window)

        async def one() -> None:
            async with slots:
                message = aio_pika.Message(
                    BODY,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=uuid.uuid4().hex,
                )
                await exchange.publish(message, RAW_SERVICE, mandatory=True, timeout=30)

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        elapsed = time.perf_counter() - start
        await channel.queue_delete(topology.task_queue(RAW_SERVICE))
    return total / elapsed


async def purge(queues: Iterable[str]) -> None:
    """Drop the messages waiting in ``queues`` (those that exist)."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        for name in queues:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                continue  # never declared: nothing to purge
            await queue.purge()
            await channel.close()


async def wait_consumers(queue: str, count: int, within: float) -> None:
    """Return once ``queue`` has ``count`` consumers; raise after ``within`` seconds."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        deadline = time.perf_counter() + within
        while True:
            declared = await channel.declare_queue(queue, passive=True)
            if (declared.declaration_result.consumer_count or 0) >= count:
                return
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{queue} had no {count} consumers within {within:g} s")
            await asyncio.sleep(0.01)  # polling the broker's count, the measure's clock


async def delete_namespace(namespace: str, services: Iterable[str]) -> None:
    """Delete every queue and exchange of our namespace."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await delete_topology(channel, Topology(namespace), [*services, RAW_SERVICE])


async def delete_names(queues: Iterable[str], exchanges: Iterable[str]) -> None:
    """Delete these queues and exchanges (the baseline's)."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)
