"""The figures of the workers and queues page, from what the gateway already keeps: the job
records of the last hour (arrivals, completions, queue wait = ``started - created`` of a job's
run, run time = ``finished - started``), and, read at the moment, each queue's depth and
consumers from RabbitMQ and the live workers from their heartbeats.

Percentiles are nearest-rank over the jobs of the window. The charts bin the hour by minute:
jobs finished per minute, and the median wait and run time of the jobs that started or
finished in that minute.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.store import JobRecord, JobStatus

WINDOW = timedelta(hours=1)
RATE_WINDOW = timedelta(minutes=15)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0–100) of ``values``; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class ServiceFigures:
    """One row of the queues table."""

    service: str
    title: str
    ready: int | None = None  # tasks waiting in the queue (None: the broker did not answer)
    consumers: int | None = None
    workers: int | None = None  # live workers by heartbeat
    accepted: int = 0  # jobs waiting for a worker now (in the window)
    running: int = 0
    arrivals: int = 0  # in RATE_WINDOW
    completions: int = 0  # in RATE_WINDOW
    waits: list[float] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)

    @property
    def arrival_rate(self) -> float:
        """Jobs submitted per minute (last 15 minutes)."""
        return self.arrivals / (RATE_WINDOW.total_seconds() / 60)

    @property
    def completion_rate(self) -> float:
        """Jobs finished per minute (last 15 minutes)."""
        return self.completions / (RATE_WINDOW.total_seconds() / 60)

    def wait(self, q: float) -> float | None:
        return percentile(self.waits, q)

    def run(self, q: float) -> float | None:
        return percentile(self.runs, q)


def _wait(record: JobRecord) -> float | None:
    if record.started is None:
        return None
    return max((record.started - record.created).total_seconds(), 0.0)


def _run(record: JobRecord) -> float | None:
    if record.started is None or record.finished is None:
        return None
    return max((record.finished - record.started).total_seconds(), 0.0)


def tally(
    records: Iterable[JobRecord], services: dict[str, str], now: datetime
) -> dict[str, ServiceFigures]:
    """The figures of each service (``services``: id → title) over the window."""
    rows = {sid: ServiceFigures(service=sid, title=title) for sid, title in services.items()}
    recent = now - RATE_WINDOW
    for record in records:
        row = rows.get(record.service)
        if row is None:
            continue
        if record.status is JobStatus.ACCEPTED:
            row.accepted += 1
        elif record.status is JobStatus.RUNNING:
            row.running += 1
        if record.created >= recent:
            row.arrivals += 1
        if record.finished is not None and record.finished >= recent:
            row.completions += 1
        wait = _wait(record)
        if wait is not None:
            row.waits.append(wait)
        run = _run(record)
        if run is not None and record.status is JobStatus.SUCCESSFUL:
            row.runs.append(run)
    return rows


def series(
    records: Iterable[JobRecord], services: Sequence[str], now: datetime, minutes: int = 60
) -> dict[str, object]:
    """Per-minute series of the last ``minutes`` for the charts: ``t`` (epoch seconds of each
    minute), and per service ``finished`` (jobs), ``wait`` and ``run`` (median seconds, null
    when no job)."""
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    t = [int((start + timedelta(minutes=i)).timestamp()) for i in range(minutes)]
    finished = {s: [0] * minutes for s in services}
    waits: dict[str, list[list[float]]] = {s: [[] for _ in range(minutes)] for s in services}
    runs: dict[str, list[list[float]]] = {s: [[] for _ in range(minutes)] for s in services}

    def slot(at: datetime | None) -> int | None:
        if at is None or at < start or at >= end:
            return None
        return int((at - start).total_seconds() // 60)

    for record in records:
        if record.service not in finished:
            continue
        done = slot(record.finished)
        if done is not None:
            finished[record.service][done] += 1
            run = _run(record)
            if run is not None:
                runs[record.service][done].append(run)
        began = slot(record.started)
        wait = _wait(record)
        if began is not None and wait is not None:
            waits[record.service][began].append(wait)
    return {
        "t": t,
        "services": list(services),
        "finished": finished,
        "wait": {s: [percentile(b, 50) for b in waits[s]] for s in services},
        "run": {s: [percentile(b, 50) for b in runs[s]] for s in services},
    }
