"""Run the Celery + Flask baseline and measure it as we measure ourselves."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import IO

from celery import Celery
from celery.backends.database import DatabaseBackend

from bench.baseline.tasks import make_celery
from bench.broker import delete_names, purge
from bench.load import hammer, record_latency, wait_latency, wrk_latency
from bench.procfs import pids_named
from bench.support import (
    AMQP_URL,
    SECRET,
    Phase,
    Sizes,
    free_port,
    outcome,
    percentile,
    processes,
    step,
    wait_ready,
)
from bench.sustained import flood_until_done


def prepare_results(celery: Celery, db: Path) -> None:
    """Create the result tables in ``db`` (``celery``'s backend) before four processes race
    to, in WAL mode as our store runs (WAL is a property of the file: every Celery and
    gunicorn process then uses it)."""
    backend = celery.backend
    if not isinstance(backend, DatabaseBackend):
        raise TypeError(f"the baseline's result backend is {type(backend).__name__}")
    backend.ResultSession().close()
    with sqlite3.connect(db) as results:
        results.execute("PRAGMA journal_mode=WAL")


def measure(sizes: Sizes, workdir: Path, log: IO[bytes]) -> Phase:
    """Submits/s, status reads/s, latency, sustained jobs/s and CPU per job of the baseline."""
    phase = Phase()
    queue = f"bench-celery-{uuid.uuid4().hex[:8]}"
    db = workdir / "celery-results.db"
    prepare_results(make_celery(AMQP_URL, queue, str(db)), db)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "BENCH_AMQP_URL": AMQP_URL,
        "BENCH_QUEUE": queue,
        "BENCH_RESULT_DB": str(db),
        "BENCH_JWT_SECRET": SECRET,
    }
    web = [
        *(sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}"),
        *("--log-level", "warning", "--no-control-socket", "bench.baseline.web:app"),
    ]
    celery = [
        *(sys.executable, "-m", "celery", "-A", "bench.baseline.tasks", "worker"),
        *("--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", queue),
    ]
    submit_url = f"{base}/processes/echo/execution"
    try:
        with processes([web], env, log) as (gunicorn,):
            wait_ready(f"{base}/readyz")
            step("Celery + Flask: submits/s, no worker")
            rate, bad, tool = hammer(submit_url, "POST", sizes.seconds, sizes.connections)
            phase.values["submit"] = rate
            phase.notes["submit"] = outcome(tool, bad)
            asyncio.run(purge([queue]))
            with processes([celery], env, log) as (worker,):
                step("Celery + Flask: latency, status reads/s, sustained load")
                samples, job = asyncio.run(wait_latency(submit_url, sizes.latency_samples))
                phase.values["p50"] = percentile(samples, 0.5)
                phase.values["p99"] = percentile(samples, 0.99)
                record_latency(phase, wrk_latency(submit_url, sizes.latency_seconds))
                rate, bad, tool = hammer(f"{base}/jobs/{job}", "GET", sizes.seconds, 32)
                phase.values["status"] = rate
                phase.notes["status"] = outcome(tool, bad)
                results = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                first = _count(results)
                run = asyncio.run(
                    flood_until_done(
                        submit_url,
                        sizes.sustained_jobs,
                        lambda: _count(results) - first,
                        {
                            "gateway": [gunicorn.pid],
                            "workers": [worker.pid],
                            "broker": pids_named("beam.smp"),
                        },
                    )
                )
                failed = _count(results, "status != 'SUCCESS'")
                results.close()
                phase.values["sustained"] = run.rate
                phase.notes["sustained"] = outcome(run.tool, failed, run.jobs)
                if run.changed:
                    restarted = ", ".join(run.changed)
                    phase.notes["cpu"] = f"{restarted} restarted processes during the run"
                for group in run.cpu:
                    phase.values[f"cpu-{group}"] = run.cpu_ms_per_job(group)
    finally:
        asyncio.run(delete_names([queue], [queue]))
    return phase


def _count(results: sqlite3.Connection, where: str = "1 = 1") -> int:
    sql = f"SELECT count(*) FROM celery_taskmeta WHERE {where}"
    return int(results.execute(sql).fetchone()[0])
