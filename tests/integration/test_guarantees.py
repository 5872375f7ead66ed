"""The guarantees the README promises, each broken on purpose by a named mutant
(tests/mutants): acks after the outcome is confirmed, retries that wait, persist before
publish, events that outlive a store outage, ownership on the old routes."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import pytest

import worker_sdk._outcomes
from examples.echo import worker as echo_worker
from gateway.store import JobRecord, SQLiteStore
from tests import workers
from tests.conftest import AMQP_URL, Gateway, GatewayFactory, waiting_and_applying
from tests.support import OutageStore, eventually, message, submit, wait_status
from worker_sdk.wire import (
    Event,
    Outcomes,
    Retrying,
    Succeeded,
    Topology,
    declare_topology,
    parse_event,
)
from worker_sdk.wire.publish import PublishLost

pytestmark = pytest.mark.integration

RunWorker = Callable[..., asyncio.Task[None]]
JSON = {"Accept": "application/json"}


@asynccontextmanager
async def timed_events(namespace: str) -> AsyncIterator[list[tuple[float, Event]]]:
    """Every event published in the namespace, with the monotonic time it arrived here."""
    seen: list[tuple[float, Event]] = []
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(Topology(namespace).events_exchange, routing_key="#")

        async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            event = parse_event(message.body)  # the ends of an outcomes message one by one
            for one in event.events if isinstance(event, Outcomes) else [event]:
                seen.append((time.monotonic(), one))

        await queue.consume(collect, no_ack=True)
        yield seen


async def test_an_unconfirmed_terminal_event_hands_the_task_back(
    gateway: Gateway, namespace: str, run_worker: RunWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker never confirms the first ``succeeded``: the worker must not ack the task
    but hand it back, so that the redelivery runs it again and reports it."""
    real_publish = worker_sdk._outcomes.publish
    terminal: list[str] = []

    async def lose_the_first_terminal_event(
        exchange: Any, outgoing: aio_pika.Message, routing_key: str, **kwargs: Any
    ) -> None:
        if outgoing.type in ("succeeded", "outcomes"):
            terminal.append("lost" if not terminal else "confirmed")
            if terminal[-1] == "lost":
                raise PublishLost("the confirm never came")
        await real_publish(exchange, outgoing, routing_key, **kwargs)

    monkeypatch.setattr(worker_sdk._outcomes, "publish", lose_the_first_terminal_event)
    async with timed_events(namespace) as events:
        run_worker(echo_worker)
        job = (await submit(gateway.client, "echo", {"text": "again"})).json()
        state = await wait_status(gateway.client, job["jobID"], "successful", within=10)

        async def reported() -> bool:
            return any(isinstance(e, Succeeded) for _, e in events)

        await eventually(reported, what="the succeeded event")
    assert terminal == ["lost", "confirmed"]  # the handler ran again on the redelivery
    assert state["attempt"] == 1
    assert len([e for _, e in events if isinstance(e, Succeeded)]) == 1
    depth = await gateway.runtime.broker.queue_depth(f"{namespace}.task.echo")
    assert depth == 0


async def test_a_retry_waits_its_delay_accepted(
    gateway: Gateway, namespace: str, run_worker: RunWorker
) -> None:
    """Between ``retrying`` and the next run the job is ``accepted`` (its next attempt), for
    at least the delay the handler asked for (Retry(delay=0.5): the 1 s holding queue)."""
    store = gateway.runtime.store
    async with timed_events(namespace) as events:
        run_worker(workers.flaky)
        job = (await submit(gateway.client, "flaky", {"succeed_on": 2})).json()
        job_id = uuid.UUID(job["jobID"])

        async def waiting() -> JobRecord | None:
            record = await store.get(job_id)
            assert record is not None
            assert record.status.value != "successful", "the retry came back with no wait"
            return record if record.attempt == 2 and record.status.value == "accepted" else None

        between = await eventually(waiting, within=10, what="the job accepted for attempt 2")
        await wait_status(gateway.client, job["jobID"], "successful", within=10)

        async def reported() -> bool:
            return any(isinstance(e, Succeeded) for _, e in events)

        await eventually(reported, what="the succeeded event")
    assert between.message is not None
    assert "attempt 2 in 0.5s" in between.message
    retried = next((t, e) for t, e in events if isinstance(e, Retrying))
    succeeded = next(t for t, e in events if isinstance(e, Succeeded))
    assert isinstance(retried[1], Retrying)
    assert succeeded - retried[0] >= retried[1].delay


