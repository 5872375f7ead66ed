"""The Celery + Flask baseline works, on the real broker, and keeps to its own names."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import jwt
import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from bench.baseline.measure import prepare_results
from bench.baseline.tasks import make_celery
from bench.baseline.web import create_app
from bench.broker import delete_names
from tests.conftest import AMQP_URL

SECRET = "a-baseline-secret-" + "x" * 40


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"test-celery-{uuid.uuid4().hex[:12]}"
    yield name
    asyncio.run(delete_names([name], [name]))


@pytest.fixture
def celery(queue: str, tmp_path: Path) -> Iterator[Celery]:
    """The baseline's Celery app on the test's queue; its broker connections closed after."""
    app = make_celery(AMQP_URL, queue, str(tmp_path / "results.db"))
    prepare_results(app, tmp_path / "results.db")
    yield app
    app.close()


async def _exists(kind: str, name: str) -> bool:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        try:
            if kind == "queue":
                await channel.declare_queue(name, passive=True)
            else:
                await channel.declare_exchange(name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
        return True


def test_the_baseline_runs_a_job_and_serves_its_state(queue: str, celery: Celery) -> None:
    token = jwt.encode({"sub": "someone"}, SECRET, algorithm="HS256")
    auth = {"Authorization": f"Bearer {token}"}
    client = create_app(celery, SECRET).test_client()
    with start_worker(
        celery, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=60
    ):
        done = client.post(
            "/processes/echo/execution",
            json={"inputs": {"a": 1}},
            headers={**auth, "Prefer": "wait=20"},
        )
        assert done.status_code == 200, done.text
        assert done.json is not None
        assert done.json["status"] == "successful"
        job = done.json["jobID"]
        status = client.get(f"/jobs/{job}", headers=auth)
        assert status.json == {"jobID": job, "status": "successful"}
        assert celery.AsyncResult(job).get(timeout=5) == {"a": 1}
    queued = client.post("/processes/echo/execution", json={"inputs": {}}, headers=auth)
    assert queued.status_code == 201
    assert queued.headers["Location"].endswith(queued.json["jobID"] if queued.json else "?")
    assert client.get(f"/jobs/{job}").status_code == 401
    forged = jwt.encode({"sub": "someone"}, "another-secret-" + "y" * 40, algorithm="HS256")
    assert (
        client.get(f"/jobs/{job}", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    )
    # Its own queue and exchange only: none of Celery's shared default names.
    assert asyncio.run(_exists("queue", queue))
    assert not asyncio.run(_exists("queue", "celery"))
    for exchange in ("celery", "celery.pidbox", "reply.celery.pidbox", "celeryev"):
        assert not asyncio.run(_exists("exchange", exchange)), exchange
