"""The Python client against a gateway served over HTTP and workers on the real broker."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.echo import worker as echo
from sgw_client import (
    NO_RETRY,
    AsyncClient,
    BadRequest,
    Client,
    GatewayUnreachable,
    IdempotencyConflict,
    InvalidInput,
    Job,
    JobDismissed,
    JobFailed,
    JobStatus,
    NotFound,
    QueueFull,
    ResultNotReady,
    RetryPolicy,
    Unauthorized,
    UnknownJob,
    UnknownProcess,
    WaitTimeout,
)
from tests.client.conftest import (
    FAST_RETRY,
    AsyncRecordingTransport,
    LiveGateway,
    RecordingTransport,
    free_port,
    until,
)
from tests.conftest import Gateway
from tests.support import eventually
from tests.workers import slow
from worker_sdk import JobContext, Worker

pytestmark = pytest.mark.integration

RunWorker = Callable[..., asyncio.Task[None]]


async def test_submit_wait_and_results(
    live: LiveGateway, run_worker: RunWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_worker(echo)
    monkeypatch.setenv("SG_CLIENT_URL", live.url + "/")
    monkeypatch.setenv("SG_CLIENT_TOKEN", live.token("carol"))
    with Client() as client:  # the gateway and the token from the environment
        assert client.base_url == live.url
        job = await asyncio.to_thread(client.submit, "echo", {"text": "hello", "n": 3})
        assert (job.status, job.process) == (JobStatus.ACCEPTED, "echo")
        done = await asyncio.to_thread(client.wait, job, 30)
        assert (done.id, done.status, done.progress) == (job.id, JobStatus.SUCCESSFUL, 100)
        assert await asyncio.to_thread(client.results, job.id) == {"text": "hello", "n": 3}
        assert (await asyncio.to_thread(client.status, str(job.id))).terminal
    monkeypatch.delenv("SG_CLIENT_TOKEN")
    with Client(retry=NO_RETRY) as anonymous, pytest.raises(Unauthorized):
        await asyncio.to_thread(anonymous.status, job)


def in_process(gateway: Gateway, sub: str = "alice", **options: Any) -> AsyncClient:
    """An AsyncClient of the in-process gateway (no event streams: ASGITransport buffers
    whole responses)."""
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("transport", gateway.transport)
    return AsyncClient("http://gw.test", gateway.token(sub), **options)


async def finished(client: AsyncClient, job: Job) -> Job:
    async def probe() -> Job | None:
        state = await client.status(job)
        return state if state.terminal else None

    return await eventually(probe, what=f"job {job.id} to end")


async def test_async_submit_with_prefer_wait_answers_the_finished_job(
    gateway: Gateway, run_worker: RunWorker
) -> None:
    run_worker(echo)
    async with in_process(gateway) as client:
        job = await client.submit("echo", {"text": "quick"}, wait=20)
        assert job.status is JobStatus.SUCCESSFUL
        assert await client.results(job) == {"text": "quick"}
        assert {p.id for p in await client.processes()} >= {"echo", "slow", "bounded"}


async def test_the_stream_resumes_after_the_gateway_dies_without_repeating_itself(
    live: LiveGateway, run_worker: RunWorker, tmp_path: Path
) -> None:
    run_worker(slow)
    gate = tmp_path / "gate"
    transport = AsyncRecordingTransport()
    states: list[Job] = []
    async with live.async_client(transport=transport) as client:
        job = await client.submit("slow", {"gate": str(gate), "progress": 40})

        async def follow() -> None:
            async with aclosing(client.stream(job)) as stream:
                async for state in stream:
                    states.append(state)

        following = asyncio.create_task(follow())
        await until(lambda: any(s.progress == 40 for s in states), what="progress 40")
        live.kill()  # the stream breaks mid-job
        gate.touch()  # the job ends while no gateway runs: its event waits in the broker
        await live.start()
        await asyncio.wait_for(following, timeout=30)

    assert states[-1].status is JobStatus.SUCCESSFUL
    # Each state once, in order: the reconnection asked for what came after the last one.
    assert len({s.model_dump_json() for s in states}) == len(states)
    assert all(a.updated <= b.updated for a, b in itertools.pairwise(states))
    assert [s.progress for s in states].count(40) == 1
    opened = transport.record.matching("GET", "/events")
    assert len(opened) >= 2
    assert "last-event-id" not in opened[0].headers
    assert all("last-event-id" in s.headers for s in opened[1:])


async def test_wait_rides_out_a_gateway_restart(
    live: LiveGateway, run_worker: RunWorker, tmp_path: Path
) -> None:
    """The must-show: a blocking wait() is in progress, the gateway is SIGKILLed and started
    again on the same port and store, and wait() returns the job's end."""
    run_worker(slow)
    gate = tmp_path / "gate"
    transport = RecordingTransport()
    with live.client(transport=transport) as client:
        job = await asyncio.to_thread(client.submit, "slow", {"gate": str(gate)})
        waiting = asyncio.create_task(asyncio.to_thread(client.wait, job, 60))
        events = transport.record.matching
        await until(lambda: any(s.outcome == "200" for s in events("GET", "/events")), what="wait")
        assert not waiting.done()
        live.kill()
        await until(
            lambda: any(s.outcome == "ConnectError" for s in events("GET", "/events")),
            what="the client to find the gateway gone",
        )
        await live.start()
        gate.touch()
        done = await asyncio.wait_for(waiting, timeout=30)
    assert done.status is JobStatus.SUCCESSFUL
    assert live.starts == 2


