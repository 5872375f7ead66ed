"""Our no-op rows, measured as the baseline's: submits, latency, status reads, sustained load
with the CPU per job of each group of processes."""

from __future__ import annotations

import asyncio
import subprocess

from bench import drain, floor
from bench.broker import purge
from bench.load import hammer, record_latency, wait_latency, wrk_latency
from bench.procfs import pids_named
from bench.stack import TERMINAL, Gateway, count_jobs, last_rowid
from bench.support import Phase, Sizes, outcome, percentile, step
from bench.sustained import Sustained, flood_until_done

# Worker processes and the concurrency (= prefetch) of each, for the no-op rows.
ECHO_WORKERS = 2
ECHO_CONCURRENCY = 32
# The gateway as it starts by default (SG_WORKERS=1): one process, every no-op row. The
# spread rows run it again on SPREAD_PROCESSES, for the reads that more processes serve and
# the CPU per job they cost (the processes share the SQLite file's write lock).
GATEWAY_PROCESSES = 1
SPREAD_PROCESSES = 2


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
        if least.total_wrk is not None:
            phase.values["floor-wrk"] = least.total_wrk
            phase.notes["floor-wrk"] = least.note(least.http_wrk)
        measured = wrk_latency(submit_url, sizes.latency_seconds)
        record_latency(phase, measured, least.total_wrk)
        _status_reads(sizes, gateway, job, phase, "status")
        run, failed = _sustained(sizes, gateway, workers)
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


def measure_spread(sizes: Sizes, gateway: Gateway) -> Phase:
    """Against a gateway of several processes: its submits/s, status reads/s and the server
    CPU per job of a sustained run, as the rows of one process measure them ("spread-"
    keys)."""
    phase = Phase()
    step(f"ours: submits/s, status reads/s, sustained load, {gateway.processes} gateway processes")
    rate, bad, tool = hammer(gateway.submit_url("echo"), "POST", sizes.seconds, sizes.connections)
    phase.values["spread-submit"] = rate
    phase.notes["spread-submit"] = outcome(tool, bad)
    asyncio.run(purge([gateway.task_queue("echo")]))
    with gateway.workers("examples.echo:worker", ECHO_WORKERS, ECHO_CONCURRENCY) as workers:
        _, job = asyncio.run(wait_latency(gateway.submit_url("echo"), 1))
        _status_reads(sizes, gateway, job, phase, "spread-status")
        run, failed = _sustained(sizes, gateway, workers)
    phase.values["spread-cpu"] = sum(run.cpu_ms_per_job(group) for group in run.cpu)
    split = ", ".join(f"{group} {run.cpu_ms_per_job(group):.2f}" for group in run.cpu)
    restarted = f"{', '.join(run.changed)} restarted processes" if run.changed else ""
    phase.notes["spread-cpu"] = "; ".join(
        filter(None, [split, f"{run.rate:,.0f} jobs/s", outcome(run.tool, failed), restarted])
    )
    return phase


def _status_reads(sizes: Sizes, gateway: Gateway, job: str, into: Phase, key: str) -> None:
    rate, bad, tool = hammer(f"{gateway.base}/jobs/{job}", "GET", sizes.seconds, 32)
    into.values[key] = rate
    into.notes[key] = outcome(tool, bad)


def _sustained(
    sizes: Sizes, gateway: Gateway, workers: list[subprocess.Popen[bytes]]
) -> tuple[Sustained, int]:
    """The sustained run through ``workers``, and how many of its jobs did not succeed."""
    store = gateway.store()
    try:
        first = last_rowid(store)
        run = asyncio.run(
            flood_until_done(
                gateway.submit_url("echo"),
                sizes.sustained_jobs,
                lambda: count_jobs(store, first, f"status IN {TERMINAL}"),
                {
                    "gateway": [gateway.pid],
                    "workers": [w.pid for w in workers],
                    "broker": pids_named("beam.smp"),
                },
            )
        )
        return run, count_jobs(store, first, "status != 'successful'")
    finally:
        store.close()
