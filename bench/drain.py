"""A backlog drained: the no-op jobs queued while no worker runs, then the workers started;
the server CPU per job from their start until every job is terminal, and the rate. The
workers' start (imports, connecting, declaring) is stated apart: its CPU until both consume."""

from __future__ import annotations

import asyncio
import time

from bench.broker import wait_consumers
from bench.load import submit_count
from bench.procfs import cpu_seconds, pids_named
from bench.stack import TERMINAL, Gateway, count_jobs, last_rowid
from bench.support import BODY, Phase, Sizes, step

WITHIN = 300.0  # seconds the drain may take before the measure fails


def measure(sizes: Sizes, gateway: Gateway, workers: int, concurrency: int) -> Phase:
    """Queue ``sizes.sustained_jobs`` no-op jobs, then drain them with ``workers`` fresh
    worker processes of ``concurrency`` each."""
    step(f"ours: a backlog of {sizes.sustained_jobs:,} jobs drained")
    phase = Phase()
    total = sizes.sustained_jobs
    store = gateway.store()
    try:
        first = last_rowid(store)
        asyncio.run(submit_count(gateway.submit_url("echo"), total, BODY))
        with gateway.workers("examples.echo:worker", workers, concurrency) as started:
            groups = {
                "gateway": [gateway.pid],
                "workers": [w.pid for w in started],
                "broker": pids_named("beam.smp"),
            }
            before = cpu_seconds(groups)
            start = time.perf_counter()
            asyncio.run(wait_consumers(gateway.task_queue("echo"), workers, WITHIN))
            ready = cpu_seconds({"workers": groups["workers"]})["workers"]
            while count_jobs(store, first, f"status IN {TERMINAL}") < total:
                if time.perf_counter() - start > WITHIN:
                    raise RuntimeError(f"the backlog was not drained within {WITHIN:g} s")
                time.sleep(0.02)  # polling the store's count, the measure's clock
            seconds = time.perf_counter() - start
            after = cpu_seconds(groups)
        failed = count_jobs(store, first, "status != 'successful'")
    finally:
        store.close()
    cpu = {group: (after[group] - before[group]) * 1000 / total for group in groups}
    phase.values["drain-cpu"] = sum(cpu.values())
    phase.values["drain-rate"] = total / seconds
    start_ms = (ready - before["workers"]) * 1000 / total
    phase.notes["drain-cpu"] = ", ".join(
        f"{g} {ms:.2f}" + (f" (their start {start_ms:.2f})" if g == "workers" else "")
        for g, ms in cpu.items()
    )
    phase.notes["drain-rate"] = f"{total:,} jobs" + (f", {failed} not successful" if failed else "")
    return phase