async def test_a_broken_submit_is_retried_without_a_second_job(
    live: LiveGateway, run_worker: RunWorker, tmp_path: Path
) -> None:
    """The gateway accepts the job, then dies before answering (it was holding the answer
    for Prefer: wait): the client's retry, with the same Idempotency-Key, waits as the first
    request did and is answered with the first job, and the gateway holds exactly one."""
    run_worker(slow)
    gate = tmp_path / "gate"
    transport = RecordingTransport()
    with live.client(transport=transport) as client, live.client() as observer:
        submitting = asyncio.create_task(
            asyncio.to_thread(client.submit, "slow", {"gate": str(gate)}, wait=30)
        )

        async def running() -> list[Job] | None:
            jobs = await asyncio.to_thread(lambda: list(observer.jobs(process="slow")))
            return jobs if jobs and jobs[0].status is JobStatus.RUNNING else None

        (accepted,) = await eventually(running, what="the job to run")
        live.kill()  # the POST is still waiting for its answer
        await live.start()
        gate.touch()  # the retry waits for the job's end, as the first request did
        job = await asyncio.wait_for(submitting, timeout=30)
        assert job.id == accepted.id
        assert job.status is JobStatus.SUCCESSFUL
        assert [j.id for j in await asyncio.to_thread(lambda: list(observer.jobs()))] == [job.id]
    posts = transport.record.matching("POST", "/execution")
    assert len(posts) >= 2
    assert posts[0].outcome == "RemoteProtocolError"
    assert posts[-1].outcome == "200"  # the replay
    assert len({p.headers["idempotency-key"] for p in posts}) == 1


bounded = Worker("bounded", version="1.0.0")  # its queue bound is the catalogue's


@bounded.handler
async def bounded_handler(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, Any]:
    return inputs


