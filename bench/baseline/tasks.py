"""The Celery side of the baseline: the app and its no-op task.

``celery -A bench.baseline.tasks worker --pool prefork --concurrency 2`` runs it. Remote
control, gossip, mingle, heartbeats and events are off, so the worker declares nothing but its
own queue and exchange (no ``celery.pidbox`` or ``celeryev`` names shared with anyone).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

ECHO = "bench.echo"


def make_celery(amqp_url: str, queue: str, result_db: str) -> Celery:
    """A Celery app with the no-op task :data:`ECHO`, on ``queue`` (also its exchange and
    routing key), storing results in the SQLite file ``result_db``; Celery's defaults
    otherwise (no publisher confirms, early acks, prefetch multiplier 4)."""
    app = Celery("bench_baseline", broker=amqp_url, backend=f"db+sqlite:///{result_db}")
    app.conf.update(
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )

    @app.task(name=ECHO, shared=False)
    def echo(inputs: dict[str, Any]) -> dict[str, Any]:
        """The no-op job: returns its inputs."""
        return inputs

    return app


celery = make_celery(
    os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    os.environ.get("BENCH_QUEUE", "bench-celery"),
    os.environ.get("BENCH_RESULT_DB", "celery-results.db"),
)
