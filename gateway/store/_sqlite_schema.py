"""The SQLite store's tables, and how a job record is written to a row and read back."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any, get_args

from .model import JobRecord, JobStatus

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    progress INTEGER NOT NULL DEFAULT 0,
    message TEXT,
    inputs TEXT NOT NULL,
    result TEXT,
    error TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    run_id TEXT,
    progress_seq INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    created TEXT NOT NULL,
    started TEXT,
    updated TEXT NOT NULL,
    finished TEXT,
    purged TEXT,
    expires_at TEXT,
    idempotency_key TEXT,
    request_hash TEXT,
    subscriber TEXT,
    seq INTEGER NOT NULL DEFAULT 1,
    legacy TEXT,
    queued TEXT,
    recovering TEXT,
    delivery TEXT,
    webhook_open INTEGER NOT NULL DEFAULT 0,
    webhook_seq INTEGER NOT NULL DEFAULT 0
);
DROP INDEX IF EXISTS jobs_owner_created;
CREATE INDEX IF NOT EXISTS jobs_owner_page ON jobs (owner, created DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_owner_service_page ON jobs (owner, service, created DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_page ON jobs (created DESC, id DESC);
DROP INDEX IF EXISTS jobs_service_status;
CREATE INDEX IF NOT EXISTS jobs_service_status_created ON jobs (service, status, created);
CREATE INDEX IF NOT EXISTS jobs_service_finished ON jobs (service, finished)
    WHERE finished IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_owner_status ON jobs (owner, status);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY, value INTEGER NOT NULL, since TEXT
);
CREATE INDEX IF NOT EXISTS jobs_expires_at ON jobs (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS tombstones (id TEXT PRIMARY KEY, owner TEXT NOT NULL, expired TEXT);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, service TEXT NOT NULL, host TEXT, version TEXT, seen TEXT NOT NULL,
    concurrency INTEGER NOT NULL DEFAULT 0, running TEXT, since TEXT, gone TEXT
);
CREATE INDEX IF NOT EXISTS workers_service_seen ON workers (service, seen);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_owner_idempotency
    ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_unqueued ON jobs (service, created)
    WHERE status = 'accepted' AND queued IS NULL;
"""

# The status a client sees: a finished job whose result was dismissed shows as dismissed.
SHOWN_STATUS = {
    JobStatus.ACCEPTED: "status = 'accepted'",
    JobStatus.RUNNING: "status = 'running'",
    JobStatus.SUCCESSFUL: "(status = 'successful' AND purged IS NULL)",
    JobStatus.FAILED: "(status = 'failed' AND purged IS NULL)",
    JobStatus.DISMISSED: "(status = 'dismissed' OR purged IS NOT NULL)",
}

_COLUMNS = tuple(JobRecord.model_fields)
_JSON_COLUMNS = frozenset(
    {"inputs", "result", "error", "worker", "subscriber", "legacy", "delivery"}
)
_JSON_FIELDS = tuple(name for name in _COLUMNS if name in _JSON_COLUMNS)
_TIME_FIELDS = tuple(
    name
    for name, field in JobRecord.model_fields.items()
    if field.annotation is datetime or datetime in get_args(field.annotation)
)
# Columns added after the first schema, by table: a store file made before them gets them
# at open.
ADDED_COLUMNS = {
    "jobs": {
        "delivery": "TEXT",
        "webhook_open": "INTEGER NOT NULL DEFAULT 0",
        "webhook_seq": "INTEGER NOT NULL DEFAULT 0",
    },
    "workers": {
        "concurrency": "INTEGER NOT NULL DEFAULT 0",
        "running": "TEXT",
        "since": "TEXT",
        "gone": "TEXT",
    },
}


def stored_ts(value: datetime) -> str:
    """A time as every column holds it: UTC with six fraction digits, fixed width, so that
    text order is time order (the job list's keyset, the reaper's and the recovery's cut-offs
    and the heartbeats' ``max`` rely on it; ISO 8601 as Python writes it drops a zero
    fraction, which sorts a whole second after its own fractions)."""
    if value.tzinfo is not UTC and (value.tzinfo is None or value.utcoffset()):
        value = value.astimezone(UTC)
    # isoformat, not strftime: half the time, on every write of a job.
    return value.isoformat(timespec="microseconds")[:26] + "Z"


def ts(value: datetime | None) -> str | None:
    return stored_ts(value) if value is not None else None


def encode(record: JobRecord) -> dict[str, Any]:
    row = record.model_dump(mode="json")  # a column per field, in the fields' order
    for name in _JSON_FIELDS:
        value = row[name]
        if value is not None:
            row[name] = json.dumps(value)
        elif name == "result" and record.status is JobStatus.SUCCESSFUL:
            row[name] = "null"  # a result that is null, not an absent one
    for name in _TIME_FIELDS:  # as every column holds a time (pydantic's text varies)
        value = getattr(record, name)
        if value is not None:
            row[name] = stored_ts(value)
    return row


def decode(row: sqlite3.Row) -> JobRecord:
    """A job from a row of ``jobs`` (``SELECT *``, ``RETURNING *``): its columns by position,
    as a name lookup per column cost half of the decoding (12 → 7 µs a row); a column the
    model does not have is ignored."""
    data = dict(zip(row.keys(), row, strict=True))
    for name in _JSON_COLUMNS:
        if data[name] is not None:
            data[name] = json.loads(data[name])
    if data["inputs"] is None:
        data["inputs"] = {}
    return JobRecord.model_validate(data)
