"""Chaos: jobs keep flowing while a worker is SIGKILLed, every broker connection of the gateway
and the workers is closed and the gateway restarts. Every 201-accepted job must reach exactly
one terminal state, with the right result, and nothing may be lost."""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.store import TERMINAL, JobStatus, JobStore
from tests.conftest import Gateway, GatewayFactory
from tests.support import eventually
from worker_sdk.wire import Topology

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(180)]

JOBS = 800
SUBMITTERS = 12


CONNECTION_NAME = re.compile(r'\{"connection_name","([^"]*)"\}')


async def _rabbitmqctl(*args: str) -> str:
    rabbitmqctl = shutil.which("rabbitmqctl")
    assert rabbitmqctl, "the chaos tests need rabbitmqctl"
    process = await asyncio.create_subprocess_exec(
        rabbitmqctl,
        "-q",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err
    return out.decode()


async def close_broker_connections(namespace: str) -> list[str]:
    """Close every broker connection of the namespace's gateways and workers (each names its
    connection ``<namespace>/...``), and only those: tests running beside this one keep
    theirs. The names of the connections closed."""
    listing = await _rabbitmqctl(
        "list_connections", "--no-table-headers", "pid", "client_properties"
    )
    ours: dict[str, str] = {}
    for line in listing.splitlines():
        pid, _, properties = line.partition("\t")
        name = CONNECTION_NAME.search(properties)
        if name is not None and name.group(1).startswith(f"{namespace}/"):
            ours[pid] = name.group(1)
    # At once, as close_all_connections would: no connection gets a head start to recover.
    await asyncio.gather(*(_rabbitmqctl("close_connection", pid, "chaos test") for pid in ours))
    return list(ours.values())


async def _consumed(namespace: str) -> bool:
    """Whether a worker consumes the chaos queue (it has a broker connection to lose)."""
    listing = await _rabbitmqctl("list_queues", "--no-table-headers", "name", "consumers")
    queue = Topology(namespace).task_queue("chaos")
    return any(
        line.split("\t")[0] == queue and int(line.split("\t")[1]) > 0
        for line in listing.splitlines()
        if "\t" in line
    )


async def test_every_accepted_job_ends_exactly_once_through_chaos(
    gateway_factory: GatewayFactory,
    spawn_worker: Callable[..., subprocess.Popen[bytes]],
    namespace: str,
) -> None:
    current: dict[str, Gateway] = {"gateway": await gateway_factory(broker_reconnect_after=2.0)}
    store_url = current["gateway"].runtime.settings.store_url
    workers = [spawn_worker("tests.workers:chaos", concurrency=8) for _ in range(2)]
    accepted: dict[str, int] = {}
    refused: list[str] = []
    next_n = iter(range(JOBS))
    rng = random.Random(7)
    chaos_log: list[str] = []
    progress = asyncio.Event()

    taken = [0]

    async def submitter() -> None:
        for n in next_n:
            taken[0] += 1
            for _ in range(100):  # a client retries what the gateway refused
                await progress.wait()
                try:
                    response = await current["gateway"].client.post(
                        "/processes/chaos/execution",
                        json={"inputs": {"n": n, "work": rng.uniform(0.005, 0.05)}},
                    )
                except (httpx.HTTPError, RuntimeError) as exc:  # the gateway is restarting
                    refused.append(f"{n}: {exc!r}")
                else:
                    if response.status_code == 201:
                        accepted[response.json()["jobID"]] = n
                        break
                    refused.append(f"{n}: {response.status_code}")
                await asyncio.sleep(0.1)  # the client's back-off before its retry

    async def chaos() -> None:
        async def after(count: int) -> None:
            await eventually(
                lambda: _true(taken[0] >= count), within=60, what=f"{count} jobs submitted"
            )

        await after(JOBS * 15 // 100)
        victim = workers[0]
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        chaos_log.append(f"SIGKILLed worker {victim.pid} at job {taken[0]}")
        workers[0] = spawn_worker("tests.workers:chaos", concurrency=8)

        await after(JOBS * 30 // 100)
        # Submitting outruns a worker's start: wait for one to hold a connection to lose.
        await eventually(lambda: _consumed(namespace), within=60, what="a worker consuming")
        closed = await close_broker_connections(namespace)
        # The gateway's and both workers' (which may be reconnecting from the kill above).
        assert sum("/gateway@" in name for name in closed) == 1, closed
        assert sum("/chaos@" in name for name in closed) >= 1, closed
        chaos_log.append(f"closed {len(closed)} broker connections at job {taken[0]}")

        await after(JOBS * 65 // 100)
        progress.clear()
        old = current["gateway"]
        await old.stop()
        current["gateway"] = await gateway_factory(store_url=store_url, broker_reconnect_after=2.0)
        progress.set()
        chaos_log.append(f"restarted the gateway at job {taken[0]}")

    progress.set()
    started = time.monotonic()
    await asyncio.gather(chaos(), *(submitter() for _ in range(SUBMITTERS)))

    store = current["gateway"].runtime.store

    async def all_finished() -> bool:
        for job_id in accepted:
            record = await store.get(uuid.UUID(job_id))
            if record is None or record.status not in TERMINAL:
                return False
        return True

    await eventually(all_finished, within=90, what="every accepted job to finish")
    elapsed = time.monotonic() - started

    outcomes, wrong = await _check_history(store, accepted)
    report: dict[str, Any] = {
        "submitted": JOBS,
        "accepted (201)": len(accepted),
        "refused attempts (503 or restart), retried": len(refused),
        "terminal states": outcomes,
        "lost": len(accepted) - sum(outcomes.values()),
        "seconds": round(elapsed, 1),
        "chaos": chaos_log,
    }
    print(report)  # noqa: T201 - the figures of the run, shown with -s
    assert len(chaos_log) == 3
    assert sorted(accepted.values()) == list(range(JOBS)), report  # every job got in
    assert wrong == []
    assert outcomes == {JobStatus.SUCCESSFUL: len(accepted)}, report


async def _check_history(
    store: JobStore, accepted: dict[str, int]
) -> tuple[dict[str, int], list[str]]:
    """Each accepted job's terminal state, and every successful job with a wrong result."""
    outcomes: dict[str, int] = {}
    wrong: list[str] = []
    for job_id, n in accepted.items():
        record = await store.get(uuid.UUID(job_id))
        assert record is not None, f"accepted job {job_id} was lost"
        outcomes[record.status] = outcomes.get(record.status, 0) + 1
        if record.status is JobStatus.SUCCESSFUL and record.result != {"n": n * 2}:
            wrong.append(f"{job_id}: {record.result!r} for n={n}")
    return outcomes, wrong


async def _true(value: bool) -> bool:
    return value
