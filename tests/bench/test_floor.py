"""The latency floor's crossings (``bench/floor.py``): each reaches another process through
the broker, and nothing of them stays on it."""

from __future__ import annotations

import subprocess
import sys
import uuid

import aio_pika
import httpx
import pytest
from aio_pika.exceptions import ChannelNotFoundEntity

from bench import floor
from bench.load import have_wrk, wrk_latency
from bench.support import AMQP_URL, ROOT, free_port, wait_ready
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


def test_the_floor_with_wrk_adds_wrks_http_crossing() -> None:
    least = floor.Floor(http=1.5, task=1.25, event=0.75, http_wrk=0.25)
    assert least.total_wrk == 2.25
    assert least.note(least.http_wrk) == "HTTP 0.25 + task 1.25 + event 0.75"
    assert floor.Floor(http=1.5, task=1.25, event=0.75).total_wrk is None


@pytest.mark.skipif(not have_wrk(), reason="wrk is not installed (apt-get install wrk)")
def test_the_http_crossing_is_served_by_uvicorn_in_another_process_to_both_clients() -> None:
    by_httpx, by_wrk = floor.http_round_trip(samples=3)
    assert 0 < by_httpx < 30_000
    assert by_wrk is not None
    assert 0 < by_wrk < 30_000


@pytest.mark.skipif(not have_wrk(), reason="wrk is not installed (apt-get install wrk)")
def test_wrk_counts_the_answers_that_hold_no_finished_job() -> None:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bench.floor:app", "--port", str(port)]
    server = subprocess.Popen([*command, "--log-level", "warning"], cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_ready(url, within=60)
        plain = wrk_latency(url, 1.4, waited=False)  # wrk takes whole seconds
        waited = wrk_latency(url, 1, idle_ms=5)
    finally:
        server.terminate()
        server.wait()
    assert plain is not None
    assert waited is not None
    assert plain.answers > 0
    assert plain.unfinished == 0
    assert 0 < plain.p50 <= plain.p99
    # The trivial app's {} names no job: every waited answer counts as unfinished. 5 ms apart,
    # wrk's second (which ends a little after it) holds some 200 of them, back to back
    # thousands.
    assert 0 < waited.answers == waited.unfinished <= 300
