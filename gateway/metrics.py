"""Prometheus metrics of the gateway (``GET /metrics``).

Counters and histograms count what the gateway did (submissions it took, transitions it
made); queue gauges are read from RabbitMQ at scrape time. With several gateway processes on
one host (``sgw serve --workers N``) the instruments live in prometheus-client's
multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, which ``sgw serve`` sets), so that a scrape
answered by any process shows the sum over all of them.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

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
            "another attempt is scheduled, failed: the schedule is exhausted).",
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
