"""Process-isolated handlers: no-op jobs/s and the isolation's overhead, and a CPU-bound
service scaled from one child process to two, within one worker (``--concurrency 2``) and
across worker processes (``bench/workers.py``)."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from datetime import datetime

from bench.broker import purge
from bench.load import submit_count
from bench.stack import TERMINAL, Gateway, count_jobs, last_rowid
from bench.support import Phase, Sizes, outcome, step

CPU_MS = 100
# A window lasts until this many jobs have finished, however slow they are (within a minute).
MIN_JOBS = 5


@dataclass(frozen=True)
class Window:
    rate: float  # jobs/s once warm: jobs finished after the first, over the time since
    overheads: list[float]  # ms, started → finished of each successful job but the first
    done: int
    failed: int


def run_window(
    gateway: Gateway,
    service: str,
    body: bytes,
    *,
    jobs: int,
    worker: str,
    processes: int,
    concurrency: int,
    window: float,
) -> Window:
    """Queue ``jobs`` jobs, start the workers and, once the first job has finished (the
    workers are warm), let them run for ``window`` seconds or until all are done (and at least
    ``MIN_JOBS``, within a minute more); the rest of the queue is then dropped. The rate counts
    the jobs finished after the first one over the time since it finished."""
    store = gateway.store()
    first = last_rowid(store)
    asyncio.run(submit_count(gateway.submit_url(service), jobs, body))
    with gateway.workers(worker, processes, concurrency):
        deadline = time.monotonic() + 120
        while not count_jobs(store, first, f"status IN {TERMINAL}"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {service} job finished within 120 s")
            time.sleep(0.05)
        end = time.monotonic() + window
        while True:
            done = count_jobs(store, first, f"status IN {TERMINAL}")
            now = time.monotonic()
            if done >= jobs or (now >= end and done > MIN_JOBS) or now >= end + 60:
                break
            time.sleep(0.05)
    asyncio.run(purge([gateway.task_queue(service)]))
    rows = store.execute(
        "SELECT started, finished FROM jobs WHERE rowid > ? AND status = 'successful' "
        "ORDER BY finished",
        (first,),
    ).fetchall()
    failed = count_jobs(store, first, "status IN ('failed', 'dismissed')")
    store.close()
    # A job's start can be missing: its started event applied after its end (by another
    # gateway process) is dropped. Such a job counts for the rate, not for the overhead.
    spans = [(datetime.fromisoformat(s) if s else None, datetime.fromisoformat(f)) for s, f in rows]
    if len(spans) < 3:
        raise RuntimeError(f"only {len(spans)} {service} jobs succeeded ({failed} failed)")
    warm = spans[1:]
    elapsed = (warm[-1][1] - spans[0][1]).total_seconds()
    return Window(
        rate=len(warm) / elapsed,
        overheads=[(f - s).total_seconds() * 1000 for s, f in warm if s is not None],
        done=len(spans),
        failed=failed,
    )


def measure(sizes: Sizes, gateway: Gateway) -> Phase:
    phase = Phase()
    for concurrency in (1, 2):
        step(f"ours: process-isolated no-op, --concurrency {concurrency}")
        run = run_window(
            gateway,
            "bench-noop-process",
            b'{"inputs": {}}',
            jobs=sizes.noop_process_jobs,
            worker="bench.workers:noop",
            processes=1,
            concurrency=concurrency,
            window=sizes.window,
        )
        phase.values[f"process-rate-{concurrency}"] = run.rate
        phase.values[f"process-overhead-{concurrency}"] = statistics.median(run.overheads)
        phase.notes[f"process-{concurrency}"] = outcome("wrk", run.failed, run.done)
    body = f'{{"inputs": {{"cpu_ms": {CPU_MS}}}}}'.encode()
    # (worker processes, concurrency of each): the first is the reference of both scale-outs.
    for processes, concurrency in ((1, 1), (1, 2), (2, 1)):
        step(f"ours: {CPU_MS} ms CPU jobs, {processes} worker(s) --concurrency {concurrency}")
        run = run_window(
            gateway,
            "bench-cpu",
            body,
            jobs=sizes.cpu_jobs,
            worker="bench.workers:cpu",
            processes=processes,
            concurrency=concurrency,
            window=sizes.window,
        )
        name = f"{processes}" if concurrency == 1 else f"{processes}x{concurrency}"
        phase.values[f"cpu-rate-{name}"] = run.rate
        phase.notes[f"cpu-{name}"] = outcome("wrk", run.failed, run.done)
    return phase
