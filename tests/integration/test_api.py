"""The job API against the real broker, without workers."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Callable

import aio_pika
import httpx
import pytest

from gateway import Settings, create_app
from gateway.api.execution import execution_mode
from gateway.broker import BrokerDown
from gateway.store import JobQuery
from tests.conftest import AMQP_URL, Gateway, GatewayFactory
from tests.support import job_state, submit
from worker_sdk.wire import Task, Topology
from worker_sdk.wire.catalogue import Catalogue

pytestmark = pytest.mark.integration


async def _queued_tasks(namespace: str, service: str) -> list[Task]:
    """Drain (and requeue) what the service's queue holds."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(Topology(namespace).task_queue(service), ensure=True)
        tasks = []
        while (message := await queue.get(fail=False, no_ack=False)) is not None:
            tasks.append(Task.model_validate_json(message.body))
            assert message.properties.delivery_mode == 2
            assert message.properties.correlation_id == str(tasks[-1].job_id)
            assert message.properties.message_id
        return tasks


async def test_processes_are_listed_and_described(client: httpx.AsyncClient) -> None:
    listing = await client.get("/processes")
    assert listing.status_code == 200
    ids = {p["id"] for p in listing.json()["processes"]}
    assert {"echo", "crunch", "ephemeral"} <= ids
    described = await client.get("/processes/echo")
    assert described.status_code == 200
    body = described.json()
    assert body["inputs"]["text"] == {
        "title": "text",
        "schema": {"type": "string", "maxLength": 100},
        "minOccurs": 0,
        "maxOccurs": 1,
    }
    assert body["queueTtl"] == 7200


async def test_unknown_process_is_404_problem(client: httpx.AsyncClient) -> None:
    for response in (await client.get("/processes/nope"), await submit(client, "nope", {})):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "no-such-process"


async def test_submit_records_then_queues_a_durable_task(gateway: Gateway, namespace: str) -> None:
    client = gateway.client
    response = await submit(client, "echo", {"text": "hi"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "accepted"
    assert uuid.UUID(body["jobID"]).version == 7  # time-ordered: see gateway.store.new_job_id
    assert response.headers["location"] == f"http://gw.test/jobs/{body['jobID']}"
    (task,) = await _queued_tasks(namespace, "echo")
    assert str(task.job_id) == body["jobID"]
    assert task.inputs == {"text": "hi"}
    assert task.service_version == "1.0.0"
    state = await job_state(client, body["jobID"])
    assert state["status"] == "accepted"
    assert state["processID"] == "echo"
    assert await gateway.runtime.store.counters("submissions:") == {"submissions:echo": 1}


async def _nothing_recorded_or_queued(gateway: Gateway, namespace: str) -> None:
    assert await gateway.runtime.store.page_jobs(JobQuery(owner=None)) == []
    assert await _queued_tasks(namespace, "echo") == []


async def test_inputs_failing_the_schema_are_422_naming_each_path(
    gateway: Gateway, namespace: str
) -> None:
    response = await submit(gateway.client, "echo", {"delay": -1, "text": "x" * 101})
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "invalid-input"
    assert {e["path"] for e in problem["errors"]} == {"/inputs/delay", "/inputs/text"}
    await _nothing_recorded_or_queued(gateway, namespace)


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"{not json", {"content-type": "application/json"}),
        (b'{"inputs": [1, 2]}', {"content-type": "application/json"}),
        (b'"just a string"', {"content-type": "application/json"}),
    ],
)
async def test_malformed_bodies_are_400(
    gateway: Gateway, namespace: str, content: bytes, headers: dict[str, str]
) -> None:
    response = await gateway.client.post(
        "/processes/echo/execution", content=content, headers=headers
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid-request"
    await _nothing_recorded_or_queued(gateway, namespace)


async def test_an_oversized_body_is_413(gateway_factory: GatewayFactory, namespace: str) -> None:
    gateway = await gateway_factory(max_body_size=2048)
    response = await submit(gateway.client, "echo", {"text": "x" * 4000})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["code"], problem["status"]) == ("body-too-large", 413)
    assert "2048 bytes" in problem["detail"]
    assert int(response.headers["content-length"]) == len(response.content)

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 1024

    chunked = await gateway.client.post(
        "/processes/echo/execution",
        content=stream(),
        headers={"content-type": "application/json"},
    )
    assert chunked.status_code == 413
    assert chunked.json()["code"] == "body-too-large"
    # The old routes and the dashboard's forms are behind the same limit.
    legacy = await gateway.client.post("/echo/process", content=b"x" * 4000)
    assert (legacy.status_code, legacy.json()["code"]) == (413, "body-too-large")
    # So is a status read that sends a body (it takes no fast lane).
    read = await gateway.client.request("GET", f"/jobs/{uuid.uuid4()}", content=b"x" * 4000)
    assert (read.status_code, read.json()["code"]) == (413, "body-too-large")
    # Whichever layer refused it (the limit's middleware, or the framework reading a body of
    # no declared length), the problem reads the same.
    titles = {r.json()["title"] for r in (response, chunked, legacy, read)}
    assert titles == {"Body too large"}
    await _nothing_recorded_or_queued(gateway, namespace)


