"""The Flask side of the baseline: submit and status, as the old gateway served them.

``gunicorn -w 2 bench.baseline.web:app`` serves it (sync workers, gunicorn's default).
"""

from __future__ import annotations

import os
import re
from typing import Any

import jwt
from celery import Celery
from flask import Flask, Response, abort, jsonify, request

from bench.baseline import tasks

# Celery's result states in the OGC words our API answers with.
STATUS = {
    "PENDING": "accepted",
    "RECEIVED": "accepted",
    "STARTED": "running",
    "RETRY": "running",
    "SUCCESS": "successful",
    "FAILURE": "failed",
    "REVOKED": "dismissed",
}
_WAIT = re.compile(r"wait=(\d+)")
# How often a Prefer: wait request reads the result backend: the database backend has no push,
# so a waiting request polls; 1 ms makes the poll's granularity small beside the latency.
POLL_INTERVAL = 0.001


def create_app(celery: Celery, secret: str) -> Flask:
    """The Flask app submitting to ``celery`` and checking HS256 tokens signed with
    ``secret``."""
    app = Flask(__name__)

    def authenticate() -> str:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            abort(401)
        try:
            claims: dict[str, Any] = jwt.decode(header[7:], secret, algorithms=["HS256"])
        except jwt.InvalidTokenError:
            abort(401)
        return str(claims["sub"])

    @app.post("/processes/echo/execution")
    def submit() -> tuple[Response, int]:
        """Queue the no-op task; with ``Prefer: wait=N``, answer once it has finished."""
        authenticate()
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("inputs", {}), dict):
            abort(400)
        result = celery.send_task(tasks.ECHO, args=(body.get("inputs", {}),))
        wait = _WAIT.search(request.headers.get("Prefer", ""))
        if wait is None:
            answer = jsonify(jobID=result.id, status="accepted")
            answer.headers["Location"] = f"/jobs/{result.id}"
            return answer, 201
        result.get(timeout=int(wait.group(1)), interval=POLL_INTERVAL)
        return jsonify(jobID=result.id, status=STATUS[result.state]), 200

    @app.get("/jobs/<job_id>")
    def status(job_id: str) -> Response:
        """The task's state from the result backend."""
        authenticate()
        state = celery.AsyncResult(job_id).state
        return jsonify(jobID=job_id, status=STATUS.get(state, state.lower()))

    @app.get("/readyz")
    def ready() -> Response:
        return jsonify(status="ready")

    return app


# gunicorn loads this module in each worker after an os.fork, which never runs the after-fork
# hook (kombu's, for multiprocessing and billiard) that tells Celery's database backend it may
# keep its SQLAlchemy engine: left alone, it would build a new engine for every status read
# (6-20 ms each). The baseline gets the cached engine, as a tuned deployment would.
tasks.celery.backend.session_manager.forked = True  # type: ignore[attr-defined]  # not in stubs
app = create_app(tasks.celery, os.environ.get("BENCH_JWT_SECRET", ""))
