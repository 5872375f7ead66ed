"""Idempotency-Key on submit: retries are safe and never queue twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from examples.echo import worker as echo_worker
from gateway.broker import BrokerDown
from gateway.store import JobRecord, JobStatus, SQLiteStore
from tests.conftest import AMQP_URL, Gateway, GatewayFactory
from tests.support import eventually, submit
from worker_sdk.wire import Topology

pytestmark = pytest.mark.integration


async def queued(gateway: Gateway) -> int:
    topology = Topology(gateway.runtime.settings.namespace)
    return await gateway.runtime.broker.queue_depth(topology.task_queue("echo"))


async def test_a_retry_with_the_same_key_returns_the_first_job(gateway: Gateway) -> None:
    key = {"Idempotency-Key": "order-42"}
    first = await submit(gateway.client, "echo", {"text": "x"}, headers=key)
    again = await submit(gateway.client, "echo", {"text": "x"}, headers=key)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["jobID"] == first.json()["jobID"]
    assert again.headers["location"] == first.headers["location"]
    assert await queued(gateway) == 1


async def test_concurrent_duplicates_queue_once(gateway: Gateway) -> None:
    key = {"Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(submit(gateway.client, "echo", {"text": "x"}, headers=key) for _ in range(20))
    )
    assert {r.json()["jobID"] for r in responses} == {responses[0].json()["jobID"]}
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert await queued(gateway) == 1


async def test_the_same_key_with_another_body_is_409(gateway: Gateway) -> None:
    key = {"Idempotency-Key": "k1"}
    first = await submit(gateway.client, "echo", {"text": "a"}, headers=key)
    conflict = await submit(gateway.client, "echo", {"text": "b"}, headers=key)
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "idempotency-conflict"
    assert first.json()["jobID"] in conflict.json()["detail"]
    assert (await submit(gateway.client, "crunch", {}, headers=key)).status_code == 409
    assert await queued(gateway) == 1


async def test_keys_belong_to_their_owner(gateway: Gateway) -> None:
    key = {"Idempotency-Key": "shared"}
    mine = (await submit(gateway.client, "echo", {}, headers=key)).json()
    async with gateway.as_user("bob") as bob:
        theirs = await submit(bob, "echo", {}, headers=key)
    assert theirs.status_code == 201
    assert theirs.json()["jobID"] != mine["jobID"]


async def test_a_failed_publish_releases_the_key_for_the_retry(
    gateway: Gateway, namespace: str
) -> None:
    topology = Topology(namespace)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.task_queue("echo"), ensure=True)
        await queue.unbind(topology.tasks_exchange, routing_key="echo")
        key = {"Idempotency-Key": "retry-me"}
        assert (await submit(gateway.client, "echo", {}, headers=key)).status_code == 503
        await queue.bind(topology.tasks_exchange, routing_key="echo")
        retried = await submit(gateway.client, "echo", {}, headers=key)
    assert retried.status_code == 201
    assert await queued(gateway) == 1


async def test_a_key_past_its_window_starts_a_new_job(gateway_factory: GatewayFactory) -> None:
    gateway = await gateway_factory(idempotency_window=0.000001)
    key = {"Idempotency-Key": "old"}
    first = (await submit(gateway.client, "echo", {}, headers=key)).json()
    second = await submit(gateway.client, "echo", {}, headers=key)
    assert second.status_code == 201
    assert second.json()["jobID"] != first["jobID"]


@pytest.mark.parametrize("bad", ["", "x" * 256, "has space", "tab\there"])
async def test_malformed_keys_are_400(gateway: Gateway, bad: str) -> None:
    response = await submit(gateway.client, "echo", {}, headers={"Idempotency-Key": bad})
    assert response.status_code == 400
    assert await queued(gateway) == 0


async def test_two_keys_are_400(gateway: Gateway) -> None:
    """Two Idempotency-Key lines: which one a retry would replay is anyone's guess."""
    keys = [("Idempotency-Key", "first"), ("Idempotency-Key", "second")]
    response = await submit(gateway.client, "echo", {}, headers=keys)
    assert response.status_code == 400, response.text
    assert "more than once" in response.json()["detail"]
    assert await queued(gateway) == 0


