"""Hostile heartbeats, published straight to the real broker as anyone holding a worker's
rights could: whatever concurrency or jobs a worker announces, the workers and capacity
figures stay answerable, quickly, and the dashboard shows them escaped."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
import pytest

from gateway.store import JobQuery, JobRecord, JobStatus
from gateway.ui.monitor import SHOWN_RUNNING, SHOWN_WORKERS
from tests.conftest import AMQP_URL, Gateway
from tests.integration.test_dashboard import _signed_in
from tests.support import TEST_CATALOGUE, eventually, message, submit, wait_status
from worker_sdk.wire import MAX_CONCURRENCY, Topology, declare_topology
from worker_sdk.wire.catalogue import Catalogue, parse_catalogue

pytestmark = pytest.mark.integration

Send = Callable[..., Any]


@pytest.fixture
def catalogue() -> Catalogue:
    planned = '  planned:\n    title: Planned\n    version: "1.0.0"\n    target_wait: 5\n'
    return parse_catalogue(TEST_CATALOGUE + planned, source="tests")


@pytest.fixture
async def events(namespace: str) -> AsyncIterator[Send]:
    """Publish raw bodies to the events exchange, as a (rogue) worker would."""
    async with publishing(namespace) as send:
        yield send


@asynccontextmanager
async def publishing(namespace: str) -> AsyncIterator[Send]:
    """A sender of raw bodies to the namespace's events exchange."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = (await declare_topology(channel, Topology(namespace))).events

        async def send(body: dict[str, Any], key: str, job_id: str | None = None) -> None:
            kind = key.rsplit(".", 1)[-1]
            raw = json.dumps(body).encode()
            await exchange.publish(message(raw, type=kind, correlation_id=job_id), routing_key=key)

        yield send


def _beat(worker_id: str, service: str, **fields: Any) -> dict[str, Any]:
    return {
        "kind": "heartbeat",
        "worker_id": worker_id,
        "service": service,
        "version": "1",
        "host": "h",
        "concurrency": 1,
        **fields,
    }


async def _one_run(gateway: Gateway, events: Send, service: str) -> None:
    """A job of ``service`` that ran and succeeded (its events sent by a rogue worker), so
    that the service has a measured run time, and another job waiting."""
    job = (await submit(gateway.client, service, {})).json()["jobID"]
    now = datetime.now(UTC).isoformat()
    done = {
        "kind": "succeeded",
        "job_id": job,
        "service": service,
        "run_id": str(uuid.uuid4()),
        "worker_id": "rogue",
        "start": {"host": "h", "worker_version": "1", "started_at": now},
        "result": {},
    }
    await events(done, f"{service}.succeeded", job)
    await wait_status(gateway.client, job, "successful")
    assert (await submit(gateway.client, service, {})).status_code == 201


async def _live(gateway: Gateway, service: str, count: int) -> None:
    async with gateway.as_user("ops", "sg:admin") as admin:

        async def listed() -> bool:
            answer = await admin.get(f"/processes/{service}/workers")
            return answer.status_code == 200 and len(answer.json()["workers"]) == count

        await eventually(listed, within=30, what=f"{count} workers listed")


async def test_workers_of_no_slot_leave_the_capacity_figures_answerable(
    gateway: Gateway, events: Send
) -> None:
    await _one_run(gateway, events, "planned")
    await events(_beat("idle", "planned", concurrency=0), "planned.heartbeat")
    await _live(gateway, "planned", 1)
    async with gateway.as_user("ops", "sg:admin") as admin:
        answer = await admin.get("/processes/planned/capacity")
        assert answer.status_code == 200, answer.text
        assert answer.json()["slots"] == 0
        assert (await admin.get("/capacity")).status_code == 200
        assert (await admin.get("/ui/workers/table")).status_code != 500


async def test_a_huge_announced_concurrency_does_not_stall_the_gateway(
    gateway: Gateway, events: Send
) -> None:
    await _one_run(gateway, events, "echo")
    workers = 100
    for n in range(workers):
        await events(_beat(f"greedy-{n}", "echo", concurrency=MAX_CONCURRENCY), "echo.heartbeat")
    await _live(gateway, "echo", workers)
    async with gateway.as_user("ops", "sg:admin") as admin:
        start = time.monotonic()
        answer = await asyncio.wait_for(admin.get("/processes/echo/capacity"), timeout=20)
        took = time.monotonic() - start
        assert answer.status_code == 200, answer.text
        assert answer.json()["slots"] == workers * MAX_CONCURRENCY
        assert took < 3.0, f"the capacity figures took {took:.1f} s"