async def test_a_refused_submit_is_retried_until_the_queue_has_room(
    gateway: Gateway, run_worker: RunWorker
) -> None:
    """The service's queue holds one task: the client's submit is refused (429 queue-full,
    its attempt recorded as failed/publish_failed), retried with its one key, and accepted
    once a worker drains the queue. Exactly one job of that submit is queued."""
    async with in_process(gateway, retry=NO_RETRY) as filler:
        fillers: list[Job] = []
        for n in range(10):  # until the queue is full
            try:
                fillers.append(await filler.submit("bounded", {"filler": n}))
            except QueueFull:  # 429 queue-full
                break
        assert 1 <= len(fillers) < 10

    transport = AsyncRecordingTransport(gateway.transport)
    async with in_process(gateway, transport=transport) as client:
        submitting = asyncio.create_task(client.submit("bounded", {"mine": True}))
        posts = transport.record.matching
        await until(lambda: any(p.outcome == "429" for p in posts("POST", "")), what="a 429")
        run_worker(bounded)  # the queue drains; a retry gets in
        job = await asyncio.wait_for(submitting, timeout=30)
        assert (await finished(client, job)).status is JobStatus.SUCCESSFUL
        assert await client.results(job) == {"mine": True}
        everything = [j async for j in client.jobs(process="bounded")]

    attempts = posts("POST", "/execution")
    refusals = [p for p in attempts if p.outcome == "429"]
    assert refusals
    assert attempts[-1].outcome == "201"
    assert len({p.headers["idempotency-key"] for p in attempts}) == 1
    # Every refused attempt left a failed record (the filler's too); one job was queued.
    queued = {j.id for j in everything if j.reason != "publish_failed"}
    assert queued == {j.id for j in fillers} | {job.id}
    assert len([j for j in everything if j.reason == "publish_failed"]) == len(refusals) + 1


async def test_each_submit_has_its_own_key(gateway: Gateway) -> None:
    transport = AsyncRecordingTransport(gateway.transport)
    async with in_process(gateway, transport=transport) as client:
        first = await client.submit("echo", {"text": "same"})
        second = await client.submit("echo", {"text": "same"})
        mine = await client.submit("echo", {"text": "same"}, idempotency_key="k-1")
        again = await client.submit("echo", {"text": "same"}, idempotency_key="k-1")
    assert len({first.id, second.id, mine.id}) == 3
    assert again.id == mine.id
    keys = [s.headers["idempotency-key"] for s in transport.record.sent]
    assert len(set(keys[:2])) == 2
    assert [str(uuid.UUID(k)) for k in keys[:2]] == keys[:2]
    assert keys[2:] == ["k-1", "k-1"]


async def test_jobs_follow_the_next_links(gateway: Gateway) -> None:
    transport = AsyncRecordingTransport(gateway.transport)
    async with (
        in_process(gateway, transport=transport) as client,
        in_process(gateway, "bob") as bob,
    ):
        echoes = [await client.submit("echo", {"text": str(n)}) for n in range(5)]
        other = await client.submit("slow", {})
        await bob.submit("echo", {"text": "bob's"})

        listed = [j.id async for j in client.jobs(page_size=2)]
        assert listed == [other.id] + [j.id for j in reversed(echoes)]  # newest first
        pages = transport.record.matching("GET", "/jobs")
        assert len(pages) == 4  # 2 + 2 + 2 + an empty last page
        assert [j.id async for j in client.jobs(process="echo", page_size=3)] == [
            j.id for j in reversed(echoes)
        ]
        accepted = [j async for j in client.jobs(status=JobStatus.ACCEPTED, process="slow")]
        assert [j.id for j in accepted] == [other.id]
        assert [j async for j in client.jobs(status=["successful", "failed"])] == []


