"""Where every change this process makes to a job is announced, once.

Whoever moves a job (the events applier, a dismiss, a failed publish, the reaper) calls
:meth:`Changes.made` with the record the store returned, and only when its conditional update
applied: so each transition is counted once across gateway replicas, and every interested
party hears of it — requests waiting on or streaming the job, the metrics, and the
webhooks' outbox.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.metrics import Metrics
from gateway.store import JobRecord
from gateway.watch import JobWatch


class Changes:
    """Fans a job's changes out to the watch (waiters, streams) and the metrics."""

    def __init__(
        self,
        watch: JobWatch,
        metrics: Metrics,
        *,
        webhooks: Callable[[JobRecord], None] | None = None,
    ) -> None:
        self.watch = watch
        self.metrics = metrics
        self._webhooks = webhooks

    def made(self, record: JobRecord) -> None:
        """This process changed the job to ``record``."""
        self.watch.notify(record)
        self.metrics.observe(record)
        if record.webhook_open and self._webhooks is not None:
            self._webhooks(record)

    def seen(self, record: JobRecord) -> None:
        """A change that is no transition (a purge), or one another process made and this one
        read back: tell local waiters and streams only."""
        self.watch.notify(record)