async def test_a_replay_waits_for_the_results_as_its_first_submission_would(
    gateway: Gateway, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    """A retry asking to wait answered at once with the running job's status, saying
    `Preference-Applied: wait=10` all the same; now it waits for the job's end."""
    run_worker(echo_worker)
    key = {"Idempotency-Key": "slow-one"}
    inputs = {"text": "x", "delay": 1}
    first = await submit(gateway.client, "echo", inputs, headers={**key, "Prefer": "respond-async"})
    assert first.status_code == 201
    again = await submit(gateway.client, "echo", inputs, headers={**key, "Prefer": "wait=10"})
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["preference-applied"] == "wait=10"
    assert again.json() == {"text": "x"}  # the results, as the first would have had them
    assert again.headers["location"] == first.headers["location"]


class _Lagging(SQLiteStore):
    """A store whose next lookups of one job answer what it was (``stale``): as a replica's
    read that came just before another replica committed the job's end."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.stale: JobRecord | None = None
        self.gets = 0

    async def find_by_key(self, owner: str, key: str) -> JobRecord | None:
        return self.stale or await super().find_by_key(owner, key)

    async def get(self, job_id: uuid.UUID) -> JobRecord | None:
        stale, self.stale = self.stale, None
        self.gets += 1
        return stale if stale is not None and stale.id == job_id else await super().get(job_id)


async def test_a_waiting_replay_reads_its_job_again_when_its_end_came_unseen(
    gateway_factory: GatewayFactory,
    run_worker: Callable[..., asyncio.Task[None]],
    tmp_path: Path,
) -> None:
    """The job's end was published before this process's tap was bound and applied by
    another replica after this one read the job: the replay waited its whole wait and
    answered the stale status. Now it reads the job again while it waits."""
    store = _Lagging(tmp_path / "lagging.db")
    gateway = await gateway_factory(store=store)
    run_worker(echo_worker)
    key = {"Idempotency-Key": "seen-late"}
    first = await submit(
        gateway.client, "echo", {"text": "x"}, headers={**key, "Prefer": "wait=10"}
    )
    assert first.status_code == 200, first.text
    job = await store.get(uuid.UUID(first.headers["location"].rsplit("/", 1)[1]))
    assert job is not None
    store.stale = job.model_copy(update={"status": JobStatus.RUNNING, "result": None})
    again = await submit(
        gateway.client, "echo", {"text": "x"}, headers={**key, "Prefer": "wait=30"}
    )
    assert again.status_code == 200, again.text
    assert again.json() == {"text": "x"}  # the results, not the stale running status
    assert store.gets >= 2  # the stale answer, then the job as it is


async def test_a_replay_of_a_job_whose_first_publish_fails_while_it_waits_queues_it(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry came while the first attempt was still publishing; that publish failed (the
    job failed publish_failed, its key released): the waiting retry answered 422 job-failed,
    which a client does not retry. Now it submits the job again, as a retry after would."""
    broker = gateway.runtime.broker
    publish = broker.publish_task
    release = asyncio.Event()
    calls = 0

    async def first_fails(task: Any, spec: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await release.wait()
            raise BrokerDown("the broker went away")
        await publish(task, spec)

    monkeypatch.setattr(broker, "publish_task", first_fails)
    key = {"Idempotency-Key": "first-fails"}
    first = asyncio.create_task(submit(gateway.client, "echo", {"text": "x"}, headers=key))

    async def publishing() -> bool:
        return calls == 1

    await eventually(publishing, what="the first attempt's publish")
    retry = asyncio.create_task(
        submit(gateway.client, "echo", {"text": "x"}, headers={**key, "Prefer": "wait=5"})
    )
    await eventually(lambda: _replay_waits(gateway), what="the retry to wait on the first job")
    release.set()
    assert (await first).status_code == 503
    answer = await retry
    assert answer.status_code == 201, answer.text  # a new job, queued
    assert "idempotent-replayed" not in answer.headers
    assert await queued(gateway) == 1


async def _replay_waits(gateway: Gateway) -> bool:
    return bool(gateway.runtime.watch._waiters)