async def test_a_worker_clock_decades_behind_cannot_start_a_run_before_its_job(
    gateway: Gateway, events: Send
) -> None:
    """A worker's clock can be decades behind (a host without NTP): the run it says started in
    2000 is recorded as started when its job was created, so the service's run time stays
    what the gateway's clock saw."""
    job = (await submit(gateway.client, "echo", {})).json()["jobID"]
    done = {
        "kind": "succeeded",
        "job_id": job,
        "service": "echo",
        "run_id": str(uuid.uuid4()),
        "worker_id": "skewed",
        "start": {"host": "h", "worker_version": "1", "started_at": "2000-01-01T00:00:00Z"},
        "emitted_at": "2000-01-01T00:00:01Z",
        "result": {},
    }
    await events(done, "echo.succeeded", job)
    status = await wait_status(gateway.client, job, "successful")
    assert status["started"] == status["created"] == status["finished"]
    await events(_beat("skewed", "echo"), "echo.heartbeat")
    await _live(gateway, "echo", 1)
    async with gateway.as_user("ops", "sg:admin") as admin:
        figures = (await admin.get("/processes/echo/capacity")).json()
        assert 0 <= figures["runTime"]["mean"] < 60


async def test_a_run_recorded_decades_long_leaves_statuses_answerable(
    gateway: Gateway, events: Send
) -> None:
    """A store written before starts were bounded by their job's creation may hold a run its
    worker's clock made decades long: the mean run time is then decades long, and the
    estimated start of a job far down the queue lies past the year 9999."""
    old = datetime(2000, 1, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    record = JobRecord(
        id=uuid.uuid4(),
        service="echo",
        owner="alice",
        status=JobStatus.SUCCESSFUL,
        created=old,
        started=old,
        finished=now,
        updated=now,
    )
    await gateway.runtime.store.insert(record)
    await events(_beat("skewed", "echo"), "echo.heartbeat")
    await _live(gateway, "echo", 1)
    async with gateway.as_user("ops", "sg:admin") as admin:
        figures = (await admin.get("/processes/echo/capacity")).json()
        assert figures["runTime"]["mean"] > 20 * 365 * 86400  # and now the recent figures
    queued: list[httpx.Response] = []
    for _ in range(8):  # 50 at a time: 400 at once outwait the confirm timeout on a busy host
        queued += await asyncio.gather(*(submit(gateway.client, "echo", {}) for _ in range(50)))
    assert [answer.status_code for answer in queued] == [201] * 400
    # The last in the queue's order (created, then id): an answer's created is to the second.
    [newest] = await gateway.runtime.store.page_jobs(JobQuery(owner=None, limit=1))
    last = {"jobID": str(newest.id)}
    status = await gateway.client.get(f"/jobs/{last['jobID']}")
    assert status.status_code == 200, status.text
    assert status.json()["queuePosition"] == 400
    assert "estimatedStart" not in status.json()
    async with _signed_in(gateway, "alice") as browser:
        page = await browser.get(f"/ui/jobs/{last['jobID']}")
        assert page.status_code == 200, page.text


async def test_the_workers_page_stays_small_whatever_workers_claim_to_run(
    gateway: Gateway, events: Send
) -> None:
    claimed = 3000
    for n in range(2):
        running = [str(uuid.uuid4()) for _ in range(claimed)]
        await events(_beat(f"busy-{n}", "echo", running=running), "echo.heartbeat")
    for n in range(SHOWN_WORKERS - 1):
        await events(_beat(f"crowd-{n}", "echo"), "echo.heartbeat")
    await _live(gateway, "echo", SHOWN_WORKERS + 1)
    async with _signed_in(gateway, "root", gateway.runtime.settings.admin_scope) as admin:
        for path in ("/ui/workers", "/ui/workers/table"):
            page = await admin.get(path)
            assert page.status_code == 200, page.text
            assert len(page.content) < 400_000, (path, len(page.content))
            assert f"and {claimed - SHOWN_RUNNING} more" in page.text
            assert page.text.count("data-worker=") == SHOWN_WORKERS
            assert "and 1 more workers" in page.text
