"""Why the broker gave up on a task, read from the dead letter it made on the real broker: a
task retried through a holding queue that then reaches its delivery limit died of the limit,
though its first death was the holding queue's TTL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import aio_pika
import pytest

from gateway.dead_letters import dead_job, last_death
from tests.conftest import AMQP_URL
from worker_sdk.wire import Task, Topology
from worker_sdk.wire.catalogue import Catalogue
from worker_sdk.wire.topology import declare_retry_queue, declare_task_queue, declare_topology

pytestmark = pytest.mark.integration


async def _next(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    async with queue.iterator() as messages:
        return await asyncio.wait_for(anext(messages), 30)


async def test_a_retried_task_that_reaches_its_delivery_limit_died_of_the_limit(
    namespace: str, catalogue: Catalogue
) -> None:
    topology = Topology(namespace)
    spec = catalogue.get("suicide")  # delivery_limit 1: a delivery and one redelivery
    assert spec is not None
    job_id = uuid.uuid4()
    now = datetime.now(UTC)
    task = Task(
        job_id=job_id,
        service=spec.id,
        service_version=spec.version,
        inputs={},
        attempt=2,
        max_attempts=3,
        submitted_at=now,
        deadline=now.replace(year=now.year + 1),
    )
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        await declare_topology(channel, topology)
        tasks = await declare_task_queue(channel, topology, spec.id, spec.queue_options)
        holding = await declare_retry_queue(channel, topology, spec.id, 1)
        # The retry path: attempt 2 waits its delay in the holding queue, then is queued.
        await channel.default_exchange.publish(
            aio_pika.Message(task.to_bytes(), correlation_id=str(job_id)), routing_key=holding
        )
        for _ in range(2):  # every worker it reaches dies: the broker takes it back
            await (await _next(tasks)).reject(requeue=True)
        dead = await _next(await channel.get_queue(topology.dead_letter_queue))
        await dead.ack()
    assert dead.headers["x-first-death-reason"] == "expired"  # the holding queue's TTL
    assert last_death(dead.headers) == "delivery_limit"
    assert dead_job(dead) == (job_id, spec.id, "delivery_limit")


def test_without_x_death_the_brokers_other_headers_say_why() -> None:
    assert last_death({"x-last-death-reason": "expired"}) == "expired"
    assert last_death({"x-first-death-reason": "rejected"}) == "rejected"
    assert last_death({"x-death": [{"reason": b"delivery_limit"}]}) == "delivery_limit"
    assert last_death({"x-death": "garbage", "x-first-death-reason": "expired"}) == "expired"
    assert last_death({}) == ""
