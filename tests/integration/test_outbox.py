"""No accepted job waits for the reaper: a gateway that dies between recording a job and the
broker's confirm leaves a job the recovery pass queues within seconds — and never queues
twice, whether or not the broker already held its task."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import httpx
import jwt
import pytest

from gateway.recovery import task_for
from gateway.store import JobRecord, JobStatus
from tests import workers
from tests.conftest import AMQP_URL, TEST_SECRET, GatewayFactory
from tests.live import LiveGateway
from tests.support import TEST_CATALOGUE, eventually, job_state, message, wait_status
from worker_sdk.wire import Topology

pytestmark = pytest.mark.integration

JOBS = 5000
CLIENTS = 16
KILLS = 10


@pytest.mark.chaos
@pytest.mark.timeout(600)
async def test_a_gateway_killed_mid_submit_loses_no_job_and_runs_none_twice(
    namespace: str, tmp_path: Path, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    """16 clients submit 5,000 jobs, each with an Idempotency-Key, retrying every refused or
    broken attempt with the same key, while the gateway is SIGKILLed ten times: every key's
    job ends successful within 30 s of the last restart, each handler completing once."""
    server = LiveGateway(
        namespace=namespace,
        workdir=tmp_path,
        catalogue=TEST_CATALOGUE,
        publish_timeout="1",
    )
    server.start()
    await server.ready()
    workers.completions.clear()
    run_worker(workers.counted, concurrency=64)
    token = jwt.encode(
        {"sub": "kill", "exp": int(time.time()) + 3600}, TEST_SECRET, algorithm="HS256"
    )
    numbers = iter(range(JOBS))
    answered: dict[int, str] = {}
    refusals = itertools.count()
    kills: list[float] = []

    async def client() -> None:
        async with httpx.AsyncClient(
            base_url=server.base, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as http:
            for n in numbers:
                while True:
                    try:
                        response = await http.post(
                            "/processes/counted/execution",
                            json={"inputs": {"n": n}},
                            headers={"Idempotency-Key": f"key-{n}"},
                        )
                    except httpx.HTTPError:
                        response = None
                    if response is not None and response.status_code in (200, 201):
                        answered[n] = response.json()["jobID"]
                        break
                    if response is not None:
                        assert response.status_code == 503, response.text
                    next(refusals)
                    await asyncio.sleep(0.05)  # the client's back-off before its retry

    async def killer() -> None:
        for round_ in range(KILLS):
            target = (round_ + 1) * JOBS // (KILLS + 2)
            await eventually(
                lambda t=target: _true(len(answered) >= t), within=120, what=f"{target} answers"
            )
            server.kill()
            server.start()
            await server.ready()
            kills.append(time.monotonic())

    try:
        await asyncio.gather(killer(), *(client() for _ in range(CLIENTS)))
        last_restart = kills[-1]
        jobs = set(answered.values())

        async def all_successful() -> bool:
            return _statuses(server.database, jobs) == {"successful": len(jobs)}

        await eventually(all_successful, within=30, what="every key's job to succeed")
        settled_after = time.monotonic() - last_restart
    finally:
        await server.stop()
    assert len(kills) == KILLS
    assert sorted(answered) == list(range(JOBS))
    assert len(jobs) == JOBS
    completed_twice = {j: c for j, c in workers.completions.items() if c > 1}
    assert completed_twice == {}
    assert set(workers.completions) == jobs
    print(  # noqa: T201 - the figures of the run, shown with -s
        {
            "jobs": JOBS,
            "kills": KILLS,
            "refused or broken attempts, retried": next(refusals),
            "seconds from the last restart to all successful": round(settled_after, 1),
        }
    )


def _statuses(database: Path, jobs: set[str]) -> dict[str, int]:
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT id, status FROM jobs").fetchall()
    counts: dict[str, int] = {}
    for job_id, status in rows:
        if job_id in jobs:
            counts[status] = counts.get(status, 0) + 1
    return counts


async def _true(value: bool) -> bool:
    return value


def _orphan(service: str, age: float, **fields: object) -> JobRecord:
    """A job recorded ``age`` seconds ago whose publish never got its mark."""
    created = datetime.now(UTC) - timedelta(seconds=age)
    return JobRecord(
        id=uuid.uuid4(),
        service=service,
        owner="alice",
        inputs={"n": 1},
        created=created,
        updated=created,
        **fields,  # type: ignore[arg-type]
    )


async def test_a_job_whose_task_never_reached_the_broker_is_queued_and_runs_once(
    gateway_factory: GatewayFactory, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    gateway = await gateway_factory(publish_timeout=0.5, recovery_interval=0.2, recovery_grace=0.2)
    workers.completions.clear()
    run_worker(workers.counted)
    orphan = _orphan("counted", age=10)
    await gateway.runtime.store.insert(orphan)  # as a gateway that died before publishing
    done = await wait_status(gateway.client, str(orphan.id), "successful", within=20)
    assert done["attempt"] == 1
    assert workers.completions[str(orphan.id)] == 1
    record = await gateway.runtime.store.get(orphan.id)
    assert record is not None
    assert record.queued is not None


async def test_a_task_the_broker_already_holds_is_not_published_again(
    gateway_factory: GatewayFactory,
    run_worker: Callable[..., asyncio.Task[None]],
    namespace: str,
) -> None:
    """The gateway died after the broker confirmed the task but before marking the job: the
    task waits in a backlog when recovery looks. The barrier queues behind it, so recovery
    finds the job running or done once the barrier passes, and publishes nothing."""
    gateway = await gateway_factory(publish_timeout=0.5, recovery_interval=0.2, recovery_grace=0.5)
    workers.completions.clear()
    orphan = _orphan("counted", age=10)
    spec = gateway.runtime.catalogue.get("counted")
    assert spec is not None
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = Topology(namespace).task_queue("counted")
        await gateway.runtime.store.insert(orphan)
        await channel.default_exchange.publish(
            message(task_for(orphan, spec).to_bytes(), type="task", correlation_id=str(orphan.id)),
            routing_key=queue,
        )

        async def barrier_queued() -> bool:
            declared = await channel.declare_queue(queue, passive=True)
            return declared.declaration_result.message_count == 2  # the task, then a barrier

        await eventually(barrier_queued, what="recovery to send its barrier behind the task")
    run_worker(workers.counted)
    await wait_status(gateway.client, str(orphan.id), "successful", within=20)

    async def barrier_settled() -> bool:
        return not gateway.runtime.recovery.pending

    await eventually(barrier_settled, what="the recovery pass to close its barrier")
    assert workers.completions[str(orphan.id)] == 1
    assert gateway.runtime.recovery.recovered == 0
    assert (await job_state(gateway.client, str(orphan.id)))["status"] == JobStatus.SUCCESSFUL


async def test_replaying_the_key_of_an_unqueued_job_gets_it_queued(
    gateway_factory: GatewayFactory, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    gateway = await gateway_factory(publish_timeout=0.5, recovery_interval=3600, recovery_grace=0.2)
    workers.completions.clear()
    run_worker(workers.counted)
    orphan = _orphan(
        "counted",
        age=10,
        idempotency_key="k1",
        request_hash=_fingerprint("counted", {"n": 1}),
    )
    await gateway.runtime.store.insert(orphan)
    replay = await gateway.client.post(
        "/processes/counted/execution", json={"inputs": {"n": 1}}, headers={"Idempotency-Key": "k1"}
    )
    assert replay.status_code == 200
    assert replay.json()["jobID"] == str(orphan.id)
    # The pass runs once an hour here: only the replay can have woken it.
    await wait_status(gateway.client, str(orphan.id), "successful", within=20)
    assert workers.completions[str(orphan.id)] == 1


def _fingerprint(service: str, inputs: dict[str, object]) -> str:
    from gateway.jobs import _fingerprint as fingerprint

    return fingerprint(service, inputs)
