"""Signed webhooks (OGC ``subscriber``): verified by the Standard Webhooks library itself,
delivered at least once with retries from the broker, refused at submit for a denied address,
and delivered across a gateway restart."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from examples.echo import worker as echo_worker
from gateway.store import JobStatus, SQLiteStore
from gateway.webhook_delivery import WebhookDeliverer
from gateway.webhooks import WebhookTask
from tests.conftest import TEST_SECRET, TEST_WEBHOOK_DELAYS, Gateway, GatewayFactory
from tests.live import LiveGateway
from tests.support import TEST_CATALOGUE, eventually, wait_status
from tests.webhook_receiver import Receiver, receiving
from tests.workers import slow
from worker_sdk import UrlPolicy

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"webhook-secret-of-the-tests-32by").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the-secret-being-retired-32bytes").decode()
HOOKS: dict[str, Any] = {
    "webhook_secret": SECRET,
    "webhook_allow_networks": ("127.0.0.0/8",),
    "webhook_retry_delays": TEST_WEBHOOK_DELAYS,
}
LIVE_HOOKS = {
    "webhook_secret": SECRET,
    "webhook_allow_networks": "127.0.0.0/8",
    "webhook_retry_delays": ",".join(map(str, TEST_WEBHOOK_DELAYS)),
    "recovery_interval": "0.5",
    "publish_timeout": "1",
}


async def _execute(
    client: httpx.AsyncClient, inputs: dict[str, Any], *, process: str = "echo", **subscriber: str
) -> str:
    body = {"inputs": inputs, "subscriber": subscriber}
    response = await client.post(f"/processes/{process}/execution", json=body)
    assert response.status_code == 201, response.text
    job_id: str = response.json()["jobID"]
    return job_id


async def _delivered(client: httpx.AsyncClient, job_id: str, kind: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        response = await client.get(f"/jobs/{job_id}/webhooks")
        assert response.status_code == 200, response.text
        for hook in response.json()["webhooks"]:
            if hook["type"] == kind and hook["state"] == "delivered":
                return dict(hook)
        return None

    return await eventually(probe, within=30, what=f"{kind} delivered for job {job_id}")


async def _received(receiver: Receiver, kind: str, count: int = 1) -> None:
    async def probe() -> bool:
        return len(receiver.of_type(kind)) >= count

    await eventually(probe, within=30, what=f"{count} {kind} request(s) at the receiver")


async def test_every_webhook_is_signed_and_the_library_verifies_it(
    gateway_factory: GatewayFactory, run_worker: Callable[..., asyncio.Task[None]], tmp_path: Path
) -> None:
    gateway = await gateway_factory(**HOOKS, webhook_old_secrets=(OLD_SECRET,))
    run_worker(slow)
    gate = tmp_path / "gate"
    with receiving() as receiver:
        job_id = await _execute(
            gateway.client,
            {"gate": str(gate), "report": False},
            process="slow",
            successUri=f"{receiver.url}/done",
            inProgressUri=f"{receiver.url}/progress",
            failedUri=f"{receiver.url}/failed",
        )
        # The job goes on only once its start was called back: a start and an end queued
        # together are coalesced to the end (the outbox reports a job at its latest).
        await _received(receiver, "job.started")
        gate.touch()
        await _received(receiver, "job.successful")
    requests = receiver.requests
    assert {r.path for r in requests} <= {"/hook/done", "/hook/progress"}
    for request in requests:
        # The library's own verifier, with the current secret and with the retiring one.
        payload = Webhook(SECRET).verify(request.body, request.headers)
        assert Webhook(OLD_SECRET).verify(request.body, request.headers) == payload
        assert payload["data"]["jobID"] == job_id
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(request.body + b" ", request.headers)
        assert request.headers["content-type"] == "application/json"
    (done,) = receiver.of_type("job.successful")
    payload = Webhook(SECRET).verify(done.body, done.headers)
    assert payload["data"]["status"] == "successful"
    assert done.headers["webhook-id"] == f"{job_id}.successful"
    assert len(done.headers["webhook-signature"].split(" ")) == 2  # one per secret
    forged = Webhook("whsec_" + base64.b64encode(b"x" * 32).decode())
    with pytest.raises(WebhookVerificationError):
        forged.verify(done.body, done.headers)
    # The job links its webhooks; each attempt's outcome is there.
    status = (await gateway.client.get(f"/jobs/{job_id}")).json()
    assert any(link["href"].endswith(f"/jobs/{job_id}/webhooks") for link in status["links"])
    hook = await _delivered(gateway.client, job_id, "job.successful")
    assert (hook["attempts"], hook["lastStatus"], hook["id"]) == (1, 204, done.event_id)
    # Another user does not see them.
    async with gateway.as_user("mallory") as other:
        assert (await other.get(f"/jobs/{job_id}/webhooks")).status_code == 404


async def test_a_receiver_failing_twice_gets_one_successful_delivery_per_event(
    gateway_factory: GatewayFactory, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    gateway = await gateway_factory(**HOOKS, webhook_concurrency=1)
    run_worker(echo_worker)
    with receiving(lambda _id, before: 500 if before < 2 else 204) as receiver:
        first = await _execute(gateway.client, {"text": "a"}, successUri=receiver.url)
        failed = await _execute(gateway.client, {"fail": "no"}, failedUri=receiver.url)
        hook = await _delivered(gateway.client, first, "job.successful")
        other = await _delivered(gateway.client, failed, "job.failed")
        # A duplicate of a delivered event (as a sweep racing a slow mark would queue) is
        # dropped; a later event through the same single-file consumer shows it was handled.
        body = (await gateway.client.get(f"/jobs/{first}")).json()
        duplicate = WebhookTask(
            event_id=hook["id"], job_id=first, type="job.successful", url=receiver.url, body="{}"
        )
        broker = gateway.runtime.broker
        await broker.publish_webhook(duplicate.to_bytes(), job_id=uuid.UUID(first), delay=None)
        sentinel = duplicate.model_copy(update={"event_id": "sentinel", "type": "job.failed"})
        await broker.publish_webhook(sentinel.to_bytes(), job_id=uuid.UUID(first), delay=None)

        async def sentinel_seen() -> bool:
            return any(r.event_id == "sentinel" for r in receiver.requests)

        await eventually(sentinel_seen, within=30, what="the sentinel")
    assert body["status"] == "successful"
    for delivered in (hook, other):
        assert (delivered["attempts"], delivered["lastStatus"]) == (3, 204)
        attempts = [r for r in receiver.requests if r.event_id == delivered["id"]]
        assert [r.answered for r in attempts] == [500, 500, 204]
        assert len({r.body for r in attempts}) == 1  # the same event each time
        assert receiver.successes(delivered["id"]) == 1
        for request in attempts:
            Webhook(SECRET).verify(request.body, request.headers)
    counted = gateway.runtime.metrics.registry.get_sample_value
    for outcome, count in (("retrying", 2), ("delivered", 1), ("failed", None)):
        labels = {"type": "job.successful", "outcome": outcome}
        assert counted("sg_webhook_attempts_total", labels) == count  # the duplicate: none
    # The backoff followed the schedule: attempts 1 s, then 2 s apart at least.
    stamps = [
        int(r.headers["webhook-timestamp"]) for r in receiver.requests if r.event_id == hook["id"]
    ]
    assert stamps[1] - stamps[0] >= TEST_WEBHOOK_DELAYS[0] - 1
    assert stamps[2] - stamps[1] >= TEST_WEBHOOK_DELAYS[1] - 1


async def _deferrals(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("sg_webhook_attempts_total{") and 'outcome="deferred"' in line
    )


class _Held:
    """A receiver's plan that holds every request until the test opens it, counting how
    many are held at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self._lock = threading.Lock()
        self.open = 0
        self.most = 0

    def __call__(self, _event: str, _before: int) -> int:
        with self._lock:
            self.open += 1
            self.most = max(self.most, self.open)
        self.gate.wait(60)
        with self._lock:
            self.open -= 1
        return 204

    async def until(self, count: int, *, within: float = 15.0) -> None:
        async def held() -> bool:
            return self.open == count

        await eventually(held, within=within, what=f"{count} webhook(s) held by the receiver")