async def test_a_failing_store_insert_is_503_and_queues_nothing(
    gateway_factory: GatewayFactory, namespace: str, tmp_path: Path
) -> None:
    store = OutageStore(tmp_path / "jobs.db", "insert")
    gateway = await gateway_factory(store=store)
    response = await submit(gateway.client, "echo", {})
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "store-unavailable"
    assert store.failures == {"insert": 1}
    assert await gateway.runtime.broker.queue_depth(f"{namespace}.task.echo") == 0
    store.down.clear()
    assert (await gateway.client.get("/jobs")).json()["jobs"] == []


async def test_an_event_met_by_a_store_outage_is_applied_when_the_store_returns(
    gateway_factory: GatewayFactory, run_worker: RunWorker, tmp_path: Path
) -> None:
    store = OutageStore(tmp_path / "jobs.db", "finish")
    gateway = await gateway_factory(store=store)
    run_worker(echo_worker)
    job = (await submit(gateway.client, "echo", {})).json()

    async def refused() -> bool:
        return store.failures.get("finish", 0) >= 2  # met the outage, and retried

    await eventually(refused, what="the succeeded event to meet the outage")
    assert (await gateway.client.get(f"/jobs/{job['jobID']}")).json()["status"] != "successful"
    store.down.clear()
    await wait_status(gateway.client, job["jobID"], "successful", within=15)


async def test_an_event_met_by_a_store_outage_outlives_the_gateway(
    gateway_factory: GatewayFactory, run_worker: RunWorker, tmp_path: Path
) -> None:
    """The events consumer acks only after the store commits: a gateway that stops during
    an outage leaves the event in the queue, and the next gateway applies it."""
    store = OutageStore(tmp_path / "jobs.db", "finish")
    first = await gateway_factory(store=store)
    run_worker(echo_worker)
    job = (await submit(first.client, "echo", {})).json()

    async def refused() -> bool:
        return store.failures.get("finish", 0) >= 1

    await eventually(refused, what="the succeeded event to meet the outage")
    await first.stop()
    second = await gateway_factory()  # the same database, a store that works
    await wait_status(second.client, job["jobID"], "successful", within=15)


async def test_another_user_can_neither_read_nor_cancel_a_job_on_the_old_routes(
    gateway: Gateway,
) -> None:
    async with gateway.as_user("alice") as alice:
        submitted = await alice.post(
            "/echo/process", params={"doc_url": "http://93.184.216.34/doc.txt"}
        )
        assert submitted.status_code == 200, submitted.text
        uuid_ = submitted.json()["uuid"]
        async with gateway.as_user("bob") as bob:
            for route in ("status", "cancel"):
                other = await bob.get(f"/echo/{route}", params={"uuid": uuid_}, headers=JSON)
                assert other.status_code == 400, route
                assert other.json()["vesta"]["code"] == 203, route
                assert uuid_ not in other.text.replace(f"did not exist : {uuid_}", ""), (
                    "the job leaked"
                )
        mine = await alice.get("/echo/status", params={"uuid": uuid_}, headers=JSON)
        assert mine.json()["status"] == "PENDING"  # not cancelled by bob
        assert (await alice.get(f"/jobs/{uuid_}")).json()["status"] == "accepted"


