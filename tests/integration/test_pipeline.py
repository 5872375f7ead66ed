"""Submit → RabbitMQ → worker → events → store → status, end to end on the real broker."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from examples.echo import worker as echo_worker
from tests import workers
from tests.conftest import AMQP_URL, Gateway
from tests.support import eventually, job_state, message, submit, wait_status
from worker_sdk import JobContext, Worker
from worker_sdk.wire import (
    TASK,
    Event,
    Heartbeat,
    Outcomes,
    Progress,
    Started,
    Succeeded,
    Topology,
    parse_event,
)
from worker_sdk.wire.catalogue import Catalogue

pytestmark = pytest.mark.integration

RunWorker = Callable[..., asyncio.Task[None]]
SpawnWorker = Callable[..., subprocess.Popen[bytes]]


@asynccontextmanager
async def observe_events(namespace: str) -> AsyncIterator[list[Event]]:
    """Collect a copy of every event published in the namespace."""
    seen: list[Event] = []
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(Topology(namespace).events_exchange, routing_key="#")

        async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            event = parse_event(message.body)  # the ends of an outcomes message one by one
            seen.extend(event.events if isinstance(event, Outcomes) else [event])

        await queue.consume(collect, no_ack=True)
        yield seen


async def test_a_job_runs_to_success_with_its_result(
    client: httpx.AsyncClient, namespace: str, run_worker: RunWorker
) -> None:
    async with observe_events(namespace) as events:
        run_worker(echo_worker)
        job = (await submit(client, "echo", {"text": "hello"})).json()
        state = await wait_status(client, job["jobID"], "successful")

        async def seen() -> bool:
            return any(isinstance(e, Succeeded) for e in events)

        await eventually(seen, what="the observer's copy of the succeeded event")
    assert state["progress"] == 100
    assert state["started"] is not None
    assert state["finished"] is not None
    results = await client.get(f"/jobs/{job['jobID']}/results")
    assert results.status_code == 200
    assert results.json() == {"text": "hello"}
    # A run shorter than the worker's started_delay sends one event, which carries its start.
    (only,) = [e for e in events if not isinstance(e, Heartbeat)]
    assert isinstance(only, Succeeded)
    assert only.start is not None
    assert only.start.worker_version == "1.0.0"


async def test_prefer_wait_answers_200_with_the_results_of_the_finished_job(
    client: httpx.AsyncClient, run_worker: RunWorker
) -> None:
    run_worker(echo_worker)
    response = await submit(client, "echo", {"text": "sync"}, headers={"Prefer": "wait=10"})
    assert response.status_code == 200, response.text
    assert response.headers["preference-applied"] == "wait=10"
    assert response.json() == {"text": "sync"}
    job = await job_state(client, response.headers["location"].rsplit("/", 1)[1])
    assert job["status"] == "successful"
    assert response.headers["link"] == f'<{response.headers["location"]}>; rel="monitor"'


async def test_prefer_wait_times_out_into_an_async_201(client: httpx.AsyncClient) -> None:
    response = await submit(client, "echo", {}, headers={"Prefer": "wait=1"})
    assert response.status_code == 201
    assert response.json()["status"] == "accepted"


async def test_a_handler_exception_fails_the_job_with_its_message(
    client: httpx.AsyncClient, run_worker: RunWorker
) -> None:
    run_worker(echo_worker)
    job = (await submit(client, "echo", {"fail": "disk on fire"})).json()
    state = await wait_status(client, job["jobID"], "failed")
    assert state["reason"] == "handler_error"
    assert state["message"] == "disk on fire"
    results = await client.get(f"/jobs/{job['jobID']}/results")
    assert results.status_code == 422
    assert results.json()["job_error"] == {
        "code": "echo_failure",
        "type": "HandlerError",
        "message": "disk on fire",
        "retryable": False,
    }


async def test_inputs_that_do_not_fit_the_handler_model_fail_as_invalid_input(
    client: httpx.AsyncClient, run_worker: RunWorker
) -> None:
    run_worker(workers.spin)
    job = (await submit(client, "spin", {"spin": "fast"})).json()  # no schema in the catalogue
    state = await wait_status(client, job["jobID"], "failed")
    assert state["reason"] == "invalid_input"


async def test_progress_from_a_child_process_handler_reaches_the_job(
    client: httpx.AsyncClient, run_worker: RunWorker, tmp_path: Path
) -> None:
    run_worker(workers.crunch)
    gate = tmp_path / "gate"
    job = (await submit(client, "crunch", {"gate": str(gate), "progress": 42})).json()

    async def progressed() -> dict[str, Any] | None:
        state = await job_state(client, job["jobID"])
        return state if state["progress"] == 42 else None

    state = await eventually(progressed, what="progress 42")
    assert state["status"] == "running"
    assert state["message"] == "crunching"
    gate.touch()
    await wait_status(client, job["jobID"], "successful")
    result = (await client.get(f"/jobs/{job['jobID']}/results")).json()
    assert result["pid"] != os.getpid()


async def test_a_job_whose_queue_ttl_passes_with_no_worker_ends_dismissed_expired(
    client: httpx.AsyncClient,
) -> None:
    job = (await submit(client, "ephemeral", {})).json()
    state = await wait_status(client, job["jobID"], "dismissed")
    assert state["reason"] == "expired"
    assert (await client.get(f"/jobs/{job['jobID']}/results")).json()["code"] == "job-dismissed"


async def test_a_worker_killed_mid_job_leaves_the_job_to_finish_once_on_another(
    client: httpx.AsyncClient,
    namespace: str,
    spawn_worker: SpawnWorker,
    run_worker: RunWorker,
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    async with observe_events(namespace) as events:
        doomed = spawn_worker("tests.workers:slow")
        job = (await submit(client, "slow", {"gate": str(gate)})).json()
        first = await wait_status(client, job["jobID"], "running", within=30)
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
        gate.touch()
        run_worker(workers.slow)
        state = await wait_status(client, job["jobID"], "successful")
        assert state["attempt"] == 1
        result = (await client.get(f"/jobs/{job['jobID']}/results")).json()
        assert result["pid"] == os.getpid()  # the survivor, not the killed worker

        async def both_seen() -> bool:
            return any(isinstance(e, Succeeded) for e in events)

        await eventually(both_seen, what="the succeeded event")
    job_id = uuid.UUID(job["jobID"])
    runs = {e.run_id for e in events if isinstance(e, Started) and e.job_id == job_id}
    wins = [e for e in events if isinstance(e, Succeeded) and e.job_id == job_id]
    assert len(runs) == 2  # started on the killed worker, then on the survivor
    assert len(wins) == 1  # and succeeded exactly once
    assert first["started"] == state["started"]


async def test_a_task_that_kills_every_worker_ends_failed_worker_lost(
    client: httpx.AsyncClient, spawn_worker: SpawnWorker
) -> None:
    job = (await submit(client, "suicide", {})).json()
    for _ in range(2):  # delivery_limit 1: the first delivery and one redelivery
        crashed = spawn_worker("tests.workers:suicide")
        crashed.wait(timeout=30)
        assert crashed.returncode == -signal.SIGKILL
    state = await wait_status(client, job["jobID"], "failed")
    assert state["reason"] == "worker_lost"
    problem = (await client.get(f"/jobs/{job['jobID']}/results")).json()
    assert problem["job_error"]["type"] == "DeliveryLimit"
    assert "2 times" in problem["job_error"]["message"]  # delivery_limit 1: two deliveries


async def test_heartbeats_keep_flowing_while_handlers_burn_cpu(
    client: httpx.AsyncClient, namespace: str, run_worker: RunWorker
) -> None:
    async with observe_events(namespace) as events:
        run_worker(workers.spin)
        job = (await submit(client, "spin", {"spin": 1.5})).json()
        await wait_status(client, job["jobID"], "running")
        await wait_status(client, job["jobID"], "successful")
    job_id = uuid.UUID(job["jobID"])
    busy = [e for e in events if isinstance(e, Heartbeat) and job_id in e.running]
    assert len(busy) >= 5  # every 0.1 s for 1.5 s of a GIL-holding thread
    assert busy[0].version == "1.0.0"
    assert any(isinstance(e, Progress) and e.job_id == job_id for e in events)


async def test_progress_is_coalesced(
    client: httpx.AsyncClient, namespace: str, run_worker: RunWorker
) -> None:
    async with observe_events(namespace) as events:
        run_worker(workers.spin)
        job = (await submit(client, "spin", {"spin": 0.6})).json()
        await wait_status(client, job["jobID"], "successful")
    progress = [e for e in events if isinstance(e, Progress)]
    # The handler reports on every 100,000 spins (thousands of calls); the worker publishes
    # at most one event per 0.25 s window.
    assert 1 <= len(progress) <= 6
    assert [p.seq for p in progress] == sorted({p.seq for p in progress})


async def test_sigterm_lets_the_running_job_finish_then_exits(
    client: httpx.AsyncClient, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    worker = spawn_worker("tests.workers:slow")
    job = (await submit(client, "slow", {"gate": str(gate)})).json()
    await wait_status(client, job["jobID"], "running", within=30)
    worker.send_signal(signal.SIGTERM)
    queued = (await submit(client, "slow", {})).json()  # must not be taken any more
    gate.touch()
    await wait_status(client, job["jobID"], "successful")
    assert await asyncio.to_thread(worker.wait, 30) == 0
    assert (await job_state(client, queued["jobID"]))["status"] == "accepted"


async def test_burst_mode_drains_the_queue_then_returns(
    client: httpx.AsyncClient, namespace: str, catalogue: Catalogue
) -> None:
    jobs = [(await submit(client, "echo", {"text": str(i)})).json() for i in range(5)]
    await asyncio.wait_for(
        echo_worker.run(
            amqp_url=AMQP_URL, catalogue=catalogue, namespace=namespace, concurrency=2, burst=True
        ),
        timeout=30,
    )
    for job in jobs:
        await wait_status(client, job["jobID"], "successful")


async def test_events_apply_idempotently_whatever_their_order(
    gateway: Gateway, namespace: str
) -> None:
    client = gateway.client
    job = (await submit(client, "echo", {})).json()
    job_id = uuid.UUID(job["jobID"])
    run = uuid.uuid4()
    base = {"job_id": job_id, "service": "echo", "run_id": run, "worker_id": "w"}
    script = [
        Progress(**base, percent=30, seq=2),  # before its run started: dropped
        Started(**base, host="h", worker_version="1"),
        Progress(**base, percent=50, seq=2),
        Progress(**base, percent=20, seq=1),  # late: dropped
        Started(**base, host="h", worker_version="1"),  # duplicate: no-op
        Succeeded(**base, result={"n": 1}),
        Succeeded(**base, result={"n": 2}),  # duplicate terminal: dropped
    ]
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(Topology(namespace).events_exchange)
        for event in script:
            await exchange.publish(
                aio_pika.Message(event.to_bytes()), routing_key=f"echo.{event.kind}"
            )
        await exchange.publish(aio_pika.Message(b"not json"), routing_key="echo.progress")
        ghost = Succeeded(**{**base, "job_id": uuid.uuid4()})
        await exchange.publish(aio_pika.Message(ghost.to_bytes()), routing_key="echo.succeeded")
    state = await wait_status(client, job["jobID"], "successful")
    assert (await client.get(f"/jobs/{job['jobID']}/results")).json() == {"n": 1}

    async def drained() -> bool:
        queue = await gateway.runtime.broker.queue_depth(Topology(namespace).events_queue)
        return queue == 0

    await eventually(drained, what="the events queue to drain")
    assert state["progress"] == 100


async def test_sigterm_hands_back_what_cannot_finish_within_the_grace(
    gateway: Gateway,
    spawn_worker: SpawnWorker,
    run_worker: RunWorker,
    tmp_path: Path,
) -> None:
    client = gateway.client
    gate = tmp_path / "gate"
    leaving = spawn_worker("tests.workers:slow", extra=("--shutdown-grace", "0.5"))
    job = (await submit(client, "slow", {"gate": str(gate)})).json()
    first = await wait_status(client, job["jobID"], "running", within=30)
    job_id = uuid.UUID(job["jobID"])
    first_run = (await gateway.runtime.store.get(job_id)).run_id  # type: ignore[union-attr]
    leaving.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(leaving.wait, 15) == 0  # gone after its 0.5 s grace
    run_worker(workers.slow)  # takes the handed-back task

    async def rerun() -> bool:
        record = await gateway.runtime.store.get(job_id)
        return record is not None and record.run_id not in (None, first_run)

    await eventually(rerun, what="the handed-back job to run again on the new worker")
    gate.touch()
    done = await wait_status(client, job["jobID"], "successful")
    assert done["started"] == first["started"]
    result = (await client.get(f"/jobs/{job['jobID']}/results")).json()
    assert result["pid"] == os.getpid()


async def _outlives_its_queue_ttl(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Runs past the ephemeral service's queue TTL (0.3 s), says so, then waits for its gate."""
    await asyncio.sleep(0.5)  # the run's own work: half a second of it
    ctx.progress(50, "past the queue TTL")
    while not Path(inputs["gate"]).exists():  # noqa: ASYNC110, ASYNC240 - a cross-process file
        await asyncio.sleep(0.01)
    return {"worker": ctx.worker_id}


