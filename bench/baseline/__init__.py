"""The architecture Service Gateway replaces, as a small app the bench measures us against.

Flask under gunicorn (2 sync processes) submits a Celery task and reads its state from the
Celery result backend; Celery's prefork pool (2 processes) runs it; RabbitMQ is the broker
(no publisher confirms: Celery's default) and SQLite, through SQLAlchemy (``db+sqlite``), is
the result backend. The Flask routes mirror ours: submit (with a ``Prefer: wait`` variant)
and job status, each checking the same bearer token with PyJWT, as the old gateway did.

The app reads its settings from ``BENCH_*`` variables set by the bench: ``BENCH_AMQP_URL``,
``BENCH_QUEUE`` (the queue, exchange and routing key, unique per run, so the baseline never
touches another namespace's queues), ``BENCH_RESULT_DB`` (the SQLite file) and
``BENCH_JWT_SECRET``.
"""
