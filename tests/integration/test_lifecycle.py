"""Dismiss (cancel and purge) and time limits, against the real broker."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from examples.echo import worker as echo_worker
from tests import workers
from tests.conftest import Gateway
from tests.integration.test_pipeline import observe_events
from tests.support import eventually, job_state, submit, wait_status
from worker_sdk.wire import Cancelled, Started, Succeeded

pytestmark = pytest.mark.integration

RunWorker = Callable[..., asyncio.Task[None]]


async def test_dismissing_a_queued_job_ends_it_at_once(
    gateway: Gateway, namespace: str, run_worker: RunWorker, tmp_path: Path
) -> None:
    client = gateway.client
    job = (await submit(client, "slow", {"gate": str(tmp_path / "never")})).json()
    started = time.perf_counter()
    response = await client.delete(f"/jobs/{job['jobID']}")
    elapsed = time.perf_counter() - started
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["reason"]) == ("dismissed", "cancelled")
    assert elapsed < 1.0
    print(f"queued job: DELETE → dismissed in {elapsed * 1000:.1f} ms")  # noqa: T201
    # A worker that starts after the broadcast takes the task, reports the run, and is told
    # to stop: the job stays dismissed and never succeeds.
    job_id = uuid.UUID(job["jobID"])
    async with observe_events(namespace) as events:
        run_worker(workers.slow)

        async def stopped() -> bool:
            return any(isinstance(e, Cancelled) and e.job_id == job_id for e in events)

        await eventually(stopped, what="the late worker to stop the dismissed job")
    assert not any(isinstance(e, Succeeded) and e.job_id == job_id for e in events)
    assert (await job_state(client, job["jobID"]))["status"] == "dismissed"
    assert await gateway.runtime.broker.queue_depth(f"{namespace}.task.slow") == 0


async def test_a_live_worker_skips_a_job_cancelled_while_queued(
    gateway: Gateway, namespace: str, run_worker: RunWorker, tmp_path: Path
) -> None:
    client = gateway.client
    gate = tmp_path / "gate"
    async with observe_events(namespace) as events:
        run_worker(workers.slow, concurrency=1)
        busy = (await submit(client, "slow", {"gate": str(gate)})).json()
        await wait_status(client, busy["jobID"], "running")
        queued = (await submit(client, "slow", {})).json()  # waits behind the busy one
        assert (await client.delete(f"/jobs/{queued['jobID']}")).status_code == 200
        gate.touch()
        await wait_status(client, busy["jobID"], "successful")
        queued_id = uuid.UUID(queued["jobID"])

        async def skipped() -> bool:
            return any(isinstance(e, Cancelled) and e.job_id == queued_id for e in events)

        await eventually(skipped, what="the worker to skip the cancelled job")
    assert not any(isinstance(e, Started) and e.job_id == queued_id for e in events)


async def process_gone(pidfile: Path) -> None:
    """Wait until the process whose pid the handler wrote into ``pidfile`` no longer exists
    (killed and reaped: not even a zombie is left)."""
    pid = int(await eventually(lambda: _read(pidfile), what=f"{pidfile.name} to be written"))

    async def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    await eventually(gone, within=5, what=f"the job's process {pid} to be gone")


async def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None  # noqa: ASYNC240 - a tiny local file


async def test_dismissing_a_running_job_kills_only_its_process(
    gateway: Gateway, namespace: str, run_worker: RunWorker, tmp_path: Path
) -> None:
    client = gateway.client
    async with observe_events(namespace) as events:
        run_worker(workers.crunch, concurrency=2)
        doomed = (await submit(client, "crunch", {"gate": str(tmp_path / "never")})).json()
        keeper_gate = tmp_path / "keeper"
        keeper = (await submit(client, "crunch", {"gate": str(keeper_gate)})).json()
        for job in (doomed, keeper):
            await wait_status(client, job["jobID"], "running")
        started = time.perf_counter()
        response = await client.delete(f"/jobs/{doomed['jobID']}")
        dismissed = time.perf_counter() - started
        assert response.json()["status"] == "dismissed"
        doomed_id = uuid.UUID(doomed["jobID"])

        async def stopped() -> bool:
            return any(isinstance(e, Cancelled) and e.job_id == doomed_id for e in events)

        # The handler waits on a gate that never opens and ignores ctx.cancelled: only the
        # kill after cancel_grace (0.5 s) can stop it.
        await eventually(stopped, what="the worker to kill the cancelled job's process")
        killed = time.perf_counter() - started
        print(  # noqa: T201
            f"running job: DELETE → dismissed in {dismissed * 1000:.1f} ms, "
            f"its process killed after {killed * 1000:.0f} ms"
        )
        await process_gone(tmp_path / "never.pid")
        assert (await job_state(client, keeper["jobID"]))["status"] == "running"
        keeper_gate.touch()
        await wait_status(client, keeper["jobID"], "successful")
    assert (await job_state(client, doomed["jobID"]))["status"] == "dismissed"


async def test_an_async_handler_is_cancelled_cooperatively(
    gateway: Gateway, namespace: str, run_worker: RunWorker, tmp_path: Path
) -> None:
    workers_task = run_worker(workers.slow)
    job = (await submit(gateway.client, "slow", {"gate": str(tmp_path / "never")})).json()
    await wait_status(gateway.client, job["jobID"], "running")
    async with observe_events(namespace) as events:
        await gateway.client.delete(f"/jobs/{job['jobID']}")
        job_id = uuid.UUID(job["jobID"])

        async def stopped() -> bool:
            return any(isinstance(e, Cancelled) and e.job_id == job_id for e in events)

        await eventually(stopped, within=5, what="CancelledError to stop the async handler")
    assert not workers_task.done()


async def test_dismissing_a_finished_job_purges_its_result(
    gateway: Gateway, run_worker: RunWorker
) -> None:
    client = gateway.client
    run_worker(echo_worker)
    job = (await submit(client, "echo", {"text": "secret"})).json()
    await wait_status(client, job["jobID"], "successful")
    first = (await client.delete(f"/jobs/{job['jobID']}")).json()
    assert first["status"] == "dismissed"  # as OGC's dismiss class asks
    assert first["outcome"] == "successful"
    assert first["purged"]
    results = await client.get(f"/jobs/{job['jobID']}/results")
    assert results.status_code == 410
    assert results.json()["code"] == "result-purged"
    again = (await client.delete(f"/jobs/{job['jobID']}")).json()
    assert again["purged"] == first["purged"]
    record = await gateway.runtime.store.get(uuid.UUID(job["jobID"]))
    assert record is not None
    assert record.result is None


async def test_dismissing_a_cancelled_job_again_changes_nothing(
    gateway: Gateway, tmp_path: Path
) -> None:
    """A cancelled job has no result to purge: a second DELETE answers it as it stands, and
    its results still answer that it was dismissed."""
    client = gateway.client
    job = (await submit(client, "slow", {"gate": str(tmp_path / "never")})).json()
    first = (await client.delete(f"/jobs/{job['jobID']}")).json()
    assert (first["status"], first["reason"]) == ("dismissed", "cancelled")
    before = await client.get(f"/jobs/{job['jobID']}/results")
    again = await client.delete(f"/jobs/{job['jobID']}")
    assert again.status_code == 200
    assert again.json() == first
    after = await client.get(f"/jobs/{job['jobID']}/results")
    assert (after.status_code, after.json()["code"]) == (
        before.status_code,
        before.json()["code"],
    )
    record = await gateway.runtime.store.get(uuid.UUID(job["jobID"]))
    assert record is not None
    assert record.purged is None


async def test_only_the_owner_dismisses(gateway: Gateway) -> None:
    job = (await submit(gateway.client, "echo", {})).json()
    async with gateway.as_user("bob") as bob:
        assert (await bob.delete(f"/jobs/{job['jobID']}")).status_code == 404
    assert (await job_state(gateway.client, job["jobID"]))["status"] == "accepted"
    assert (await gateway.client.delete(f"/jobs/{uuid.uuid4()}")).status_code == 404


async def test_a_runaway_job_is_stopped_at_its_time_limit(
    gateway: Gateway, run_worker: RunWorker, tmp_path: Path
) -> None:
    client = gateway.client
    run_worker(workers.limited)
    # "limited" is sync-capable (its time limit fits SG_MAX_WAIT): ask for a 201 at once.
    pidfile = tmp_path / "runaway.pid"
    job = (
        await submit(
            client, "limited", {"pidfile": str(pidfile)}, headers={"Prefer": "respond-async"}
        )
    ).json()
    state = await wait_status(client, job["jobID"], "failed", within=10)
    assert state["reason"] == "time_limit"
    await process_gone(pidfile)  # its child process killed, not left spinning
    problem = (await client.get(f"/jobs/{job['jobID']}/results")).json()
    assert problem["job_error"]["code"] == "time_limit"
    quick = (
        await submit(client, "limited", {"quick": True}, headers={"Prefer": "respond-async"})
    ).json()
    await wait_status(client, quick["jobID"], "successful")  # the worker is fine


async def test_a_job_over_its_memory_limit_fails_with_that_reason_and_the_worker_goes_on(
    gateway: Gateway, run_worker: RunWorker
) -> None:
    client = gateway.client
    running = run_worker(workers.hungry, concurrency=2)
    job = (await submit(client, "hungry", {"bytes": 512 * 1024 * 1024})).json()
    state = await wait_status(client, job["jobID"], "failed", within=30)
    assert state["reason"] == "memory_limit"
    problem = (await client.get(f"/jobs/{job['jobID']}/results")).json()
    assert problem["job_error"]["code"] == "memory_limit"
    assert "268,435,456 bytes" in problem["job_error"]["message"]
    small = (await submit(client, "hungry", {"bytes": 1024 * 1024})).json()
    await wait_status(client, small["jobID"], "successful")
    assert not running.done()  # the worker is healthy


async def test_retries_come_back_after_their_delay_until_success(
    gateway: Gateway, namespace: str, run_worker: RunWorker
) -> None:
    from worker_sdk.wire import Retrying

    async with observe_events(namespace) as events:
        run_worker(workers.flaky)
        job = (await submit(gateway.client, "flaky", {"succeed_on": 3})).json()
        state = await wait_status(gateway.client, job["jobID"], "successful", within=20)
    assert state["attempt"] == 3
    result = (await gateway.client.get(f"/jobs/{job['jobID']}/results")).json()
    assert result == {"attempt": 3}
    retries = [e for e in events if isinstance(e, Retrying)]
    assert [r.attempt for r in retries] == [2, 3]


async def test_retries_end_failed_when_attempts_run_out(
    gateway: Gateway, run_worker: RunWorker
) -> None:
    run_worker(workers.flaky)
    job = (await submit(gateway.client, "flaky", {"succeed_on": 9})).json()
    state = await wait_status(gateway.client, job["jobID"], "failed", within=20)
    assert state["attempt"] == 3
    problem = (await gateway.client.get(f"/jobs/{job['jobID']}/results")).json()
    assert problem["job_error"]["code"] == "retry"
    assert "attempt 3" in problem["job_error"]["message"]
