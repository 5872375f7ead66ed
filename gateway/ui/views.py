"""Rendering the dashboard: its templates, the headers of its pages, and what a job's page
shows (its timeline, read from the job record).

The pages load only the gateway's own files: scripts and styles from ``/ui/static`` (no inline
script or style at all), so the Content-Security-Policy is ``'self'`` and nothing else. Every
path they name starts with ``root``, the path the gateway is served under
(:func:`gateway.runtime.public_path`), so that the dashboard works behind a proxy's prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import Request, Response
from fastapi.templating import Jinja2Templates

from gateway.runtime import public_path
from gateway.store import JobRecord, JobStatus
from gateway.ui import STATIC_PATH, TEMPLATES_DIR, VENDOR_PATH

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; "
        "script-src 'self'; "
        "style-src 'self'; "
        "img-src 'self' data:; "
        "connect-src 'self'; "
        "form-action 'self'; "
        "base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.filters["pretty"] = _pretty
templates.env.filters["when"] = _when
templates.env.filters["seconds"] = _seconds


def render(
    request: Request, template: str, context: dict[str, Any], *, status_code: int = 200
) -> Response:
    """A dashboard page or fragment, with the dashboard's headers."""
    root = public_path(request)
    paths = {"root": root, "static": root + STATIC_PATH, "vendor": root + VENDOR_PATH}
    response: Response = templates.TemplateResponse(
        request, template, {**paths, **context}, status_code=status_code, headers=HEADERS
    )
    return response


@dataclass(frozen=True, slots=True)
class Step:
    """One line of a job's timeline."""

    at: datetime | None
    what: str
    detail: str = ""
    kind: str = "info"  # info | ok | bad


def shown_status(record: JobRecord) -> str:
    """The status a client sees: a finished job whose result was dismissed is dismissed."""
    return JobStatus.DISMISSED.value if record.purged is not None else record.status.value


def timeline(record: JobRecord) -> list[Step]:
    """What the store keeps of a job's life, in order: accepted, queued (the broker confirmed
    its task), retried attempts, started (by which worker), the latest progress, the end with
    its reason, and the dismissal of its result."""
    steps = [Step(record.created, "accepted", f"submitted by {record.owner}")]
    if record.queued is not None:
        steps.append(Step(record.queued, "queued", "the broker confirmed the task"))
    if record.attempt > 1:
        detail = f"attempt {record.attempt} of the job"
        if record.status is JobStatus.ACCEPTED and record.message:
            detail += f": {record.message}"
        steps.append(Step(None, "retried", detail, "bad"))
    if record.started is not None:
        worker = record.worker
        by = f" on {worker.id} ({worker.host}, version {worker.version})" if worker else ""
        steps.append(Step(record.started, "started", f"attempt {record.attempt}{by}"))
    if record.status is JobStatus.RUNNING or (record.progress and not record.status.terminal):
        message = f" – {record.message}" if record.message else ""
        steps.append(Step(record.updated, "progress", f"{record.progress}%{message}"))
    if record.finished is not None:
        kind = "ok" if record.status is JobStatus.SUCCESSFUL else "bad"
        reason = f" ({record.reason})" if record.reason else ""
        detail = record.error.message if record.error is not None else ""
        steps.append(Step(record.finished, f"{record.status.value}{reason}", detail, kind))
    if record.purged is not None:
        steps.append(Step(record.purged, "dismissed", "the result was removed", "bad"))
    return steps


def duration(start: datetime | None, end: datetime | None) -> float | None:
    if start is None:
        return None
    return max(((end or datetime.now(UTC)) - start).total_seconds(), 0.0)