async def test_a_task_handed_back_after_its_queue_ttl_runs_on_another_worker(
    gateway: Gateway, run_worker: RunWorker, tmp_path: Path
) -> None:
    """The TTL counts from submission and kept counting while the first worker ran the job:
    its task, handed back on the worker's stop, came back expired and the job failed
    worker_lost although another worker stood idle."""
    first = Worker("ephemeral", version="1.0.0", shutdown_grace=0.1)
    first.handler(_outlives_its_queue_ttl)
    second = Worker("ephemeral", version="1.0.0")
    second.handler(_outlives_its_queue_ttl)
    gate = tmp_path / "gate"
    job = (await submit(gateway.client, "ephemeral", {"gate": str(gate)})).json()
    leaving = run_worker(first)

    async def past_its_ttl() -> bool:
        return bool((await job_state(gateway.client, job["jobID"]))["progress"] == 50)

    await eventually(past_its_ttl, what="the first run to outlive its task's TTL")
    run_worker(second)
    first.stop()
    await asyncio.wait_for(leaving, 30)  # handed back: the first run is over
    gate.touch()
    done = await wait_status(gateway.client, job["jobID"], "successful", "failed")
    assert done["status"] == "successful", done  # the first worker had stopped: the second's


@pytest.mark.parametrize("reference", ["tests.workers:stuck_thread", "tests.workers:stuck_task"])
async def test_a_worker_stopped_exits_though_a_handler_never_stops(
    client: httpx.AsyncClient, spawn_worker: SpawnWorker, tmp_path: Path, reference: str
) -> None:
    """SIGTERM ends the process once the grace is over, whatever its handler does: the
    interpreter would wait for the thread, and the event loop's close for the task, for ever,
    and a supervisor would have to kill the worker."""
    started = tmp_path / "started"
    worker = spawn_worker(reference)
    job = (await submit(client, "spin", {"started": str(started)})).json()

    async def running() -> bool:
        return started.exists()

    await eventually(running, what="the handler's start")
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 20) == 0
    assert (await job_state(client, job["jobID"]))["status"] != "successful"


