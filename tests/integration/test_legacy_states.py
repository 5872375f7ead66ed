"""The old routes' numeric error codes for what fails on our side (205: the task was not
queued, 102: the store does not answer) and their STARTED state."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest

from gateway.store import JobQuery, WorkerInfo
from tests.conftest import AMQP_URL, Gateway, GatewayFactory
from tests.support import OutageStore
from worker_sdk.wire import Topology

pytestmark = pytest.mark.integration

JSON = {"Accept": "application/json"}
DOC = {"doc_url": "http://93.184.216.34/doc.txt"}


async def test_a_task_the_broker_refuses_is_205_and_the_job_reads_failure_205(
    gateway: Gateway, namespace: str
) -> None:
    topology = Topology(namespace)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.task_queue("echo"), ensure=True)
        await queue.unbind(topology.tasks_exchange, routing_key="echo")
    refused = await gateway.client.post("/echo/process", params=DOC, headers=JSON)
    assert refused.status_code == 503, refused.text
    assert refused.json()["vesta"]["code"] == 205
    (job,) = await gateway.runtime.store.page_jobs(JobQuery(owner=None))
    assert (job.status.value, job.reason) == ("failed", "publish_failed")
    status = await gateway.client.get("/echo/status", params={"uuid": str(job.id)}, headers=JSON)
    body = status.json()
    assert body["status"] == "FAILURE"
    assert body["result"]["code"] == 205


async def test_a_store_that_does_not_answer_is_102_and_nothing_is_queued(
    gateway_factory: GatewayFactory, namespace: str, tmp_path: Path
) -> None:
    store = OutageStore(tmp_path / "jobs.db", "insert")
    gateway = await gateway_factory(store=store)
    refused = await gateway.client.post("/echo/process", params=DOC, headers=JSON)
    assert refused.status_code == 503, refused.text
    assert refused.json()["vesta"]["code"] == 102
    assert store.failures == {"insert": 1}
    assert await gateway.runtime.broker.queue_depth(Topology(namespace).task_queue("echo")) == 0
    assert await store.page_jobs(JobQuery(owner=None)) == []


async def test_a_started_job_reads_started_until_it_reports_progress(gateway: Gateway) -> None:
    submitted = await gateway.client.post("/echo/process", params=DOC, headers=JSON)
    job_id = uuid.UUID(submitted.json()["uuid"])
    store = gateway.runtime.store
    run = uuid.uuid4()
    worker = WorkerInfo(id="w1", host="h", version="1.0.0")

    async def legacy_status() -> dict[str, object]:
        response = await gateway.client.get(
            "/echo/status", params={"uuid": str(job_id)}, headers=JSON
        )
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    assert (await legacy_status())["status"] == "PENDING"
    now = datetime.now(UTC)
    assert await store.start(job_id, attempt=1, run_id=run, worker=worker, at=now) is not None
    assert await legacy_status() == {"uuid": str(job_id), "status": "STARTED", "result": None}
    await store.progress(job_id, run_id=run, seq=1, percent=30, message="half", at=now)
    progress = await legacy_status()
    assert progress["status"] == "PROGRESS"
    assert isinstance(progress["result"], dict)
    assert progress["result"]["current"] == 30
