"""Prometheus metrics of one gateway process (``GET /metrics``).

Counters and histograms count what this process did (submissions it took, events it
applied); sum them over processes. Queue gauges are read from RabbitMQ at scrape time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.store import JobRecord, JobStatus

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class Metrics:
    """The gateway's instruments, in a registry of their own (one per application)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.submitted = Counter(
            "sg_jobs_submitted", "Jobs accepted (201).", ["service"], registry=self.registry
        )
        self.finished = Counter(
            "sg_jobs_finished",
            "Jobs that reached a terminal state, by status and reason.",
            ["service", "status", "reason"],
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "sg_job_queue_wait_seconds",
            "Time from submission to the start of the job's first run.",
            ["service"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.run_time = Histogram(
            "sg_job_run_seconds",
            "Time from the job's start to its end.",
            ["service"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.version_mismatch = Counter(
            "sg_worker_version_mismatch",
            "Runs announced by a worker whose version is not the catalogue's.",
            ["service"],
            registry=self.registry,
        )
        self.events_refused = Counter(
            "sg_events_refused",
            "Broker messages the gateway could not use, by queue and why (unreadable, "
            "newer schema, unknown service, rejected by the store, failed).",
            ["queue", "why"],
            registry=self.registry,
        )
        self.queue_messages = Gauge(
            "sg_queue_messages",
            "Tasks waiting in the service's queue (ready, not delivered).",
            ["service"],
            registry=self.registry,
        )
        self.queue_consumers = Gauge(
            "sg_queue_consumers",
            "Workers consuming the service's queue.",
            ["service"],
            registry=self.registry,
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