async def test_two_copies_of_a_task_at_one_worker_run_once(
    client: httpx.AsyncClient,
    namespace: str,
    run_worker: Callable[..., asyncio.Task[None]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A second copy of a task (a recovery pass republished it while the first was queued)
    that reaches the worker running the first is acked at once: the first's delivery, unacked
    until its end is confirmed, still holds the task. The handler ran twice, and the second
    run's end removed the first from the runs a cancel finds."""
    gate = tmp_path / "gate"
    job = (await submit(client, "slow", {"gate": str(gate)})).json()["jobID"]
    queue_name = Topology(namespace).task_queue("slow")
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        original = await queue.get(no_ack=True, fail=True)
        for _ in range(2):
            copy = message(original.body, type=TASK, correlation_id=job)
            await channel.default_exchange.publish(copy, routing_key=queue_name)
    worker = run_worker(workers.gated, concurrency=4)

    async def both_handled() -> bool:
        skipped = any("runs here already" in r.getMessage() for r in caplog.records)
        return skipped or workers.entered[job] >= 2

    with caplog.at_level(logging.INFO, logger="worker_sdk"):
        await eventually(both_handled, what="both copies handled")
    gate.touch()
    assert (await wait_status(client, job, "successful"))["status"] == "successful"
    workers.gated.stop()
    await worker
    assert workers.entered[job] == 1
