"""Messages whose AMQP properties pamqp cannot decode: published straight to the real broker,
in the test's namespace, as a buggy or rogue publisher could. Each reaches its consumer, which
sets it aside; no connection is closed and no other message is held back (worker_sdk.wire.lenient).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aio_pika
import pamqp.common
import pamqp.encode
import pytest
from pamqp import commands

from examples.echo import worker as echo_worker
from tests.conftest import AMQP_URL, Gateway
from tests.support import message, submit, wait_status
from tests.worker_sdk.test_lenient import nested_headers
from worker_sdk.wire import Topology, declare_topology

pytestmark = pytest.mark.integration

# A 64-bit AMQP timestamp that the broker stores and forwards as is, and that pamqp (under
# aiormq, under aio-pika) cannot turn into a datetime: "year 584556019 is out of range".
UNDECODABLE_TIMESTAMP = 2**64 - 1


@contextmanager
def _raw_timestamps() -> Iterator[None]:
    """Let this process's pamqp encode a raw integer as an AMQP timestamp (a publisher in any
    other language, or an older client, sends one without help)."""
    original = pamqp.encode.METHODS["timestamp"]

    def encode(value: Any) -> bytes:
        if isinstance(value, int):
            return pamqp.common.Struct.timestamp.pack(value)
        return original(value)

    pamqp.encode.METHODS["timestamp"] = encode
    try:
        yield
    finally:
        pamqp.encode.METHODS["timestamp"] = original


async def _publish(namespace: str, exchange: str, outgoing: list[tuple[Any, str]]) -> None:
    """Publish (confirmed, in order) each message to one of the namespace's core exchanges."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchanges = await declare_topology(channel, Topology(namespace))
        target = getattr(exchanges, exchange)
        with _raw_timestamps():  # in one burst, as a busy fleet's events arrive
            await asyncio.gather(*(target.publish(body, routing_key=key) for body, key in outgoing))


def _poisoned(body: bytes, **properties: Any) -> aio_pika.Message:
    poisoned = aio_pika.Message(body, **properties)
    poisoned.timestamp = UNDECODABLE_TIMESTAMP  # type: ignore[assignment]
    return poisoned


def _succeeded(job_id: str, service: str) -> bytes:
    return json.dumps(
        {
            "kind": "succeeded",
            "job_id": job_id,
            "service": service,
            "run_id": str(uuid.uuid4()),
            "worker_id": "w",
            "result": {"ok": True},
        }
    ).encode()


async def test_an_event_whose_properties_cannot_be_decoded_is_set_aside_and_loses_no_other(
    gateway: Gateway, namespace: str
) -> None:
    """One event with an out-of-range AMQP timestamp, with twenty results behind it. Strict
    decoding closed the gateway's only connection on it at every delivery: submissions were
    refused with 503 for most of a minute, and most results delivered beside it were parked
    with it in the poison queue (their jobs never ended). Now it is set aside alone."""
    jobs = [(await submit(gateway.client, "crunch", {})).json()["jobID"] for _ in range(20)]
    poison = _poisoned(b"{}", type="succeeded", correlation_id=jobs[0])
    goods = [
        (
            message(_succeeded(job, "crunch"), type="succeeded", correlation_id=job),
            "crunch.succeeded",
        )
        for job in jobs
    ]
    await _publish(namespace, "events", [(poison, "crunch.succeeded"), *goods])
    for job in jobs:
        await wait_status(gateway.client, job, "successful", within=20)
    after = await submit(gateway.client, "crunch", {})
    assert after.status_code == 201, after.text
    poison_queue = Topology(namespace).poison_queue
    assert (await gateway.runtime.broker.queue_stats(poison_queue))[0] == 1


async def test_a_task_whose_properties_cannot_be_decoded_stops_no_worker(
    gateway: Gateway, namespace: str, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    """The same on a task queue: strict decoding closed the worker's connection on it at every
    delivery (the tasks it held went back with it), so the work queued behind it waited for
    the queue's delivery limit, and then its dead-lettered copy closed the gateway's. Now the
    worker refuses it and runs the job behind it."""
    poison = _poisoned(b"{}", type="task", correlation_id=str(uuid.uuid4()))
    await _publish(namespace, "tasks", [(poison, "echo")])
    run_worker(echo_worker)
    job = (await submit(gateway.client, "echo", {"text": "behind the poison"})).json()["jobID"]
    await wait_status(gateway.client, job, "successful", within=20)


class _WireProperties(commands.Basic.Properties):
    """Properties published as the bytes given (what pamqp's own encoder, which recurses
    too, would not build in this process)."""

    def __init__(self, wire: bytes) -> None:
        super().__init__()
        self.wire = wire

    def marshal(self) -> bytes:
        return self.wire


async def test_an_event_whose_headers_nest_too_deep_is_set_aside_and_loses_no_other(
    gateway: Gateway, namespace: str
) -> None:
    """Headers a thousand tables deep: pamqp's decoder recursed past the interpreter's limit
    and the connection closed at every delivery, as for the timestamp above. Now it is
    delivered without its properties and set aside alone."""
    jobs = [(await submit(gateway.client, "crunch", {})).json()["jobID"] for _ in range(20)]
    topology = Topology(namespace)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchanges = await declare_topology(channel, topology)
        raw = await channel.get_underlay_channel()  # aiormq: properties go as they are
        await raw.basic_publish(
            b"{}",
            exchange=topology.events_exchange,
            routing_key="crunch.succeeded",
            properties=_WireProperties(nested_headers(1000)),
        )
        await asyncio.gather(
            *(
                exchanges.events.publish(
                    message(_succeeded(job, "crunch"), type="succeeded", correlation_id=job),
                    routing_key="crunch.succeeded",
                )
                for job in jobs
            )
        )
    for job in jobs:
        await wait_status(gateway.client, job, "successful", within=20)
    assert (await submit(gateway.client, "crunch", {})).status_code == 201
    assert (await gateway.runtime.broker.queue_stats(topology.poison_queue))[0] == 1
