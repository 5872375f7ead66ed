"""Our no-op rows, measured as the baseline's: submits, latency, status reads, sustained load
with the CPU per job of each group of processes."""

from __future__ import annotations

import asyncio

from bench import drain, floor
from bench.broker import purge
from bench.load import hammer, wait_latency
from bench.procfs import pids_named
from bench.stack import TERMINAL, Gateway, count_jobs, last_rowid
from bench.support import Phase, Sizes, outcome, percentile, step
from bench.sustained import flood_until_done

# Worker processes and the concurrency (= prefetch) of each, for the no-op rows.
ECHO_WORKERS = 2
ECHO_CONCURRENCY = 32


def measure(sizes: Sizes, gateway: Gateway) -> Phase:
    """The no-op rows against a started gateway; echo workers run only where needed."""
    phase = Phase()
    step("ours: submits/s, no worker")
    submit_url = gateway.submit_url("echo")
    rate, bad, tool = hammer(submit_url, "POST", sizes.seconds, sizes.connections)
    phase.values["submit"] = rate
    phase.notes["submit"] = outcome(tool, bad)
    asyncio.run(purge([gateway.task_queue("echo")]))
    with gateway.workers("examples.echo:worker", ECHO_WORKERS, ECHO_CONCURRENCY) as workers:
        step("ours: latency and its floor, status reads/s, sustained load")
        least = floor.measure(sizes.latency_samples)
        phase.values["floor"] = least.total
        phase.notes["floor"] = least.note()
        samples, job = asyncio.run(wait_latency(submit_url, sizes.latency_samples))
        phase.values["p50"] = percentile(samples, 0.5)
        phase.notes["p50"] = f"{phase.values['p50'] / least.total:.2f} × the floor"
        phase.values["p99"] = percentile(samples, 0.99)
        rate, bad, tool = hammer(f"{gateway.base}/jobs/{job}", "GET", sizes.seconds, 32)
        phase.values["status"] = rate
        phase.notes["status"] = outcome(tool, bad)
        store = gateway.store()
        first = last_rowid(store)
        run = asyncio.run(
            flood_until_done(
                submit_url,
                sizes.sustained_jobs,
                lambda: count_jobs(store, first, f"status IN {TERMINAL}"),
                {
                    "gateway": [gateway.pid],
                    "workers": [w.pid for w in workers],
                    "broker": pids_named("beam.smp"),
                },
            )
        )
        failed = count_jobs(store, first, "status != 'successful'")
        store.close()
    phase.values["sustained"] = run.rate
    phase.notes["sustained"] = outcome(run.tool, failed, run.jobs)
    if run.changed:
        phase.notes["cpu"] = f"{', '.join(run.changed)} restarted processes during the run"
    for group in run.cpu:
        phase.values[f"cpu-{group}"] = run.cpu_ms_per_job(group)
    drained = drain.measure(sizes, gateway, ECHO_WORKERS, ECHO_CONCURRENCY)
    phase.values.update(drained.values)
    phase.notes.update(drained.notes)
    return phase
