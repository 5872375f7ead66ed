"""The bench's table: one row per measure, ours beside the baseline's, how each was measured
in numbered footnotes."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from bench.isolation import CPU_MS
from bench.ours import ECHO_CONCURRENCY, ECHO_WORKERS, GATEWAY_PROCESSES, SPREAD_PROCESSES
from bench.support import Phase, Row, Sizes

CPU_GROUPS = (("gateway", "gateway"), ("workers", "workers"), ("broker", "RabbitMQ"))


def _cpu_total(phase: Phase) -> float | None:
    parts = [phase.values.get(f"cpu-{g}") for g, _ in CPU_GROUPS]
    return sum(p for p in parts if p is not None) if None not in parts else None


def _cpu_rows(sizes: Sizes, ours: Phase, base: Phase) -> list[Row]:
    rows = [
        Row(
            "server CPU per no-op job",
            "ms",
            _cpu_total(ours),
            _cpu_total(base),
            decimals=2,
            note=_pair(ours, base, "cpu"),
            how=f"utime+stime from /proc/<pid>/stat of every process of each group, children "
            f"included, before and after about {sizes.sustained_jobs:,} jobs submitted by wrk "
            "(32 connections) until all are terminal in the store; divided by the jobs the "
            "store counts. RabbitMQ is the beam.smp process tree: it is shared, so its figure "
            f"includes whatever else used the broker meanwhile. Ours: {_gateway()}; Celery: "
            "gunicorn, 2 sync processes (a sync process serves one request at a time).",
        )
    ]
    for group, label in CPU_GROUPS:
        rows.append(
            Row(
                f"  {label}",
                "ms",
                ours.values.get(f"cpu-{group}"),
                base.values.get(f"cpu-{group}"),
                decimals=2,
            )
        )
    return rows


def build(sizes: Sizes, raw: float, ours: Phase, base: Phase) -> list[Row]:
    """Every row, from the figures of our phases and of the baseline's."""
    o, b = ours.values, base.values
    rows = [
        Row(
            "raw confirmed publish (ceiling)",
            "msg/s",
            raw or None,  # 0: not measured (--only)
            note="aio-pika, 64 in flight",
            versus_raw=True,
            how="Persistent, mandatory publishes to a quorum queue with publisher confirms, "
            "64 unconfirmed at most, from one aio-pika channel: what any confirmed submit "
            "is bounded by.",
        ),
        *_cpu_rows(sizes, ours, base),
        Row(
            "no-op latency p50, 1 wrk connection",
            "ms",
            o.get("p50-wrk"),
            b.get("p50-wrk"),
            decimals=2,
            note=ours.notes.get("p50-wrk", ""),
            how=f"Sequential no-op jobs for {sizes.latency_seconds:g} s on one wrk connection "
            "(a C client: the least a client adds to what it measures), each sent as the last "
            "is answered, request sent → answer holding the finished job. Ours: Prefer: "
            "wait=10 (the gateway is told of the end). Celery: the same request to a Flask "
            "route that submits and then polls AsyncResult.get every 1 ms (the database "
            "backend cannot push): the fairest equivalent, since a client polling over HTTP "
            "would add a request per poll.",
        ),
        Row(
            "no-op latency p99, 1 wrk connection",
            "ms",
            o.get("p99-wrk"),
            b.get("p99-wrk"),
            decimals=2,
        ),
        Row(
            "no-op latency floor (wrk), p50s added",
            "ms",
            o.get("floor-wrk"),
            decimals=2,
            note=ours.notes.get("floor-wrk", ""),
            how="Measured just before our latency, each crossing with nothing done at either "
            "end, into a process idle for 2 ms: HTTP, a POST to a trivial ASGI app under "
            "uvicorn (uvloop, httptools), sent → answered; task, a persistent message "
            "published with confirms to a task queue declared as ours (quorum) → received by "
            "another process; event, the same to the events exchange (routed to the quorum "
            "events queue and to a classic queue bound as the gateway's tap) → the tap's copy "
            "received by another process. Our p50 above the floor is the gateway's and the "
            "workers' own work, two store commits among it (bench/floor.py).",
        ),
        Row(
            "no-op latency p50, 1 httpx client",
            "ms",
            o.get("p50"),
            b.get("p50"),
            decimals=2,
            note=ours.notes.get("p50", ""),
            how=f"As the wrk row, {sizes.latency_samples} jobs from one httpx client (asyncio, "
            "a Python client's cost: its POST to the trivial app takes about 0.8 ms where "
            "wrk's takes 0.1 ms); the floor with its HTTP crossing from the same client.",
        ),
        Row("no-op latency p99, 1 httpx client", "ms", o.get("p99"), b.get("p99"), decimals=2),
        Row(
            "no-op latency floor (httpx), p50s added",
            "ms",
            o.get("floor"),
            decimals=2,
            note=ours.notes.get("floor", ""),
        ),
        Row(
            f"sustained no-op jobs/s, {ECHO_WORKERS} workers",
            "jobs/s",
            o.get("sustained"),
            b.get("sustained"),
            note=_pair(ours, base, "sustained"),
            versus_raw=True,
            how="The run of the CPU row: jobs counted terminal in the store, from the first "
            f"submit to the last job seen done. Ours: {ECHO_WORKERS} `sgw worker` processes, "
            f"--concurrency {ECHO_CONCURRENCY}; Celery: prefork, 2 processes, prefetch "
            "multiplier 4 (its default).",
        ),
        Row(
            "backlog drained: server CPU per no-op job",
            "ms",
            o.get("drain-cpu"),
            decimals=2,
            note=ours.notes.get("drain-cpu", ""),
            how=f"{sizes.sustained_jobs:,} no-op jobs queued while no worker runs, then "
            f"{ECHO_WORKERS} `sgw worker` processes (--concurrency {ECHO_CONCURRENCY}) started: "
            "the CPU of each group, as in the CPU row, from their start until every job is "
            "terminal in the store, divided by the jobs; the workers' own start (imports, "
            "connecting, until both consume, a few jobs' handling included) is stated apart. "
            "Busy workers report their jobs' ends several to a message; the baseline has no "
            "such row.",
        ),
        Row(
            "backlog drained: jobs/s",
            "jobs/s",
            o.get("drain-rate"),
            note=ours.notes.get("drain-rate", ""),
            versus_raw=True,
        ),
        Row(
            f"submits/s, {sizes.connections} conns, no worker",
            "req/s",
            o.get("submit"),
            b.get("submit"),
            note=_pair(ours, base, "submit"),
            versus_raw=True,
            how=f"wrk, 2 threads, {sizes.connections} connections, {sizes.seconds:g} s of "
            "POST /processes/echo/execution with a bearer token, no worker running (the queue "
            f"is purged after). Ours: {_gateway()}, confirmed and persisted before the 201; "
            "Celery: gunicorn, 2 sync processes, no publisher confirms.",
        ),
        Row(
            "status reads/s, GET /jobs/{id}",
            "req/s",
            o.get("status"),
            b.get("status"),
            note=_pair(ours, base, "status"),
            how=f"wrk, 32 connections, {sizes.seconds:g} s on one finished job. Celery: "
            "AsyncResult(id).state from the SQLite result backend.",
        ),
        Row(
            f"submits/s, {SPREAD_PROCESSES} gateway processes",
            "req/s",
            o.get("spread-submit"),
            b.get("submit"),
            note=ours.notes.get("spread-submit", ""),
            how=f"The gateway run again on {SPREAD_PROCESSES} processes (SG_WORKERS="
            f"{SPREAD_PROCESSES}): the submits as above, then with its echo workers the "
            "status reads as above and the sustained run of the CPU row; the note splits its "
            "CPU by group. A read is served by whichever process takes the connection, so "
            "reads scale with the processes; a write takes the SQLite file's one write lock, "
            "which the processes then pass between them, in smaller group commits.",
        ),
        Row(
            f"status reads/s, {SPREAD_PROCESSES} gateway processes",
            "req/s",
            o.get("spread-status"),
            b.get("status"),
            note=ours.notes.get("spread-status", ""),
        ),
        Row(
            f"server CPU per no-op job, {SPREAD_PROCESSES} gateway processes",
            "ms",
            o.get("spread-cpu"),
            _cpu_total(base),
            decimals=2,
            note=ours.notes.get("spread-cpu", ""),
        ),
        Row(
            "gateway RSS per SSE stream",
            "KiB",
            o.get("sse-kib"),
            note=ours.notes.get("sse", "")
            or (
                f"{o['sse-streams']:,.0f} streams, {o['sse-rss-mib']:,.0f} MiB RSS"
                if "sse-streams" in o
                else ""
            ),
            how="The gateway's resident memory (VmRSS of its process tree, from /proc) with "
            "that many GET /jobs/{id}/events streams open on accepted jobs, each having "
            "received its first event, minus the RSS just before; divided by the streams. "
            "Celery + Flask has no such stream.",
        ),
    ]
    for concurrency in (1, 2):
        rows.append(
            Row(
                f"process no-op jobs/s, concurrency {concurrency}",
                "jobs/s",
                o.get(f"process-rate-{concurrency}"),
                note=ours.notes.get(f"process-{concurrency}", ""),
                how=""
                if concurrency == 2
                else "A no-op isolation='process' handler (bench/workers.py), one `sgw worker` "
                "process: jobs queued ahead; once the first has finished (warm), "
                f"{sizes.window:g} s more (at least 5 jobs). Rate = jobs finished after the "
                "first / time since it finished; overhead = median of finished − started, read "
                "from the job records.",
            )
        )
        rows.append(
            Row(
                f"process overhead p50, concurrency {concurrency}",
                "ms",
                o.get(f"process-overhead-{concurrency}"),
                decimals=2,
            )
        )
    one, children, two = o.get("cpu-rate-1"), o.get("cpu-rate-1x2"), o.get("cpu-rate-2")
    rows += [
        Row(
            f"{CPU_MS} ms CPU jobs/s, 1 worker, 1 child",
            "jobs/s",
            one,
            decimals=2,
            note=ours.notes.get("cpu-1", ""),
            how=f"A process-isolated handler that spends {CPU_MS} ms of CPU time "
            "(bench/workers.py), measured as the process handler rows: one `sgw worker "
            "--concurrency 1` (one child process), then one with --concurrency 2 (two "
            "children), then two `sgw worker --concurrency 1` processes.",
        ),
        Row(
            f"{CPU_MS} ms CPU jobs/s, 1 worker, 2 children",
            "jobs/s",
            children,
            decimals=2,
            note=_scaled(children, one, ours.notes.get("cpu-1x2", "")),
        ),
        Row(
            f"{CPU_MS} ms CPU jobs/s, 2 workers, 1 child each",
            "jobs/s",
            two,
            decimals=2,
            note=_scaled(two, one, ours.notes.get("cpu-2", "")),
        ),
        Row(
            "GET /jobs?limit=100, first page",
            "ms",
            o.get("list-first"),
            decimals=2,
            note=ours.notes.get("list", ""),
            how="A store filled with SQL in one statement (finished jobs of the bench's "
            "owner), one gateway process; median time of GET /jobs?limit=100 from httpx, "
            "and of the deep page: reached through the next link's offset, or by following "
            "next links when they carry a cursor.",
        ),
        Row(
            "GET /jobs?limit=100, deep page",
            "ms",
            o.get("list-deep"),
            decimals=2,
            note=_ratio_note(o.get("list-deep"), o.get("list-first"), "first page"),
        ),
    ]
    return rows


