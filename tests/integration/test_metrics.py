"""GET /metrics: Prometheus text with the gateway's instruments and live queue gauges."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from examples.echo import worker as echo_worker
from tests import workers
from tests.conftest import Gateway
from tests.support import eventually, submit, wait_status

pytestmark = pytest.mark.integration


async def scrape(gateway: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await gateway.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_jobs_runs_queues_and_versions_are_measured(
    gateway: Gateway, run_worker: Callable[..., asyncio.Task[None]], tmp_path: Path
) -> None:
    run_worker(echo_worker)
    jobs = [(await submit(gateway.client, "echo", {"text": str(i)})).json() for i in range(2)]
    failing = (await submit(gateway.client, "echo", {"fail": "no"})).json()
    for job in jobs:
        await wait_status(gateway.client, job["jobID"], "successful")
    await wait_status(gateway.client, failing["jobID"], "failed")

    async def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        samples = await scrape(gateway)
        done = samples.get(
            (
                "sg_jobs_finished_total",
                (("reason", ""), ("service", "echo"), ("status", "successful")),
            )
        )
        return samples if done == 2 else None

    samples = await eventually(counted, what="the finished jobs to be counted")
    assert samples[("sg_jobs_submitted_total", (("service", "echo"),))] == 3
    failed = ("reason", "handler_error"), ("service", "echo"), ("status", "failed")
    assert samples[("sg_jobs_finished_total", failed)] == 1
    assert samples[("sg_job_run_seconds_count", (("service", "echo"),))] == 3
    assert samples[("sg_queue_consumers", (("service", "echo"),))] == 1
    assert samples[("sg_queue_messages", (("service", "echo"),))] == 0

    run_worker(workers.drifted)
    gate = tmp_path / "gate"
    slow = (await submit(gateway.client, "slow", {"gate": str(gate)})).json()
    await wait_status(gateway.client, slow["jobID"], "running")
    samples = await scrape(gateway)
    # Label values come from the catalogue only: the worker's version is not one.
    assert samples[("sg_worker_version_mismatch_total", (("service", "slow"),))] == 1
    assert samples[("sg_job_queue_wait_seconds_count", (("service", "slow"),))] == 1
    gate.touch()
    await wait_status(gateway.client, slow["jobID"], "successful")
