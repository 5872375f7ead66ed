"""Measure Service Gateway against the Celery + Flask architecture it replaces, in one run on
one machine, and print one table.

In order: the raw confirmed-publish ceiling; the baseline (Flask under gunicorn, 2 processes;
Celery prefork, 2 processes; SQLite result backend; RabbitMQ without publisher confirms; see
bench/baseline/); ours (the gateway as it starts by default, one process; SQLite store; the
bench's catalogue bench/services.yaml): submits, latency, status reads, a sustained load with
the server CPU per job of each group of processes, the memory of open SSE streams,
process-isolated handlers, the scale-out of a CPU-bound service, the job list on a store of a
million jobs, and the submits, status reads and CPU per job of the gateway run on two
processes.
Each row says how it was measured in a footnote.

Fairness, where the two differ: the same client tools (wrk for load, httpx for latency), the
same token check (PyJWT, HS256) on every request, SQLite on both sides in WAL mode; the
baseline's Prefer: wait equivalent polls the result backend every 1 ms inside Flask (the
database backend has no push, and a client polling over HTTP would only add requests); its
gunicorn workers keep their SQLAlchemy engine (see bench/baseline/web.py).

Timing figures depend on what else the machine runs: run it on a quiet machine. --quick
shortens every measure (3 s wrk runs, 1,000 SSE streams, a store of 100,000 jobs), for a
smoke check, not for figures.

--only process measures the process-handler rows alone (no baseline, no other rows); --only
noop measures our no-op rows alone (server CPU per job by group, latency, sustained jobs/s,
submits/s, status reads/s, and the two-process rows), for a before/after comparison of a
change. With --against REV, the one-process rows are measured for the product at git
revision REV and for this working tree, in turns, each first in every other round (--rounds N
of each, default 2), and printed side by side as medians with their ranges: the machine's
drift falls on both sides (see bench/compare.py).

Usage: python -m bench [--quick] [--only process|noop [--against REV [--rounds N]]]
(make bench installs the bench extra and wrk first)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import IO

from rich.markup import escape

from bench import compare, isolation, joblist, ours, sse
from bench.baseline import measure as baseline
from bench.broker import delete_namespace, raw_publish_rate
from bench.load import submit_count
from bench.stack import Gateway
from bench.support import CATALOGUE, Phase, Sizes, console, step
from bench.table import build, render


def _ours(sizes: Sizes, workdir: Path, log: IO[bytes], failures: list[str]) -> Phase:
    phase = Phase()
    with Gateway(workdir, log, processes=ours.GATEWAY_PROCESSES) as gateway:
        _merge(phase, ours.measure(sizes, gateway))

        def streams() -> Phase:
            step(f"ours: {sizes.sse_streams:,} SSE streams")
            with closing(gateway.store()) as store:
                accepted = store.execute("SELECT count(*) FROM jobs WHERE status = 'accepted'")
                missing = sizes.sse_streams - int(accepted.fetchone()[0])
                if missing > 0:
                    url = gateway.submit_url("echo")
                    asyncio.run(submit_count(url, missing, b'{"inputs": {}}'))
                return sse.measure(
                    sizes.sse_streams, "127.0.0.1", gateway.port, store, [gateway.pid]
                )

        _attempt("SSE memory", phase, streams, failures)
        _attempt("process handlers", phase, lambda: isolation.measure(sizes, gateway), failures)

    def job_list() -> Phase:
        step(f"ours: job list on a store of {sizes.store_jobs:,} jobs")
        db = workdir / "list.db"
        joblist.fill(db, sizes.store_jobs)
        with Gateway(workdir, log, processes=1, db=db) as gateway:
            return joblist.measure(sizes, gateway.base)

    _attempt("job list", phase, job_list, failures)
    _attempt("spread", phase, lambda: _spread(sizes, workdir, log), failures)
    return phase


def _spread(sizes: Sizes, workdir: Path, log: IO[bytes]) -> Phase:
    with Gateway(workdir, log, processes=ours.SPREAD_PROCESSES) as gateway:
        return ours.measure_spread(sizes, gateway)


def _attempt(what: str, into: Phase, measure: Callable[[], Phase], failures: list[str]) -> None:
    """Run one measure of ours-only rows; when it fails, its rows stay empty, the failure is
    reported under the table (and in the exit status), and the other measures still run."""
    try:
        _merge(into, measure())
    except Exception as exc:  # noqa: BLE001 - one failed measure must not cost the other rows
        reason = f"{type(exc).__name__}: {exc}"
        failures.append(f"{what}: {reason}")
        console.print(f"[red]{what} failed:[/red] {escape(reason)}", highlight=False)


def _merge(into: Phase, phase: Phase) -> None:
    into.values.update(phase.values)
    into.notes.update(phase.notes)


def _process_only(sizes: Sizes, workdir: Path, log: IO[bytes], failures: list[str]) -> Phase:
    phase = Phase()
    with Gateway(workdir, log, processes=ours.GATEWAY_PROCESSES) as gateway:
        _attempt("process handlers", phase, lambda: isolation.measure(sizes, gateway), failures)
    return phase


def _noop_only(sizes: Sizes, workdir: Path, log: IO[bytes]) -> Phase:
    with Gateway(workdir, log, processes=ours.GATEWAY_PROCESSES) as gateway:
        phase = ours.measure(sizes, gateway)
    _merge(phase, _spread(sizes, workdir, log))
    return phase


def run(sizes: Sizes, only: str | None = None) -> int:
    """Measure, print the table; the exit status: 1 when a measure failed."""
    sse.raise_fd_limit()
    failures: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="sg-bench-"))
    log_path = workdir / "processes.log"
    log = log_path.open("wb")
    started = time.monotonic()
    raw, base = 0.0, Phase()
    try:
        if only == "process":
            mine = _process_only(sizes, workdir, log, failures)
        elif only == "noop":
            mine = _noop_only(sizes, workdir, log)
        else:
            step("raw confirmed publish")
            namespace = f"bench-raw-{uuid.uuid4().hex[:8]}"
            try:
                raw = asyncio.run(raw_publish_rate(namespace, sizes.raw_messages))
            finally:
                asyncio.run(delete_namespace(namespace, ()))
            base = baseline.measure(sizes, workdir, log)
            mine = _ours(sizes, workdir, log, failures)
        if failures:
            log.flush()
            tail = log_path.read_text(errors="replace")[-3000:]
            console.print("[red]the processes said:[/red]")
            console.print(tail, markup=False, highlight=False)
    except BaseException:
        log.close()
        tail = log_path.read_text(errors="replace")[-4000:]
        console.print("[red]the benchmark failed; the processes said:[/red]")
        console.print(tail, markup=False, highlight=False)
        raise
    finally:
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return _report(sizes, raw, mine, base, failures, started, only)


def _report(
    sizes: Sizes,
    raw: float,
    mine: Phase,
    base: Phase,
    failures: list[str],
    started: float,
    only: str | None,
) -> int:
    rows = build(sizes, raw, mine, base)
    if only is not None:  # the rows measured (the raw ceiling is not)
        rows = [r for r in rows if r.ours is not None]
    title = (
        f"Service Gateway vs Celery + Flask ({os.cpu_count()} CPUs"
        f"{', --quick' if sizes != Sizes() else ''}{f', --only {only}' if only else ''}; "
        f"{time.monotonic() - started:.0f} s; "
        f"catalogue {CATALOGUE.relative_to(CATALOGUE.parent.parent)})"
    )
    render(console, rows, raw, title)
    for failure in failures:
        console.print(f"[red]not measured[/red] {escape(failure)}", highlight=False)
    return 1 if failures else 0


def run_against(sizes: Sizes, revision: str, rounds: int) -> int:
    """Our no-op rows before (``revision``) and after (this tree), printed side by side."""
    try:
        commit = compare.resolve(revision)
    except compare.UnknownRevision as exc:
        console.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="sg-bench-"))
    log_path = workdir / "processes.log"
    started = time.monotonic()
    try:
        with log_path.open("wb") as log:
            before, after = compare.measure(sizes, workdir, log, commit, rounds)
    except BaseException:
        tail = log_path.read_text(errors="replace")[-4000:]
        console.print("[red]the benchmark failed; the processes said:[/red]")
        console.print(tail, markup=False, highlight=False)
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    title = (
        f"Our no-op rows: {revision} ({commit[:12]}) → this tree ({os.cpu_count()} CPUs"
        f"{', --quick' if sizes != Sizes() else ''}; {rounds} rounds each; "
        f"{time.monotonic() - started:.0f} s)"
    )
    compare.render(console, before, after, title)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke check")
    parser.add_argument(
        "--only",
        choices=["process", "noop"],
        help="measure these rows alone (process: process handlers; noop: our no-op rows)",
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        help="with --only noop: measure the rows for git revision REV too, in turns with "
        "this tree, and print both",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="with --against: rounds of each (default 2)"
    )
    args = parser.parse_args()
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.against is not None:
        if args.only != "noop":
            parser.error("--against compares the no-op rows: give --only noop")
        if args.rounds < 1:
            parser.error("--rounds must be 1 or more")
        sys.exit(run_against(sizes, args.against, args.rounds))
    sys.exit(run(sizes, args.only))


if __name__ == "__main__":
    main()