def _gateway() -> str:
    if GATEWAY_PROCESSES == 1:
        return "one gateway process, the default (SG_WORKERS=1)"
    return f"{GATEWAY_PROCESSES} gateway processes"


def _pair(ours: Phase, base: Phase, key: str) -> str:
    parts = []
    if ours.notes.get(key):
        parts.append(f"ours {ours.notes[key]}")
    if base.notes.get(key):
        parts.append(f"Celery {base.notes[key]}")
    return "; ".join(parts)


def _scaled(value: float | None, reference: float | None, note: str) -> str:
    if value is None or not reference:
        return note
    return "; ".join(filter(None, [f"{value / reference:.2f}× one child", note]))


def _ratio_note(value: float | None, reference: float | None, what: str) -> str:
    if value is None or not reference:
        return ""
    return f"{value / reference:,.1f}× the {what}"


def _fmt(value: float | None, decimals: int) -> str:
    return "—" if value is None else f"{value:,.{decimals}f}"


def render(console: Console, rows: list[Row], raw: float, title: str) -> None:
    table = Table(title=title)
    for column in ("measure", "Celery + Flask", "ours", "ours ÷ Celery", "÷ raw", "unit"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    table.add_column("notes")
    footnotes: list[str] = []
    for row in rows:
        name = row.name
        if row.how:
            footnotes.append(row.how)
            name += f" [{len(footnotes)}]"
        ratio = f"{row.ours / row.baseline:.2f}" if row.ours is not None and row.baseline else ""
        versus_raw = (
            f"{row.ours / raw:.2f}" if row.versus_raw and row.ours is not None and raw else ""
        )
        table.add_row(
            name,
            _fmt(row.baseline, row.decimals),
            _fmt(row.ours, row.decimals),
            ratio,
            versus_raw,
            row.unit,
            row.note,
        )
    console.print(table)
    console.print(
        "ours ÷ Celery: below 1 is better for ms, above 1 for rates; ÷ raw: a rate over the raw "
        "confirmed-publish ceiling.",
        highlight=False,
    )
    for number, text in enumerate(footnotes, start=1):
        console.print(f"[{number}] {text}", markup=False, highlight=False)
