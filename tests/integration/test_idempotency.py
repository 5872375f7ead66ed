"""Idempotency-Key on submit: retries are safe and never queue twice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aio_pika
import pytest

from examples.echo import worker as echo_worker
from tests.conftest import AMQP_URL, Gateway, GatewayFactory
from tests.support import submit
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
