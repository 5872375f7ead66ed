"""Terminal events that share a message, through the real broker: a busy worker reports many
ends in few messages, every job still ends once and right, a task from an older gateway is
reported alone, and a waiting request is answered whichever message carried its job's end,
its end applied once though it reaches the gateway twice, and answered when applying that end
failed yet kept it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from examples.echo import worker as echo_worker
from gateway.store import JobRecord, SQLiteStore, StoreError
from tests.conftest import AMQP_URL, Gateway, GatewayFactory
from tests.support import eventually, job_state, message, submit
from worker_sdk.wire import Task, Topology, declare_topology

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@dataclass
class Seen:
    """Terminal events as they cross the events exchange, by message."""

    messages: list[tuple[str, list[str]]] = field(default_factory=list)

    def ended(self) -> list[str]:
        return [job for _, jobs in self.messages for job in jobs]


@pytest.fixture
async def seen(namespace: str) -> AsyncIterator[Seen]:
    """A queue of our own on the events exchange, copying every terminal event."""
    record = Seen()
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        exchanges = await declare_topology(channel, Topology(namespace))
        queue = await channel.declare_queue(exclusive=True)
        for kind in ("succeeded", "failed", "cancelled", "outcomes"):
            await queue.bind(exchanges.events, routing_key=f"*.{kind}")

        async def on_message(delivery: AbstractIncomingMessage) -> None:
            body = json.loads(delivery.body)
            events = body["events"] if delivery.type == "outcomes" else [body]
            record.messages.append((str(delivery.type), [e["job_id"] for e in events]))

        await queue.consume(on_message, no_ack=True)
        yield record


async def test_a_busy_worker_reports_many_ends_in_few_messages(
    gateway: Gateway, seen: Seen, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    total = 150
    answers = await asyncio.gather(
        *(submit(gateway.client, "echo", {"text": f"job {i}"}) for i in range(total))
    )
    assert [a.status_code for a in answers] == [201] * total
    ids = [a.json()["jobID"] for a in answers]
    run_worker(echo_worker, concurrency=32)  # a backlog from the start: ends come together

    async def all_ended() -> bool:
        return len(seen.ended()) >= total

    await eventually(all_ended, within=60, what=f"{total} terminal events")
    assert sorted(seen.ended()) == sorted(ids)  # each job's end exactly once
    assert any(kind == "outcomes" for kind, _ in seen.messages)
    assert len(seen.messages) < total / 2, f"{len(seen.messages)} messages for {total} ends"
    store = gateway.runtime.store

    async def all_successful() -> bool:
        records = [await store.get(uuid.UUID(i)) for i in ids]
        return all(r is not None and r.status == "successful" for r in records)

    await eventually(all_successful, within=30, what="every job successful in the store")
    for job in ids[:5]:
        body = (await gateway.client.get(f"/jobs/{job}/results")).json()
        assert body["text"].startswith("job "), body


async def test_a_task_of_an_older_gateway_gets_its_own_message(
    gateway: Gateway,
    namespace: str,
    seen: Seen,
    run_worker: Callable[..., asyncio.Task[None]],
) -> None:
    tasks = [Task(job_id=uuid.uuid4(), service="echo", inputs={"text": "old"}) for _ in range(20)]
    assert not any(t.batch_outcomes for t in tasks)  # what an older gateway publishes
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchanges = await declare_topology(channel, Topology(namespace))
        for task in tasks:
            await exchanges.tasks.publish(
                message(task.to_bytes(), type="task", correlation_id=str(task.job_id)), "echo"
            )
    run_worker(echo_worker, concurrency=32)

    async def all_ended() -> bool:
        return len(seen.ended()) >= len(tasks)

    await eventually(all_ended, within=30, what="the old tasks' ends")
    assert sorted(seen.ended()) == sorted(str(t.job_id) for t in tasks)
    assert {kind for kind, _ in seen.messages} == {"succeeded"}


async def test_waiting_requests_are_answered_from_shared_messages(
    gateway: Gateway, seen: Seen, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    run_worker(echo_worker, concurrency=32)
    total = 60
    answers = await asyncio.gather(
        *(
            submit(gateway.client, "echo", {"text": f"w{i}"}, headers={"Prefer": "wait=30"})
            for i in range(total)
        )
    )
    assert [a.status_code for a in answers] == [200] * total
    assert sorted(a.json()["text"] for a in answers) == sorted(f"w{i}" for i in range(total))
    assert any(kind == "outcomes" for kind, _ in seen.messages)


class CountingStore(SQLiteStore):
    """A SQLite store that counts, by job, the calls that apply a job's end or read it back."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.finishes: Counter[uuid.UUID] = Counter()
        self.reads: Counter[uuid.UUID] = Counter()

    async def finish(self, job_id: uuid.UUID, **fields: Any) -> JobRecord | None:
        self.finishes[job_id] += 1
        return await super().finish(job_id, **fields)

    async def get(self, job_id: uuid.UUID) -> JobRecord | None:
        self.reads[job_id] += 1
        return await super().get(job_id)