async def test_prefer_wait_is_answered_when_another_replica_holds_the_shared_events(
    gateway_factory: GatewayFactory, run_worker: RunWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two gateway replicas on one store: the one holding the waiting request does not
    consume the shared events queue at all (the other does), and still answers the wait."""
    waiting, applying = await waiting_and_applying(gateway_factory, monkeypatch)
    run_worker(echo_worker)
    response = await submit(
        waiting.client, "echo", {"text": "replicas"}, headers={"Prefer": "wait=10"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"text": "replicas"}
    job_id = response.headers["location"].rsplit("/", 1)[1]
    for replica in (waiting, applying):
        assert (await replica.client.get(f"/jobs/{job_id}")).json()["status"] == "successful"
    events_queue = applying.runtime.broker.topology.events_queue

    async def drained() -> bool:
        return await applying.runtime.broker.queue_depth(events_queue) == 0

    await eventually(drained, what="the replica that consumes events to take them all")


class _HeldHeartbeats(SQLiteStore):
    """A store whose heartbeat writes wait until ``flowing`` is set: the events path lags,
    as it does behind any backlog (a fleet's heartbeats, a slow statement)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.flowing = asyncio.Event()

    async def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        await self.flowing.wait()
        await super().heartbeat(*args, **kwargs)


def _event_body(kind: str, job_id: str, run_id: str, **fields: Any) -> bytes:
    body = {"kind": kind, "job_id": job_id, "service": "ephemeral", "run_id": run_id}
    return json.dumps({**body, "worker_id": "w@h:1", **fields}).encode()


async def test_a_result_confirmed_before_its_worker_died_outweighs_the_tasks_dead_letter(
    gateway_factory: GatewayFactory, namespace: str, tmp_path: Path
) -> None:
    """A worker publishes its run's end (confirmed) and dies before acking the task, which
    goes back, has expired, and is dead-lettered at once. The end and the dead letter then
    wait in two queues; while the events path lags, the dead letter must not end the job
    (failed/worker_lost, the confirmed result then dropped as an event of a finished job)."""
    store = _HeldHeartbeats(tmp_path / "held.db")
    gateway = await gateway_factory(store=store)
    topology = Topology(namespace)
    connection = await aio_pika.connect(AMQP_URL)  # the worker's
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=1)
    events = (await declare_topology(channel, topology)).events
    deliveries: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
    await (await channel.get_queue(topology.task_queue("ephemeral"))).consume(deliveries.put)
    job = (await submit(gateway.client, "ephemeral", {})).json()["jobID"]
    task = await asyncio.wait_for(deliveries.get(), timeout=10)
    assert json.loads(task.body)["job_id"] == job
    run = str(uuid.uuid4())
    started = _event_body("started", job, run, host="h", worker_version="1.0.0")
    await events.publish(message(started, type="started"), routing_key="ephemeral.started")
    await wait_status(gateway.client, job, "running")
    # A fleet's heartbeats (more than the events consumer takes at once), then the end.
    beat = {"kind": "heartbeat", "service": "ephemeral", "version": "1", "host": "h"}
    await asyncio.gather(
        *(
            events.publish(
                message(
                    json.dumps({**beat, "worker_id": f"w{i}", "concurrency": 1}).encode(),
                    type="heartbeat",
                ),
                routing_key="ephemeral.heartbeat",
            )
            for i in range(gateway.runtime.settings.events_prefetch + 10)
        )
    )
    succeeded = _event_body("succeeded", job, run, result={"kept": True})
    await events.publish(message(succeeded, type="succeeded"), routing_key="ephemeral.succeeded")
    await connection.close()  # dies before its ack: the task goes back, expired, and dies
    # While the events lag, the dead letter waits (applied first, it ends the job at once).
    try:
        early = await wait_status(gateway.client, job, "failed", "dismissed", within=5)
    except AssertionError:
        pass  # still running: the dead letter waits for the events before it
    else:
        raise AssertionError(f"the dead letter ended the job first: {early}")
    store.flowing.set()
    done = await wait_status(gateway.client, job, "successful", "failed", "dismissed", within=30)
    assert (done["status"], done.get("reason")) == ("successful", None), done
    results = await gateway.client.get(f"/jobs/{job}/results", headers=JSON)
    assert results.json() == {"kept": True}