async def _one_at_a_time(factory: GatewayFactory, *, wait: float) -> Gateway:
    """A gateway making one attempt at a time to a receiver, waiting ``wait`` for its slot."""
    return await factory(
        **HOOKS, webhook_host_concurrency=1, webhook_host_wait=wait, webhook_timeout=60.0
    )


async def test_a_receiver_that_does_not_answer_holds_back_no_other(
    gateway_factory: GatewayFactory, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    gateway = await gateway_factory(
        **HOOKS, webhook_concurrency=2, webhook_host_concurrency=1, webhook_timeout=60.0
    )
    run_worker(echo_worker)
    held = _Held()  # the receiver answers nothing until the test lets it
    try:
        with receiving(held) as silent, receiving() as fast:
            jobs = [
                await _execute(gateway.client, {"text": f"held {i}"}, successUri=silent.url)
                for i in range(3)
            ]
            await held.until(1)
            quick = await _execute(gateway.client, {"text": "quick"}, successUri=fast.url)
            # Both delivery slots would be held by the silent receiver without its limit.
            await _delivered(gateway.client, quick, "job.successful")
            assert held.most == 1
            held.gate.set()
            for job_id in jobs:
                hook = await _delivered(gateway.client, job_id, "job.successful")
                assert hook["attempts"] == 1  # a deferral is not an attempt
            assert held.most == 1
    finally:
        held.gate.set()


async def test_a_burst_to_a_receiver_at_its_limit_waits_for_it_and_is_not_deferred(
    gateway_factory: GatewayFactory, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    gateway = await _one_at_a_time(gateway_factory, wait=30.0)
    run_worker(echo_worker)
    held = _Held()
    try:
        with receiving(held) as receiver:
            jobs = [
                await _execute(gateway.client, {"text": f"burst {i}"}, successUri=receiver.url)
                for i in range(6)
            ]
            for job_id in jobs:
                await wait_status(gateway.client, job_id, "successful")
            await held.until(1)
            held.gate.set()  # the receiver answers: the others were waiting for its slot
            for job_id in jobs:
                hook = await _delivered(gateway.client, job_id, "job.successful")
                assert hook["attempts"] == 1
            assert held.most == 1
            assert await _deferrals(gateway.client) == 0
    finally:
        held.gate.set()


async def test_a_slow_receivers_deliveries_are_deferred_in_turn_then_attempted(
    gateway_factory: GatewayFactory, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    gateway = await _one_at_a_time(gateway_factory, wait=0.2)
    run_worker(echo_worker)
    held = _Held()
    try:
        with receiving(held) as receiver:
            first = await _execute(gateway.client, {"text": "first"}, successUri=receiver.url)
            await held.until(1)
            second = await _execute(gateway.client, {"text": "second"}, successUri=receiver.url)

            async def deferred() -> dict[str, Any] | None:
                body = (await gateway.client.get(f"/jobs/{second}/webhooks")).json()
                hooks = body["webhooks"]
                return hooks[0] if hooks and hooks[0]["nextAttempt"] else None

            waiting = await eventually(deferred, what="the second webhook's deferral shown")
            assert (waiting["state"], waiting["attempts"]) == ("retrying", 0)
            assert "firstAttempt" not in waiting

            # Deferred once per delay of the schedule, it is then attempted beyond the limit.
            await held.until(2, within=30)
            assert await _deferrals(gateway.client) == len(TEST_WEBHOOK_DELAYS)
            held.gate.set()
            for job_id in (first, second):
                hook = await _delivered(gateway.client, job_id, "job.successful")
                assert (hook["attempts"], hook.get("nextAttempt")) == (1, None)
    finally:
        held.gate.set()


async def test_a_subscriber_on_a_denied_address_is_refused_at_submit(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = await gateway_factory(webhook_secret=SECRET)  # the default policy
    for uri in (
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://0x7f.1/hook",
        "http://[64:ff9b::7f00:1]/hook",
        "http://[::127.0.0.1]/hook",
        "http://localhost/hook",
        "ftp://example.org/hook",
        "http://exa\x00mple.com/hook",
        "http://93.184.216.34/\r\nX-Injected: 1",  # a public address, a line break after it
        "http://93.184.216.34/hook\x7f",
        "http://%31%32%37.0.0.1/hook",
    ):
        response = await gateway.client.post(
            "/processes/echo/execution",
            json={"inputs": {}, "subscriber": {"inProgressUri": uri}},
        )
        assert response.status_code == 422, (uri, response.text)
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert problem["code"] == "invalid-input"
        assert [e["path"] for e in problem["errors"]] == ["/subscriber/inProgressUri"]
    listed = (await gateway.client.get("/jobs")).json()
    assert listed["jobs"] == []  # nothing was recorded
    unsigned = await gateway_factory()  # no secret: no webhooks at all
    response = await unsigned.client.post(
        "/processes/echo/execution",
        json={"inputs": {}, "subscriber": {"successUri": "https://example.org/hook"}},
    )
    assert response.status_code == 400
    assert "SG_WEBHOOK_SECRET" in response.json()["detail"]


async def test_the_address_is_checked_again_when_connecting() -> None:
    """A name that passed at submit but resolves to a denied address now (DNS rebinding)
    reaches nothing: the deliverer checks the address it connects to."""
    with receiving() as receiver:
        deliverer = WebhookDeliverer(
            None,  # type: ignore[arg-type]  # attempt() uses neither store nor broker
            None,  # type: ignore[arg-type]
            signers=[Webhook(SECRET)],
            policy=UrlPolicy(),
            delays=(),
            timeout=5,
        )
        task = WebhookTask(
            event_id="e1",
            job_id=uuid.uuid4(),
            type="job.successful",
            url=f"http://localhost:{receiver.port}/hook",
            body="{}",
        )
        try:
            status, error = await deliverer.attempt(task, datetime.now(UTC))
        finally:
            await deliverer.close()
    assert status is None
    assert error is not None
    assert "non-public" in error
    assert receiver.requests == []


def _token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 3600}, TEST_SECRET, algorithm="HS256")


async def test_a_gateway_restart_between_the_end_and_the_delivery_still_delivers(
    namespace: str, tmp_path: Path, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    """The job ends while the receiver is down; the gateway is SIGKILLed with the delivery's
    next attempt waiting in its holding queue, and started again: the webhook arrives."""
    server = LiveGateway(
        namespace=namespace, workdir=tmp_path, catalogue=TEST_CATALOGUE, **LIVE_HOOKS
    )
    server.start()
    up = asyncio.Event()
    run_worker(echo_worker)
    auth = {"Authorization": f"Bearer {_token('rita')}"}
    try:
        await server.ready()
        with receiving(lambda _id, _before: 204 if up.is_set() else 503) as receiver:
            async with httpx.AsyncClient(base_url=server.base, headers=auth, timeout=15) as http:
                job_id = await _execute(http, {"text": "x"}, successUri=receiver.url)
                await wait_status(http, job_id, "successful", within=30)
                await _received(receiver, "job.successful")  # the first attempt: refused

                async def retrying() -> bool:
                    listed = (await http.get(f"/jobs/{job_id}/webhooks")).json()["webhooks"]
                    return any(h["state"] == "retrying" for h in listed)

                # The failed attempt is recorded: its retry waits in the holding queue.
                await eventually(retrying, within=30, what="the first attempt recorded")
            server.kill()
            up.set()
            server.start()
            await server.ready()
            async with httpx.AsyncClient(base_url=server.base, headers=auth, timeout=15) as http:
                hook = await _delivered(http, job_id, "job.successful")
        assert (hook["attempts"], hook["lastStatus"]) == (2, 204)
        answers = [r.answered for r in receiver.requests if r.event_id == hook["id"]]
        assert answers == [503, 204]
    finally:
        await server.stop()


async def test_a_change_committed_by_a_gateway_that_died_before_queuing_is_delivered(
    namespace: str, tmp_path: Path
) -> None:
    """The outbox: a job's end committed to the store by a gateway that died before it
    queued the webhook (written here straight to the store, with no gateway running) is
    found by the next gateway's sweep and delivered."""
    server = LiveGateway(
        namespace=namespace, workdir=tmp_path, catalogue=TEST_CATALOGUE, **LIVE_HOOKS
    )
    server.start()
    auth = {"Authorization": f"Bearer {_token('omar')}"}
    try:
        await server.ready()
        with receiving() as receiver:
            async with httpx.AsyncClient(base_url=server.base, headers=auth, timeout=15) as http:
                job_id = await _execute(http, {"text": "x"}, failedUri=receiver.url)
            server.kill()
            store = SQLiteStore(server.database)
            await store.open()
            try:
                ended = await store.finish(
                    uuid.UUID(job_id),
                    status=JobStatus.DISMISSED,
                    reason="cancelled",
                    at=datetime.now(UTC) - timedelta(seconds=10),
                )
                assert ended is not None
                assert ended.webhook_open
            finally:
                await store.close()
            server.start()
            await server.ready()
            await _received(receiver, "job.dismissed")
            async with httpx.AsyncClient(base_url=server.base, headers=auth, timeout=15) as http:
                hook = await _delivered(http, job_id, "job.dismissed")
        (request,) = receiver.of_type("job.dismissed")
        payload = Webhook(SECRET).verify(request.body, request.headers)
        assert (payload["data"]["status"], payload["data"]["reason"]) == ("dismissed", "cancelled")
        assert hook["id"] == f"{job_id}.dismissed"
    finally:
        await server.stop()


async def test_the_subscriber_is_part_of_an_idempotent_submission(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = await gateway_factory(**HOOKS)
    key = {"Idempotency-Key": "hooked-once"}
    body = {"inputs": {"text": "x"}, "subscriber": {"successUri": "http://127.0.0.1:9/a"}}
    first = await gateway.client.post("/processes/echo/execution", json=body, headers=key)
    assert first.status_code == 201, first.text
    again = await gateway.client.post("/processes/echo/execution", json=body, headers=key)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["jobID"] == first.json()["jobID"]
    other = {**body, "subscriber": {"successUri": "http://127.0.0.1:9/b"}}
    conflict = await gateway.client.post("/processes/echo/execution", json=other, headers=key)
    assert conflict.status_code == 409
    listed = await gateway.client.get(f"/jobs/{first.json()['jobID']}/webhooks")
    assert listed.json()["subscriber"] == body["subscriber"]
    assert listed.json()["webhooks"] == []