# Three rounds: which copy comes first, and whether they overlap, varies from run to run.
@pytest.mark.parametrize("round_", range(3))
async def test_a_waited_job_s_end_reaches_the_store_once_though_it_comes_twice(
    gateway_factory: GatewayFactory,
    run_worker: Callable[..., asyncio.Task[None]],
    tmp_path: Path,
    round_: int,
) -> None:
    # Its end reaches this gateway on the shared events queue and on the tap of the waiting
    # request, in either order: the second copy finds it ended here and touches nothing.
    store = CountingStore(tmp_path / "counted.db")
    # One event at a time on the shared queue: the second job's end is applied only after the
    # first job's shared copy was handled.
    gateway = await gateway_factory(store=store, events_prefetch=1)
    run_worker(echo_worker)
    waited = await submit(gateway.client, "echo", {"text": "w"}, headers={"Prefer": "wait=30"})
    assert waited.status_code == 200, waited.text
    job = uuid.UUID(waited.headers["location"].rsplit("/", 1)[1])
    later = await submit(gateway.client, "echo", {"text": "later"})
    assert later.status_code == 201

    async def later_ended() -> bool:
        return (await job_state(gateway.client, later.json()["jobID"]))["status"] == "successful"

    await eventually(later_ended, within=30, what="the later job's end")
    assert store.finishes[job] == 1
    assert store.reads[job] == 0  # nor read back to tell its waiter what it already knows


class KeptThenFailed(SQLiteStore):
    """A SQLite store whose first ``finish`` keeps its change and then fails, as a commit
    that fails after its data reached the write-ahead log does."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.failed = False

    async def finish(self, job_id: uuid.UUID, **fields: Any) -> JobRecord | None:
        record = await super().finish(job_id, **fields)
        if not self.failed:
            self.failed = True
            raise StoreError("the commit failed (its change was kept)")
        return record


@pytest.mark.parametrize("round_", range(3))  # which copy meets the failure varies
async def test_a_waiter_is_answered_when_applying_its_end_failed_but_kept_it(
    gateway_factory: GatewayFactory,
    run_worker: Callable[..., asyncio.Task[None]],
    tmp_path: Path,
    round_: int,
) -> None:
    # The copy that met the failure reads the job back and tells the waiter; the other copy
    # finds the end already stored and changes nothing.
    store = KeptThenFailed(tmp_path / "kept.db")
    gateway = await gateway_factory(store=store)
    run_worker(echo_worker)
    waited = await submit(gateway.client, "echo", {"text": "w"}, headers={"Prefer": "wait=10"})
    assert store.failed
    assert waited.status_code == 200, waited.text  # not the 201 of a wait that ran out
    assert waited.json() == {"text": "w"}