async def test_problems_become_typed_errors(gateway: Gateway, run_worker: RunWorker) -> None:
    run_worker(echo)
    async with in_process(gateway) as client:
        with pytest.raises(UnknownJob) as unknown:
            await client.status(uuid.uuid4())
        assert (unknown.value.status, unknown.value.code) == (404, "no-such-job")
        with pytest.raises(UnknownProcess):
            await client.submit("no-such-service", {})
        with pytest.raises(NotFound):  # quoted: one path segment, no other route reached
            await client.submit("../jobs", {})
        with pytest.raises(BadRequest):
            await client.status("not-a-uuid")
        with pytest.raises(InvalidInput) as invalid:
            await client.submit("echo", {"delay": "soon", "text": "x" * 101})
        assert invalid.value.status == 422
        assert sorted(e.path for e in invalid.value.errors) == ["/inputs/delay", "/inputs/text"]

        failed = await finished(client, await client.submit("echo", {"fail": "boom"}))
        assert (failed.status, failed.reason) == (JobStatus.FAILED, "handler_error")
        with pytest.raises(JobFailed) as job_failed:
            await client.results(failed)
        assert job_failed.value.job_error is not None
        assert (job_failed.value.job_error.code, job_failed.value.job_error.message) == (
            "echo_failure",
            "boom",
        )

        queued = await client.submit("slow", {})
        with pytest.raises(ResultNotReady):
            await client.results(queued)
        dismissed = await client.dismiss(queued)
        with pytest.raises(JobDismissed):
            await client.results(dismissed)
        await client.submit("echo", {"text": "a"}, idempotency_key="key-1")
        with pytest.raises(IdempotencyConflict):
            await client.submit("echo", {"text": "b"}, idempotency_key="key-1")

    for token in ("", "not.a.token"):
        anonymous = AsyncClient(
            "http://gw.test", token or None, retry=NO_RETRY, transport=gateway.transport
        )
        async with anonymous:
            with pytest.raises(Unauthorized) as unauthorized:
                [j async for j in anonymous.jobs()]
        assert unauthorized.value.code == "unauthorized"
        response = unauthorized.value.response
        assert response is not None
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_wait_ends_dismissed_or_at_its_timeout(
    live: LiveGateway, run_worker: RunWorker, tmp_path: Path
) -> None:
    run_worker(slow)
    async with live.async_client() as client:
        job = await client.submit("slow", {"gate": str(tmp_path / "never")})
        waiting = asyncio.create_task(client.wait(job, 30))
        await eventually(lambda: _running(client, job), what="the job to run")
        dismissed = await client.dismiss(job)
        assert (dismissed.status, dismissed.reason) == (JobStatus.DISMISSED, "cancelled")
        assert (await waiting).status is JobStatus.DISMISSED

        # No worker for echo here: it stays accepted, and wait() gives up on time.
        queued = await client.submit("echo", {})
        started = time.monotonic()
        with pytest.raises(WaitTimeout) as timeout:
            await client.wait(queued, 1.5)
        elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 5
    assert isinstance(timeout.value.job, Job)
    assert timeout.value.job.status is JobStatus.ACCEPTED


async def _running(client: AsyncClient, job: Job) -> bool:
    return (await client.status(job)).status is JobStatus.RUNNING


def test_an_unreachable_gateway_is_reported_after_the_retries() -> None:
    transport = RecordingTransport()
    policy = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.02)
    with (
        Client(f"http://127.0.0.1:{free_port()}", "t", retry=policy, transport=transport) as c,
        pytest.raises(GatewayUnreachable),
    ):
        c.submit("echo", {})
    assert [s.outcome for s in transport.record.sent] == ["ConnectError"] * 3


async def test_a_subscriber_goes_with_the_submit_and_its_refusal_is_typed(
    gateway: Gateway,
) -> None:
    """The client sends ``subscriber`` as the execute body's member; a gateway with no
    webhook secret refuses it with a problem the client raises as ``BadRequest``, and no job
    is recorded."""
    hooks = {"successUri": "https://hooks.example.org/done"}
    bodies: list[Any] = []

    class Bodies(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST":
                bodies.append(json.loads(await request.aread()))
            return await gateway.transport.handle_async_request(request)

    async with in_process(gateway, transport=Bodies()) as client:
        with pytest.raises(BadRequest):
            await client.submit("echo", {"text": "x"}, subscriber=hooks)
        assert [job async for job in client.jobs()] == []
    assert bodies == [{"inputs": {"text": "x"}, "subscriber": hooks}]