async def test_the_framework_s_refusals_read_as_ours(client: httpx.AsyncClient) -> None:
    nowhere = await client.get("/no/such/route")
    assert (nowhere.status_code, nowhere.json()["code"]) == (404, "not-found")
    assert nowhere.json()["title"] == "Not found"
    wrong = await client.delete("/processes")
    assert (wrong.status_code, wrong.json()["code"]) == (405, "method-not-allowed")
    assert wrong.json()["title"] == "Method Not Allowed"


async def test_unknown_and_malformed_job_ids(client: httpx.AsyncClient) -> None:
    missing = await client.get(f"/jobs/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.json()["code"] == "no-such-job"
    malformed = await client.get("/jobs/not-a-uuid")
    assert malformed.status_code == 400
    assert malformed.json()["code"] == "invalid-request"
    assert (await client.get(f"/jobs/{uuid.uuid4()}/results")).status_code == 404


async def test_a_plain_status_read_answers_as_the_routed_one(gateway: Gateway) -> None:
    """``GET /jobs/{id}`` with nothing else takes the fast lane; with a query (``f=json``)
    or the id in capitals it is routed: the answers are the same, headers and body; errors
    (another's job, no token, HTML) are the routed ones."""
    client = gateway.client
    job = (await submit(client, "echo", {})).json()["jobID"]
    plain = await client.get(f"/jobs/{job}")
    for other in (f"/jobs/{job}?f=json", f"/jobs/{job.upper()}"):
        routed = await client.get(other)
        assert routed.status_code == plain.status_code == 200
        assert routed.content == plain.content
        assert dict(routed.headers) == dict(plain.headers)
    assert plain.json()["status"] == "accepted"
    assert plain.json()["queuePosition"] == 1
    anonymous = await client.get(f"/jobs/{job}", headers={"authorization": ""})
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert anonymous.json()["code"] == "unauthorized"
    html = await client.get(f"/jobs/{job}", headers={"accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html")
    assert "content-security-policy" in html.headers
    async with gateway.as_user("someone-else") as stranger:
        response = await stranger.get(f"/jobs/{job}")
    assert response.status_code == 404
    assert response.json()["code"] == "no-such-job"


async def test_a_plain_submission_answers_as_the_routed_one(gateway: Gateway) -> None:
    """A submission with a JSON body and nothing else takes the fast lane; with a query or a
    charset on its type it is routed: the answers match (the job's own id and times aside),
    successes and errors, and an error before the job exists records nothing."""
    lane = {"content-type": "application/json", "prefer": "respond-async"}
    routed = {**lane, "content-type": "application/json; charset=utf-8"}

    def masked(response: httpx.Response) -> tuple[int, dict[str, str], object]:
        body = response.json()
        headers = {k: v for k, v in response.headers.items() if k not in ("location",)}
        if "jobID" in body:
            assert response.headers["location"].endswith(f"/jobs/{body['jobID']}")
            body = {k: v for k, v in body.items() if k not in ("jobID", "created", "updated")}
            headers.pop("content-length")
            body["links"] = len(body["links"])
        return response.status_code, headers, body

    cases = [
        ("/processes/echo/execution", b'{"inputs": {"text": "x"}}', 201),
        ("/processes/nope/execution", b'{"inputs": {}}', 404),
        ("/processes/echo/execution", b'{"inputs": {"text": 5}}', 422),
        ("/processes/echo/execution", b'{"inputs": {}, "extra": 1}', 400),
        ("/processes/echo/execution", b'{"inputs": {}, "outputs": {"nope": {}}}', 400),
    ]
    for path, content, status in cases:
        fast = await gateway.client.post(path, content=content, headers=lane)
        slow = await gateway.client.post(f"{path}?x=1", content=content, headers=routed)
        assert fast.status_code == status, fast.text
        assert masked(fast) == masked(slow)
    before = await gateway.runtime.store.page_jobs(JobQuery(owner=None, limit=100))
    assert len(before) == 2  # the two accepted submissions, nothing else
    anonymous = await gateway.client.post(
        "/processes/echo/execution",
        content=b'{"inputs": {}}',
        headers={**lane, "authorization": "Bearer nope"},
    )
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "unauthorized"
    replayed = [
        await gateway.client.post(
            "/processes/echo/execution",
            content=b'{"inputs": {}}',
            headers={**lane, "idempotency-key": "k-1"},
        )
        for _ in range(2)
    ]
    assert [r.status_code for r in replayed] == [201, 200]
    assert replayed[1].headers["idempotent-replayed"] == "true"


async def test_results_are_not_ready_while_queued(client: httpx.AsyncClient) -> None:
    job = (await submit(client, "echo", {})).json()
    response = await client.get(f"/jobs/{job['jobID']}/results")
    assert response.status_code == 404
    assert response.json()["code"] == "result-not-ready"
    assert response.json()["type"].endswith("/result-not-ready")


def _job_in(problem: dict[str, str]) -> str:
    match = re.search(r"job ([0-9a-f-]{36}) not queued", problem["detail"])
    assert match, problem
    return match.group(1)


async def test_a_returned_publish_is_503_and_the_job_failed(
    client: httpx.AsyncClient, namespace: str
) -> None:
    topology = Topology(namespace)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.task_queue("echo"), ensure=True)
        await queue.unbind(topology.tasks_exchange, routing_key="echo")
    response = await submit(client, "echo", {})
    assert response.status_code == 503, response.text
    problem = response.json()
    assert problem["code"] == "broker-unavailable"
    assert "NO_ROUTE" in problem["detail"]
    assert response.headers["retry-after"]
    # The job was recorded first, and is failed: never left accepted.
    state = await job_state(client, _job_in(problem))
    assert (state["status"], state["reason"]) == ("failed", "publish_failed")


async def test_a_nacked_publish_to_a_full_queue_is_429_and_the_job_failed(
    client: httpx.AsyncClient, namespace: str
) -> None:
    responses = [await submit(client, "bounded", {}) for _ in range(4)]
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {201, 429}, statuses
    refused = responses[statuses.index(429)]
    assert refused.json()["code"] == "queue-full"
    assert refused.headers["retry-after"]
    state = await job_state(client, _job_in(refused.json()))
    assert (state["status"], state["reason"]) == ("failed", "publish_failed")
    queued = await _queued_tasks(namespace, "bounded")
    assert sorted(str(t.job_id) for t in queued) == sorted(
        r.json()["jobID"] for r in responses if r.status_code == 201
    )


async def test_broker_unreachable_is_503_and_nothing_is_accepted(gateway: Gateway) -> None:
    assert (await gateway.client.get("/readyz")).status_code == 200
    await gateway.runtime.broker.close()  # as a broker outage would
    response = await submit(gateway.client, "echo", {})
    assert response.status_code == 503
    assert response.json()["code"] == "broker-unavailable"
    state = await job_state(gateway.client, _job_in(response.json()))
    assert (state["status"], state["reason"]) == ("failed", "publish_failed")
    ready = await gateway.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["store"] == "ok"
    assert ready.json()["checks"]["broker"] != "ok"


async def test_health_probes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok", "checks": {}, "warnings": []}
    ready = await client.get("/readyz")
    assert ready.json() == {
        "status": "ok",
        "checks": {"broker": "ok", "store": "ok"},
        "warnings": [],
    }


async def test_landing_conformance_and_openapi(client: httpx.AsyncClient) -> None:
    landing = (await client.get("/")).json()
    assert {link["rel"] for link in landing["links"]} >= {"service-desc", "service-doc"}
    conformance = (await client.get("/conformance")).json()["conformsTo"]
    assert any(c.endswith("/conf/core") for c in conformance)
    spec = (await client.get("/openapi.json")).json()
    execute = spec["paths"]["/processes/{processID}/execution"]["post"]
    assert {"201", "404", "422", "429", "503"} <= set(execute["responses"])
    assert (await client.get("/docs")).status_code == 200


def test_prefer_header_parsing() -> None:
    def wait(prefer: str | None, sync: bool = False) -> float | None:
        return execution_mode(prefer, sync_capable=sync, max_wait=60).wait

    assert wait(None) is None
    assert wait(None, sync=True) == 60  # OGC: no preference, a sync-capable process: sync
    assert wait("respond-async", sync=True) is None
    assert wait("respond-async, wait=10") is None
    assert wait("wait=10") == 10
    assert wait("handling=lenient, wait=100") == 60
    assert wait("wait=abc") is None
    assert wait("respond-sync") is None  # not an RFC 7240 preference: the default applies
    assert wait('wait="5"; x=1') == 5
    assert execution_mode("wait=7", sync_capable=False, max_wait=60).applied == "wait=7"
    for long in ("1000000", "9" * 5000):  # clamped as a shorter one is, never dropped
        assert wait(f"wait={long}") == 60
        assert execution_mode(f"wait={long}", sync_capable=False, max_wait=60).applied == (
            "wait=60"
        )
    for bad in ("-1", "1e3", "1.5", "", "٣"):  # no number of seconds RFC 7240 writes
        assert wait(f"wait={bad}") is None


async def test_an_unreachable_broker_fails_start_up_within_its_bound(
    settings_for: Callable[..., Settings], catalogue: Catalogue
) -> None:
    settings = settings_for(amqp_url="amqp://guest:guest@127.0.0.1:1/", broker_connect_timeout=1.5)
    app = create_app(settings, catalogue=catalogue)
    started = time.monotonic()
    with pytest.raises(BrokerDown, match="cannot connect"):
        async with app.router.lifespan_context(app):
            pass
    assert time.monotonic() - started < 10


async def test_every_prefer_line_counts_on_either_lane(gateway: Gateway) -> None:
    """RFC 7240 §2: several Prefer lines read as one list; only the first line was read, so
    `respond-async` on a second line was ignored and the request waited."""
    for query in ("", "?x=1"):  # the fast lane, and the routed one
        response = await gateway.client.post(
            f"/processes/echo/execution{query}",
            json={"inputs": {"text": "x"}},
            headers=[("Prefer", "wait=3"), ("Prefer", "respond-async")],
        )
        assert response.status_code == 201, response.text
        assert response.headers["preference-applied"] == "respond-async"
