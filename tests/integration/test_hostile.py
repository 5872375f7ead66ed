"""Hostile inputs and poison messages: each fails cleanly at the edge or is handled, nothing is
recorded or queued for a refused request, and the gateway keeps serving normal jobs after.

Broker messages are published straight to the real broker, as anyone holding a worker's
rights could."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import jwt
import pytest

from examples.echo import worker as echo_worker
from gateway.store import JobQuery, JobRecord
from tests import workers
from tests.conftest import (
    AMQP_URL,
    TEST_SECRET,
    Gateway,
    GatewayFactory,
    waiting_and_applying,
)
from tests.live import LiveGateway
from tests.support import TEST_CATALOGUE, eventually, message, submit, wait_status
from worker_sdk.wire import Topology, declare_topology

pytestmark = pytest.mark.integration


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


async def _depth(namespace: str, queue: str) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def _nothing_recorded_or_queued(gateway: Gateway, namespace: str, service: str) -> None:
    assert await gateway.runtime.store.page_jobs(JobQuery(owner=None)) == []
    assert await _depth(namespace, Topology(namespace).task_queue(service)) == 0


async def _still_serving(gateway: Gateway, run_worker: Callable[..., asyncio.Task[None]]) -> None:
    run_worker(echo_worker)
    job = await submit(gateway.client, "echo", {"text": "after"})
    assert job.status_code == 201, job.text
    done = await wait_status(gateway.client, job.json()["jobID"], "successful")
    assert done["progress"] == 100


def _batch(*inner: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "outcomes", "service": "echo", "worker_id": "r", "events": inner}


class TestInputsAtTheEdge:
    """Findings 2, 3 and 10: what a store or the broker could not carry is refused first."""

    @pytest.mark.parametrize(
        ("body", "path"),
        [
            (b'{"inputs": {"text": "\\ud800"}}', "/inputs/text"),
            (b'{"inputs": {"\\udfff": 1}}', "/inputs"),
            (b'{"inputs": {"delay": NaN}}', "/inputs/delay"),
            (b'{"inputs": {"delay": Infinity}}', "/inputs/delay"),
            (b'{"inputs": {"delay": 1e400}}', "/inputs/delay"),
            (b'{"inputs": {"n": 100000000000000000000000}}', "/inputs/n"),
            (b'{"inputs": {"opts": {"a\\u0000b": 1}}}', "/inputs/opts"),
        ],
    )
    async def test_values_no_store_can_keep_are_422(
        self, gateway: Gateway, namespace: str, body: bytes, path: str
    ) -> None:
        response = await gateway.client.post(
            "/processes/echo/execution", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["code"] == "invalid-input"
        assert path in {e["path"] for e in problem["errors"]}
        await _nothing_recorded_or_queued(gateway, namespace, "echo")

    # 600: deep, yet clear of the JSON parser's own limit (the recursion limit, which the
    # frames below the request's, pytest's and a tracer's, share).
    @pytest.mark.parametrize("depth", [40, 250, 300, 600])
    async def test_deep_nesting_is_refused_before_anything_exists(
        self, gateway: Gateway, namespace: str, depth: int
    ) -> None:
        response = await submit(gateway.client, "echo", {"deep": _nested(depth)})
        assert response.status_code == 422, response.text
        assert "nested deeper than 32 levels" in response.text
        await _nothing_recorded_or_queued(gateway, namespace, "echo")

    async def test_nesting_past_the_json_parser_is_400(self, gateway: Gateway) -> None:
        body = '{"inputs": ' + "[" * 100_000 + "]" * 100_000 + "}"
        response = await gateway.client.post(
            "/processes/echo/execution",
            content=body.encode(),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400
        assert response.json()["code"] == "invalid-request"

    @pytest.mark.parametrize(
        ("body", "members"),
        [
            ({"text": "x"}, {"body/inputs", "body/text"}),
            ({"inputs": {}, "ouputs": {}}, {"body/ouputs"}),
            ({"inputs": {}, "response": "stream"}, {"body/response"}),
            ({"inputs": {}, "outputs": {"o": {"transmissionMode": "smoke"}}}, None),
        ],
    )
    async def test_execute_bodies_are_strict(
        self, gateway: Gateway, namespace: str, body: dict[str, Any], members: set[str] | None
    ) -> None:
        response = await gateway.client.post("/processes/echo/execution", json=body)
        assert response.status_code == 400, response.text
        problem = response.json()
        assert problem["code"] == "invalid-request"
        if members is not None:
            assert {e["path"] for e in problem["errors"]} == members
        await _nothing_recorded_or_queued(gateway, namespace, "echo")

    async def test_a_subscriber_is_refused_without_a_webhook_secret(
        self, gateway: Gateway, namespace: str
    ) -> None:
        response = await gateway.client.post(
            "/processes/echo/execution",
            json={"inputs": {}, "subscriber": {"successUri": "https://example.org/hook"}},
        )
        assert response.status_code == 400
        assert "subscriber" in response.json()["detail"]
        await _nothing_recorded_or_queued(gateway, namespace, "echo")

    async def test_the_gateway_serves_normal_jobs_after(
        self, gateway: Gateway, run_worker: Callable[..., asyncio.Task[None]]
    ) -> None:
        bad = await gateway.client.post(
            "/processes/echo/execution",
            content=b'{"inputs": {"text": "\\ud800"}}',
            headers={"content-type": "application/json"},
        )
        assert bad.status_code == 422
        await _still_serving(gateway, run_worker)


@pytest.fixture
async def events(namespace: str) -> AsyncIterator[Callable[..., Any]]:
    """Publish raw bodies to the events exchange, as a (rogue) worker would."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = (await declare_topology(channel, Topology(namespace))).events

        async def send(body: dict[str, Any] | bytes, key: str, job_id: str | None = None) -> None:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            kind = key.rsplit(".", 1)[-1]
            await exchange.publish(message(raw, type=kind, correlation_id=job_id), routing_key=key)

        yield send


