"""The latency floor's crossings (``bench/floor.py``): each reaches another process through
the broker, and nothing of them stays on it."""

from __future__ import annotations

import uuid

import aio_pika
import httpx
import pytest
from aio_pika.exceptions import ChannelNotFoundEntity

from bench import floor
from bench.support import AMQP_URL
from worker_sdk.wire import Topology


async def test_the_trivial_app_reads_the_whole_body_and_answers_at_once() -> None:
    transport = httpx.ASGITransport(app=floor.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://floor") as client:
        r = await client.post("/", content=b"x" * 200_000)
    assert (r.status_code, r.json()) == (200, {})


async def test_each_crossing_reaches_the_other_process_and_nothing_stays_on_the_broker() -> None:
    namespace = f"test-floor-{uuid.uuid4().hex[:8]}"
    measured = await floor.crossings(namespace, samples=5)
    assert set(measured) == {"task", "event"}
    # Received by another process after being published: later, and within the wait.
    assert all(0 < ms < 30_000 for ms in measured.values())
    topology = Topology(namespace)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        for queue in (topology.task_queue(floor.SERVICE), topology.events_queue):
            channel = await connection.channel()
            with pytest.raises(ChannelNotFoundEntity):
                await channel.declare_queue(queue, passive=True)


def test_the_floor_adds_its_crossings() -> None:
    least = floor.Floor(http=1.5, task=1.25, event=0.75)
    assert least.total == 3.5
    assert least.note() == "HTTP 1.50 + task 1.25 + event 0.75"


def test_the_http_crossing_is_served_by_uvicorn_in_another_process() -> None:
    assert 0 < floor.http_round_trip(samples=3) < 30_000
