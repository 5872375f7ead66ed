"""Prometheus metrics of the gateway (``GET /metrics``).

Counters and histograms count what the gateway did (submissions it took, transitions it
made); queue gauges are read from RabbitMQ at scrape time. With several gateway processes on
one host (``sgw serve --workers N``) the instruments live in prometheus-client's
multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, which ``sgw serve`` sets), so that a scrape
answered by any process shows the sum over all of them.
"""

from __future__ import annotations

import math
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.capacity import ServiceCapacity
from gateway.store import JobRecord, JobStatus

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class Metrics:
    """The gateway's instruments, in a registry of their own (one per application).

    ``registry`` is what ``/metrics`` renders: the instruments themselves, or, with
    ``multiprocess_dir``, the collector that sums every process's files.
    """

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry()
        own = self.registry
        if multiprocess_dir is not None:
            MultiProcessCollector(self.registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
            own = CollectorRegistry()  # the instruments write to files, not to this one
        self.submitted = Counter(
            "sg_jobs_submitted", "Jobs accepted (201).", ["service"], registry=own
        )
        self.finished = Counter(
            "sg_jobs_finished",
            "Jobs that reached a terminal state, by status and reason.",
            ["service", "status", "reason"],
            registry=own,
        )
        self.queue_wait = Histogram(
            "sg_job_queue_wait_seconds",
            "Time from submission to the start of the job's first run.",
            ["service"],
            buckets=DURATION_BUCKETS,
            registry=own,
        )
        self.run_time = Histogram(
            "sg_job_run_seconds",
            "Time from the job's start to its end.",
            ["service"],
            buckets=DURATION_BUCKETS,
            registry=own,
        )
        self.version_mismatch = Counter(
            "sg_worker_version_mismatch",
            "Runs announced by a worker whose version is not the catalogue's.",
            ["service"],
            registry=own,
        )
        self.events_refused = Counter(
            "sg_events_refused",
            "Broker messages the gateway could not use, by queue and why (unreadable, "
            "newer schema, unknown service, rejected by the store, failed).",
            ["queue", "why"],
            registry=own,
        )
        self.webhook_attempts = Counter(
            "sg_webhook_attempts",
            "Webhook delivery attempts, by event type and outcome (delivered, retrying: "
            "another attempt is scheduled, failed: the schedule is exhausted; deferred: not "
            "attempted, its receiver had as many attempts in flight as allowed).",
            ["type", "outcome"],
            registry=own,
        )
        self.queue_messages = Gauge(
            "sg_queue_messages",
            "Tasks waiting in the service's queue (ready, not delivered).",
            ["service"],
            multiprocess_mode="mostrecent",
            registry=own,
        )
        self.queue_consumers = Gauge(
            "sg_queue_consumers",
            "Workers consuming the service's queue.",
            ["service"],
            multiprocess_mode="mostrecent",
            registry=own,
        )

        self.capacity = _capacity_gauges(own)

    def show_capacity(self, measured: ServiceCapacity) -> None:
        """Set the capacity gauges to a service's figures (unknown figures read NaN)."""
        gauges, service = self.capacity, measured.service
        if measured.queue_messages is not None and measured.queue_consumers is not None:
            self.queue_messages.labels(service).set(measured.queue_messages)
            self.queue_consumers.labels(service).set(measured.queue_consumers)
        gauges["workers"].labels(service).set(measured.workers)
        gauges["slots"].labels(service).set(measured.slots)
        gauges["jobs"].labels(service, "accepted").set(measured.accepted)
        gauges["jobs"].labels(service, "running").set(measured.running)
        for window, arrival, completion in zip(
            WINDOW_LABELS, measured.arrival_rates, measured.completion_rates, strict=True
        ):
            gauges["arrival"].labels(service, window).set(arrival)
            gauges["completion"].labels(service, window).set(completion)
        gauges["run"].labels(service, "mean").set(_nan(measured.run_mean))
        gauges["run"].labels(service, "p95").set(_nan(measured.run_p95))
        gauges["wait"].labels(service, "mean").set(_nan(measured.wait_mean))
        gauges["wait"].labels(service, "p95").set(_nan(measured.wait_p95))
        gauges["utilisation"].labels(service).set(_nan(measured.utilisation))
        gauges["predicted"].labels(service).set(_nan(measured.predicted_wait))
        gauges["needed"].labels(service).set(_nan(measured.workers_needed))

    def observe(self, record: JobRecord) -> None:
        """Count a transition this process made: a run's start, or the job's end."""
        if record.status.terminal:
            self.finished.labels(record.service, record.status, record.reason or "").inc()
            if record.started is not None and record.finished is not None:
                run = (record.finished - record.started).total_seconds()
                self.run_time.labels(record.service).observe(max(run, 0.0))
        elif (
            record.status is JobStatus.RUNNING
            and record.progress_seq == 0
            and record.started is not None
            and record.attempt == 1
        ):
            wait = (record.started - record.created).total_seconds()
            self.queue_wait.labels(record.service).observe(max(wait, 0.0))


WINDOW_LABELS = ("1m", "5m", "15m")


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _capacity_gauges(registry: CollectorRegistry) -> dict[str, Gauge]:
    """The capacity API's figures as gauges (``GET /capacity`` documents each)."""

    def gauge(name: str, help: str, *labels: str) -> Gauge:
        return Gauge(
            f"sg_capacity_{name}",
            help,
            ["service", *labels],
            multiprocess_mode="mostrecent",
            registry=registry,
        )

    return {
        "workers": gauge("workers", "Live workers (heartbeats)."),
        "slots": gauge("slots", "Jobs the live workers run at once (their concurrency)."),
        "jobs": gauge("jobs", "Jobs accepted (waiting) and running, from the store.", "status"),
        "arrival": gauge("arrival_rate", "Jobs created per second over the window.", "window"),
        "completion": gauge("completion_rate", "Runs ended per second over the window.", "window"),
        "run": gauge("run_seconds", "Run time of the recent runs.", "stat"),
        "wait": gauge("queue_wait_seconds", "Queue wait of the recent runs.", "stat"),
        "utilisation": gauge(
            "utilisation", "Offered load over capacity: 5 min arrival rate / (slots x mu)."
        ),
        "predicted": gauge(
            "predicted_wait_seconds", "Expected wait of a job submitted now (M/M/c)."
        ),
        "needed": gauge(
            "workers_needed", "Workers that keep the predicted wait within target_wait."
        ),
    }
