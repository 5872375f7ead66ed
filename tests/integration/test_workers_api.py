"""The workers API: live workers from their heartbeats, gone at once on a clean stop and
after the heartbeat silence when killed; an accepted job says when no worker is live."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Gateway, GatewayFactory
from tests.support import eventually, submit, wait_status
from worker_sdk import JobContext, Worker

pytestmark = pytest.mark.integration

RunWorker = Callable[..., asyncio.Task[None]]
SpawnWorker = Callable[..., subprocess.Popen[bytes]]

gated = Worker("slow", version="1.0.0", heartbeat_interval=0.1, shutdown_grace=5)


@gated.handler
async def gated_handler(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while not Path(inputs["gate"]).exists():  # noqa: ASYNC110, ASYNC240 - the test's gate file
            await asyncio.sleep(0.01)
    return {}


async def _workers(gateway: Gateway, path: str = "/workers") -> list[dict[str, Any]]:
    response = await gateway.client.get(path)
    assert response.status_code == 200, response.text
    workers: list[dict[str, Any]] = response.json()["workers"]
    return workers


async def test_a_live_worker_shows_what_it_runs_and_leaves_at_once_when_stopped(
    gateway_factory: GatewayFactory, run_worker: RunWorker, tmp_path: Path
) -> None:
    gateway = await gateway_factory(heartbeat_silence=300.0)  # only a goodbye removes it
    gate = tmp_path / "gate"
    task = run_worker(gated, concurrency=3)
    job = (await submit(gateway.client, "slow", {"gate": str(gate)})).json()
    await wait_status(gateway.client, job["jobID"], "running")

    async def running_it() -> list[dict[str, Any]] | None:
        listed = await _workers(gateway)
        return listed if listed and listed[0]["running"] == [job["jobID"]] else None

    [worker] = await eventually(running_it, what="the worker running the job")
    assert (worker["service"], worker["version"], worker["concurrency"]) == ("slow", "1.0.0", 3)
    assert worker["host"]
    assert worker["id"].startswith("slow@")
    assert worker["upSince"] <= worker["lastSeen"]
    per_process = await _workers(gateway, "/processes/slow/workers")
    assert [w["id"] for w in per_process] == [worker["id"]]
    assert await _workers(gateway, "/workers?processID=echo") == []
    assert await _workers(gateway, "/processes/echo/workers") == []
    gate.touch()
    await wait_status(gateway.client, job["jobID"], "successful")
    gated.stop()
    await asyncio.wait_for(task, timeout=30)

    async def gone() -> bool:
        return await _workers(gateway) == []

    await eventually(gone, within=10, what="the stopped worker's goodbye")


async def test_a_worker_names_only_the_running_jobs_the_caller_may_see(
    gateway_factory: GatewayFactory, run_worker: RunWorker, tmp_path: Path
) -> None:
    gateway = await gateway_factory(heartbeat_silence=300.0)
    gate = tmp_path / "gate"
    task = run_worker(gated, concurrency=3)
    job = (await submit(gateway.client, "slow", {"gate": str(gate)})).json()["jobID"]

    async def running_it() -> list[dict[str, Any]] | None:
        listed = await _workers(gateway)
        return listed if listed and listed[0]["running"] == [job] else None

    [own] = await eventually(running_it, what="the worker running alice's job")
    assert own["busy"] == 1
    async with gateway.as_user("bob") as bob, gateway.as_user("root", "sg:admin") as admin:
        for path in ("/workers", "/processes/slow/workers"):
            [others] = (await bob.get(path)).json()["workers"]
            assert (others["busy"], others["running"]) == (1, []), path
            assert job not in (await bob.get(path)).text
            [everyone] = (await admin.get(path)).json()["workers"]
            assert (everyone["busy"], everyone["running"]) == (1, [job]), path
        mine = (await submit(bob, "slow", {"gate": str(gate)})).json()["jobID"]

        async def both_running() -> dict[str, Any] | None:
            [worker] = (await bob.get("/workers")).json()["workers"]
            return worker if worker["busy"] == 2 else None

        worker = await eventually(both_running, what="bob's job running beside alice's")
        assert worker["running"] == [mine]
    gate.touch()
    await wait_status(gateway.client, job, "successful")
    gated.stop()
    await asyncio.wait_for(task, timeout=30)


async def test_a_killed_worker_leaves_after_the_heartbeat_silence(
    gateway_factory: GatewayFactory, spawn_worker: SpawnWorker
) -> None:
    gateway = await gateway_factory(heartbeat_silence=1.5)
    worker = spawn_worker("tests.workers:spin")  # heartbeats every 0.1 s

    async def listed() -> list[dict[str, Any]] | None:
        return await _workers(gateway, "/processes/spin/workers") or None

    await eventually(listed, within=30, what="the spawned worker")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    store = gateway.runtime.store
    [state] = await store.live_workers(since=gateway.runtime.fleet.since())
    assert state.service == "spin"  # no goodbye: still counted until the silence passes

    async def gone() -> bool:
        return await _workers(gateway) == []

    await eventually(gone, within=10, what="the silent worker to be dropped")
    silent = await store.last_heartbeat(state.id)
    assert silent is not None
    assert gateway.runtime.fleet.since() > silent


async def test_an_accepted_job_says_when_no_worker_of_its_process_is_live(
    gateway: Gateway, run_worker: RunWorker, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    first = (await submit(gateway.client, "slow", {"gate": str(gate)})).json()
    status = (await gateway.client.get(f"/jobs/{first['jobID']}")).json()
    assert status["status"] == "accepted"
    assert status["message"] == "no live worker of slow: the job waits until one starts"
    run_worker(gated, concurrency=1)
    await wait_status(gateway.client, first["jobID"], "running")

    async def listed() -> list[dict[str, Any]] | None:
        return await _workers(gateway) or None

    await eventually(listed, what="the worker's heartbeat")
    second = (await submit(gateway.client, "slow", {"gate": str(gate)})).json()
    status = (await gateway.client.get(f"/jobs/{second['jobID']}")).json()
    assert status["status"] == "accepted"
    assert "message" not in status  # a worker is live: it is just busy
    gate.touch()
    await wait_status(gateway.client, second["jobID"], "successful")


async def test_the_workers_api_needs_a_token_and_a_known_process(gateway: Gateway) -> None:
    async with gateway.as_user("bob") as bob:
        assert (await bob.get("/workers")).status_code == 200
    anonymous = await gateway.client.get("/workers", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    unknown = await gateway.client.get("/processes/nope/workers")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "no-such-process")
    unknown = await gateway.client.get("/workers?processID=nope")
    assert unknown.status_code == 404