def _event(job_id: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "service": "echo",
        "run_id": str(uuid.uuid4()),
        "worker_id": "rogue",
        "kind": kind,
        **fields,
    }


class TestPoisonEvents:
    """Findings 4, 5, 6 and 7: no event can stop the event path or bloat the metrics."""

    async def test_events_that_raise_are_set_aside_and_the_path_keeps_moving(
        self,
        gateway: Gateway,
        namespace: str,
        events: Callable[..., Any],
        run_worker: Callable[..., asyncio.Task[None]],
    ) -> None:
        victim = (await submit(gateway.client, "crunch", {})).json()["jobID"]
        poison = [
            _event(victim, "succeeded", emitted_at="9999-12-31T23:59:59+00:00"),
            _event(victim, "started", attempt=2**70, host="h", worker_version="1"),
            _event(victim, "progress", percent=5, seq=2**64),
            _event(victim, "started", host="h", worker_version="1", schema_version=2),
        ]
        total = 0
        for body in poison:  # more than the consumer's prefetch of each kind
            for _ in range(gateway.runtime.settings.events_prefetch // 4 + 1):
                await events(body, f"echo.{body['kind']}", victim)
                total += 1
        for raw in (b"not json", b"[]", b'{"kind": "exploded"}', b"\xff\xfe"):
            await events(raw, "echo.started", victim)
            total += 1
        poison_queue = Topology(namespace).poison_queue

        async def all_set_aside() -> bool:
            return await _depth(namespace, poison_queue) == total

        await eventually(all_set_aside, within=30, what=f"{total} poison events set aside")
        assert await _depth(namespace, Topology(namespace).events_queue) == 0
        record = await gateway.runtime.store.get(uuid.UUID(victim))
        assert record is not None
        assert record.status == "accepted"  # none of them touched the job
        await _still_serving(gateway, run_worker)

    async def test_a_retry_past_the_services_attempts_is_set_aside(
        self, gateway: Gateway, namespace: str, events: Callable[..., Any]
    ) -> None:
        """A retrying event for attempt 10,000 of a service that allows 3 would leave its job
        waiting for an attempt no task carries, the run in progress ignored as an earlier
        attempt's: it is set aside, and the run's own end is applied."""
        job = (await submit(gateway.client, "flaky", {})).json()["jobID"]
        forged = _event(job, "retrying", service="flaky", attempt=10_000, delay=0)
        forged["error"] = {"code": "boom", "type": "E", "message": "m", "retryable": True}
        await events(forged, "flaky.retrying", job)
        poison = Topology(namespace).poison_queue

        async def set_aside() -> bool:
            return await _depth(namespace, poison) == 1

        await eventually(set_aside, what="the retrying event set aside")
        await events(_event(job, "succeeded", service="flaky", result=1), "flaky.succeeded", job)
        done = await wait_status(gateway.client, job, "successful")
        assert done["attempt"] == 1

    async def test_a_dead_barrier_and_a_webhook_that_are_none_are_set_aside_and_counted(
        self, gateway_factory: GatewayFactory, namespace: str
    ) -> None:
        """Every message the gateway cannot use lands in the poison queue and is counted,
        whichever queue it came on: a dead letter marked as a barrier whose body is a task,
        garbage on the webhooks queue."""
        secret = "whsec_" + base64.b64encode(b"webhook-secret-of-the-tests-32by").decode()
        gateway = await gateway_factory(webhook_secret=secret)
        topology = Topology(namespace)
        job = (await submit(gateway.client, "echo", {})).json()["jobID"]
        task = {"job_id": job, "service": "echo", "inputs": {}}
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            sends = [
                (topology.dead_letter_queue, json.dumps(task).encode(), "barrier"),
                (topology.webhooks_queue, b"not json", "webhook"),
                (topology.webhooks_queue, b'{"url": 5}', "webhook"),
            ]
            for queue, body, kind in sends:
                await channel.default_exchange.publish(message(body, type=kind), routing_key=queue)

        async def set_aside() -> bool:
            return await _depth(namespace, topology.poison_queue) == len(sends)

        await eventually(set_aside, what="three messages set aside")
        metrics = (await gateway.client.get("/metrics")).text
        assert 'sg_events_refused_total{queue="dead",why="unreadable"} 1.0' in metrics
        assert 'sg_events_refused_total{queue="webhooks",why="unreadable"} 2.0' in metrics

    async def test_an_unusable_event_in_an_outcomes_message_holds_back_no_other(
        self, gateway: Gateway, namespace: str, events: Callable[..., Any]
    ) -> None:
        good = (await submit(gateway.client, "echo", {"text": "x"})).json()["jobID"]
        stray = {**_event(str(uuid.uuid4()), "failed"), "service": "not-listed"}
        stray["error"] = {"code": "x", "type": "X", "message": "m"}
        batch = {
            "kind": "outcomes",
            "service": "echo",
            "worker_id": "rogue",
            "events": [stray, _event(good, "succeeded", result={"text": "x"})],
        }
        await events(batch, "echo.outcomes")
        await wait_status(gateway.client, good, "successful")

        async def set_aside() -> bool:
            return await _depth(namespace, Topology(namespace).poison_queue) == 1

        await eventually(set_aside, what="the message with the stray event set aside")

    async def test_outcomes_messages_that_cannot_be_read_are_set_aside_whole(
        self, gateway: Gateway, namespace: str, events: Callable[..., Any]
    ) -> None:
        victim = (await submit(gateway.client, "crunch", {})).json()["jobID"]
        ended = _event(victim, "succeeded", result=1)
        bodies = [
            _batch(),
            _batch(*[ended] * 257),
            {**_batch(ended), "schema_version": 2},
            {**_batch(ended), "worker_id": ""},
            _batch({**ended, "schema_version": 2}, _event(victim, "progress", percent=1)),
            json.dumps(_batch(ended)).encode("utf-16"),  # JSON, but not the contract's UTF-8
        ]
        for body in bodies:
            await events(body, "echo.outcomes")

        async def all_set_aside() -> bool:
            return await _depth(namespace, Topology(namespace).poison_queue) == len(bodies)

        await eventually(all_set_aside, what=f"{len(bodies)} outcomes messages set aside")
        record = await gateway.runtime.store.get(uuid.UUID(victim))
        assert record is not None
        assert record.status == "accepted"  # none of them touched the job

    async def test_the_ends_that_parse_in_an_outcomes_message_are_applied_beside_others(
        self, gateway: Gateway, namespace: str, events: Callable[..., Any]
    ) -> None:
        """Each event of the message means what it would alone: one that does not parse is
        refused (the message is set aside for it), the ends beside it are applied, where
        before their jobs stayed as they were, their tasks already acked."""
        jobs = [(await submit(gateway.client, "crunch", {})).json()["jobID"] for _ in range(4)]
        ended = [_event(job, "succeeded", result=i) for i, job in enumerate(jobs)]
        bodies = [
            _batch(ended[0], {**ended[0], "schema_version": 2}),
            _batch(ended[1], _event(jobs[1], "started", host="h", worker_version="1")),
            _batch(ended[2], _batch(ended[2])),
            _batch({**ended[0], "emitted_at": "1999-12-31T23:59:59Z"}, ended[3]),
        ]
        for body in bodies:
            await events(body, "echo.outcomes")
        for i, job in enumerate(jobs):
            await wait_status(gateway.client, job, "successful")
            assert (await gateway.client.get(f"/jobs/{job}/results")).json() == i

        async def all_set_aside() -> bool:
            return await _depth(namespace, Topology(namespace).poison_queue) == len(bodies)

        await eventually(all_set_aside, what=f"{len(bodies)} outcomes messages set aside")
        refused = gateway.runtime.metrics.registry.get_sample_value
        labels = {"queue": "events", "why": "newer-schema"}
        assert refused("sg_events_refused_total", labels) == 1  # the first, a newer schema

    async def test_a_waiter_on_another_replica_hears_an_end_saved_from_a_broken_batch(
        self,
        gateway_factory: GatewayFactory,
        events: Callable[..., Any],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The replica holding a waiting request hears ends only on its tap: it reads the
        ends that parse in a broken outcomes message as the shared copy's reader does."""
        waiting, _ = await waiting_and_applying(gateway_factory, monkeypatch)
        answer = asyncio.create_task(
            submit(waiting.client, "echo", {"text": "x"}, headers={"Prefer": "wait=10"})
        )
        broker = waiting.runtime.broker
        tasks = broker.topology.task_queue("echo")

        async def queued() -> bool:  # published: the tap was bound before
            return await broker.queue_depth(tasks) == 1

        await eventually(queued, what="the waiting submission's task")
        (job,) = [j["jobID"] for j in (await waiting.client.get("/jobs")).json()["jobs"]]
        ended = _event(job, "succeeded", result={"text": "x"})
        await events(_batch(ended, {**ended, "schema_version": 2}), "echo.outcomes")
        response = await asyncio.wait_for(answer, 20)
        assert response.status_code == 200, response.text
        assert response.json() == {"text": "x"}

    async def test_a_heartbeat_without_a_time_zone_never_reaches_the_store(
        self, gateway: Gateway, namespace: str, events: Callable[..., Any]
    ) -> None:
        beat = {
            "kind": "heartbeat",
            "worker_id": "naive",
            "service": "echo",
            "version": "1",
            "host": "h",
            "concurrency": 1,
            "emitted_at": "2026-11-30T12:00:00",
        }
        await events(beat, "echo.heartbeat")

        async def set_aside() -> bool:
            return await _depth(namespace, Topology(namespace).poison_queue) == 1

        await eventually(set_aside, what="the naive heartbeat to be set aside")
        assert await gateway.runtime.store.last_heartbeat("naive") is None
        # and a sweep meets nothing it cannot compare
        await gateway.runtime.sweeper.sweep(datetime.now(UTC))

    async def test_a_store_that_refuses_one_statement_fails_it_alone(
        self, gateway: Gateway
    ) -> None:
        """A group commit that meets a failing statement runs again, each statement under a
        savepoint of its own: an overflow in one (an attempt of 2**70) is refused, the
        submissions committed with it stay."""
        store = gateway.runtime.store
        now = datetime.now(UTC)
        records = [
            JobRecord(id=uuid.uuid4(), service="echo", owner="a", created=now, updated=now)
            for _ in range(20)
        ]
        from gateway.store import StoreRejected, WorkerInfo

        worker = WorkerInfo(id="w", host="h", version="1")
        outcomes = await asyncio.gather(
            *(store.insert(r) for r in records[:10]),
            store.start(records[0].id, attempt=2**70, run_id=uuid.uuid4(), worker=worker, at=now),
            *(store.insert(r) for r in records[10:]),
            return_exceptions=True,
        )
        assert isinstance(outcomes[10], StoreRejected)
        assert [o for i, o in enumerate(outcomes) if i != 10] == [False] * 20  # none counted
        for record in records:
            assert await store.get(record.id) is not None

    async def test_metrics_stay_small_whatever_versions_workers_announce(
        self, gateway: Gateway, events: Callable[..., Any]
    ) -> None:
        before = len((await gateway.client.get("/metrics")).text)
        job = (await submit(gateway.client, "echo", {})).json()["jobID"]
        for n in range(1000):
            body = _event(job, "started", host="h", worker_version=f"evil-{n}-" + "v" * 50)
            await events(body, "echo.started", job)

        async def all_applied() -> bool:
            text = (await gateway.client.get("/metrics")).text
            return 'sg_worker_version_mismatch_total{service="echo"} 1000.0' in text

        await eventually(all_applied, within=60, what="1,000 started events applied")
        after = len((await gateway.client.get("/metrics")).text)
        assert after - before < 4000, (before, after)
        assert "evil" not in (await gateway.client.get("/metrics")).text


class TestServerSentEvents:
    """Finding 8: stream ids come from the gateway, whatever the workers' clocks say."""

    async def _stream(
        self, client: httpx.AsyncClient, job_id: str, last: bytes | None = None
    ) -> list[dict[str, Any]]:
        headers = {"Last-Event-ID": last} if last is not None else {}
        seen: list[dict[str, Any]] = []
        async with client.stream("GET", f"/jobs/{job_id}/events", headers=headers) as response:
            assert response.status_code == 200
            event: dict[str, Any] = {}
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    event["id"] = line[4:]
                elif line.startswith("data: "):
                    event["data"] = json.loads(line[6:])
                elif not line and event:
                    seen.append(event)
                    event = {}
        return seen

    async def test_a_worker_clock_behind_loses_no_event(
        self, namespace: str, tmp_path: Path, events: Callable[..., Any]
    ) -> None:
        """Events stamped 5 s in the past by a worker: the stream, already showing the job
        running, still delivers its end (real HTTP, so the stream is read as it comes)."""
        server = LiveGateway(namespace=namespace, workdir=tmp_path, catalogue=TEST_CATALOGUE)
        server.start()
        try:
            await server.ready()
            auth = {"Authorization": f"Bearer {_token()}"}
            async with httpx.AsyncClient(base_url=server.base, headers=auth, timeout=15) as http:
                job = (await submit(http, "echo", {})).json()["jobID"]
                run = str(uuid.uuid4())
                past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
                started = _event(job, "started", host="h", worker_version="1.0.0", emitted_at=past)
                started["run_id"] = run
                await events(started, "echo.started", job)
                await wait_status(http, job, "running")
                seen: list[dict[str, Any]] = []
                async with http.stream("GET", f"/jobs/{job}/events") as response:
                    lines = response.aiter_lines()
                    seen.append(await _next_event(lines))
                    assert seen[0]["data"]["status"] == "running"
                    done = _event(job, "succeeded", result={"ok": 1}, emitted_at=past)
                    done["run_id"] = run
                    await events(done, "echo.succeeded", job)
                    seen.append(await _next_event(lines))
                    assert [line async for line in lines] == []  # the stream ended
                assert seen[1]["data"]["status"] == "successful"
                assert int(seen[1]["id"]) > int(seen[0]["id"])
                resumed = await http.get(
                    f"/jobs/{job}/events", headers={"Last-Event-ID": seen[0]["id"]}
                )
                assert "successful" in resumed.text
                assert '"running"' not in resumed.text
        finally:
            await server.stop()

    @pytest.mark.parametrize("last", ["²", "9" * 5000, "-1", "12abc", " 7", "١٢"])
    async def test_a_malformed_last_event_id_resumes_from_the_start(
        self, gateway: Gateway, last: str
    ) -> None:
        job = (await submit(gateway.client, "echo", {})).json()["jobID"]
        await gateway.client.delete(f"/jobs/{job}")
        seen = await self._stream(gateway.client, job, last=last.encode())
        assert [e["data"]["status"] for e in seen] == ["dismissed"]


def _token() -> str:
    return jwt.encode(
        {"sub": "alice", "exp": int(time.time()) + 600}, TEST_SECRET, algorithm="HS256"
    )


async def _next_event(lines: AsyncIterator[str]) -> dict[str, Any]:
    """The next server-sent event of a stream being read."""
    event: dict[str, Any] = {}
    async for line in lines:
        if line.startswith("id: "):
            event["id"] = line[4:]
        elif line.startswith("data: "):
            event["data"] = json.loads(line[6:])
        elif not line and event:
            return event
    raise AssertionError("the stream ended before an event")


class TestResults:
    """Finding 9: a result larger than the service allows fails its job once, at once."""

    async def test_an_oversized_result_fails_the_job_once_and_the_worker_lives_on(
        self, gateway: Gateway, run_worker: Callable[..., asyncio.Task[None]]
    ) -> None:
        calls = workers.bigresult_calls
        calls.clear()
        run_worker(workers.bigresult)
        big = (await submit(gateway.client, "bigresult", {"size": 5000})).json()["jobID"]
        failed = await wait_status(gateway.client, big, "failed")
        assert failed["reason"] == "result_too_large"
        assert "5011 bytes" in failed["message"]
        assert "allows 1000" in failed["message"]
        assert calls[big] == 1
        small = (await submit(gateway.client, "bigresult", {"size": 10})).json()["jobID"]
        await wait_status(gateway.client, small, "successful")
        assert (await gateway.client.get(f"/jobs/{small}/results")).json() == {"blob": "x" * 10}

    async def test_a_result_past_the_services_limit_from_any_worker_fails_the_job(
        self, gateway: Gateway, events: Callable[..., Any]
    ) -> None:
        """A worker of another make (or a version that does not check) reports a result past
        ``max_result_bytes``: the gateway fails the job as the SDK would have, and keeps none
        of it."""
        job = (await submit(gateway.client, "bigresult", {"size": 5000})).json()["jobID"]
        end = _event(job, "succeeded", service="bigresult", result={"blob": "x" * 5000})
        await events(end, "bigresult.succeeded", job)
        failed = await wait_status(gateway.client, job, "failed")
        assert failed["reason"] == "result_too_large"
        assert "5011 bytes" in failed["message"]
        assert "allows 1000" in failed["message"]
        record = await gateway.runtime.store.get(uuid.UUID(job))
        assert record is not None
        assert record.result is None
        fits = (await submit(gateway.client, "bigresult", {"size": 10})).json()["jobID"]
        end = _event(fits, "succeeded", service="bigresult", result={"blob": "x" * 988})
        await events(end, "bigresult.succeeded", fits)  # 1,000 bytes as JSON: allowed
        await wait_status(gateway.client, fits, "successful")

    async def test_a_result_that_is_not_json_fails_the_job(
        self, gateway: Gateway, run_worker: Callable[..., asyncio.Task[None]]
    ) -> None:
        run_worker(workers.bigresult)
        job = (await submit(gateway.client, "bigresult", {"nan": True})).json()["jobID"]
        failed = await wait_status(gateway.client, job, "failed")
        assert failed["reason"] == "invalid_result"
        assert "/result/value" in failed["message"]

    @pytest.mark.parametrize(
        ("limit", "event", "reason"),
        [
            (64 * 1024, {"kind": "succeeded", "result": "x" * 100_000}, "invalid_result"),
            (
                2048,
                {
                    "kind": "failed",
                    "error": {"code": "time_limit", "type": "T", "message": "m" * 3900},
                },
                "time_limit",
            ),
        ],
        ids=["succeeded", "failed"],
    )
    async def test_an_end_the_store_refuses_ends_its_job_without_what_was_refused(
        self,
        gateway: Gateway,
        events: Callable[..., Any],
        limit: int,
        event: dict[str, Any],
        reason: str,
    ) -> None:
        """MongoDB refuses a document past 16 MiB; SQLite, told to, a value past ``limit``
        bytes. The worker has acked its task once its end is confirmed: a job left running
        would have nothing left to end it."""
        job = (await submit(gateway.client, "crunch", {})).json()["jobID"]
        _refuse_values_past(gateway, limit)
        await events(_event(job, **event), f"echo.{event['kind']}", job)
        failed = await wait_status(gateway.client, job, "failed")
        assert failed["reason"] == reason
        assert f"the store refused the run's {event['kind']} event" in failed["message"]
        assert "too big" in failed["message"]
        record = await gateway.runtime.store.get(uuid.UUID(job))
        assert record is not None
        assert record.result is None
        assert record.error is not None
        assert record.error.type == "StoreRejected"

    async def test_an_end_refused_even_without_its_values_is_set_aside(
        self, gateway: Gateway, namespace: str, events: Callable[..., Any]
    ) -> None:
        job = (await submit(gateway.client, "crunch", {})).json()["jobID"]
        _refuse_values_past(gateway, 100)  # the gateway's own error does not fit either
        await events(_event(job, "succeeded", result="x" * 1000), "echo.succeeded", job)

        async def set_aside() -> bool:
            return await _depth(namespace, Topology(namespace).poison_queue) == 1

        await eventually(set_aside, what="the end set aside")
        record = await gateway.runtime.store.get(uuid.UUID(job))
        assert record is not None
        assert record.status == "accepted"


def _refuse_values_past(gateway: Gateway, limit: int) -> None:
    """The gateway's SQLite connections refuse a string or blob past ``limit`` bytes."""
    executor = gateway.runtime.store._executor  # type: ignore[attr-defined]
    for db in (executor.db, executor._inline):
        db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit)


class TestMetricsWhole:
    """Finding 11: every terminal transition is counted once, wherever it happens."""

    async def test_dismissed_and_unpublished_jobs_are_counted(
        self, gateway_factory: GatewayFactory
    ) -> None:
        gateway = await gateway_factory()
        job = (await submit(gateway.client, "echo", {})).json()["jobID"]
        assert (await gateway.client.delete(f"/jobs/{job}")).status_code == 200
        await gateway.client.delete(f"/jobs/{job}")  # a repeat changes nothing
        # A quorum queue applies its length limit a little late: a few submissions fill it.
        statuses = [(await submit(gateway.client, "bounded", {})).status_code for _ in range(4)]
        refused = statuses.count(429)
        assert refused >= 1, statuses
        text = (await gateway.client.get("/metrics")).text
        assert (
            'sg_jobs_finished_total{reason="cancelled",service="echo",status="dismissed"} 1.0'
            in text
        )
        assert (
            'sg_jobs_finished_total{reason="publish_failed",service="bounded",status="failed"} '
            f"{float(refused)}" in text
        )
