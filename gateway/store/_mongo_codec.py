"""How the MongoDB store writes job records to documents and reads them back, the filters and
indexes of its queries, and how the driver's errors become the store's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from bson.errors import BSONError
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    InvalidURI,
    PyMongoError,
    WTimeoutError,
)
from pymongo.uri_parser import parse_uri

from .base import DuplicateJob, JobQuery, StoreError, StoreRejected
from .model import JobRecord, JobStatus

TTL_BACKSTOP = 86400
FIELDS = tuple(JobRecord.model_fields)

# The status a client sees: a finished job whose result was dismissed shows as dismissed.
SHOWN_STATUS: dict[JobStatus, dict[str, Any]] = {
    JobStatus.ACCEPTED: {"status": "accepted"},
    JobStatus.RUNNING: {"status": "running"},
    JobStatus.SUCCESSFUL: {"status": "successful", "purged": {"$exists": False}},
    JobStatus.FAILED: {"status": "failed", "purged": {"$exists": False}},
    JobStatus.DISMISSED: {"$or": [{"status": "dismissed"}, {"purged": {"$exists": True}}]},
}

# What a driver call can raise: the server's and the driver's errors, and BSON encoding
# errors of values (an int past 64 bits raises OverflowError before anything is sent).
FAILURES = (PyMongoError, BSONError, OverflowError, ValueError, TypeError)
TRANSIENT = (ConnectionFailure, ExecutionTimeout, WTimeoutError)


def check_url(url: str) -> str:
    """``url`` if PyMongo reads it as a MongoDB URL (nothing is resolved or connected), else
    :class:`ValueError` saying why."""
    try:
        parse_uri(url, connect_timeout=None)
    except (InvalidURI, ConfigurationError, ValueError) as exc:
        raise ValueError(f"not a valid MongoDB URL: {exc}") from exc
    return url


def translate(exc: BaseException) -> StoreError:
    """Transient failures (the server is unreachable, slow or electing) are retried by
    callers; anything else rejected this operation's values."""
    if isinstance(exc, DuplicateKeyError):
        return DuplicateJob(str(exc))
    if isinstance(exc, TRANSIENT) or (
        isinstance(exc, PyMongoError)
        and (
            exc.has_error_label("RetryableWriteError")
            or exc.has_error_label("TransientTransactionError")
        )
    ):
        return StoreError(str(exc))
    return StoreRejected(f"{type(exc).__name__}: {exc}")


def to_document(record: JobRecord) -> dict[str, Any]:
    data = record.model_dump(mode="python")
    doc: dict[str, Any] = {"_id": str(record.id)}
    for name in FIELDS:
        if name == "id":
            continue
        value = data[name]
        if value is None and name != "result":
            continue  # absent, so that $min and $exists filters work
        doc[name] = plain(value)
    if record.status is not JobStatus.SUCCESSFUL:
        doc.pop("result", None)
    return doc


def plain(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def to_record(doc: Mapping[str, Any] | None) -> JobRecord | None:
    if doc is None:
        return None
    data = {name: doc.get(name) for name in FIELDS if name != "id"}
    data["id"] = doc["_id"]
    if data["inputs"] is None:
        data["inputs"] = {}
    return JobRecord.model_validate(data)


Update = Callable[[dict[str, Any], dict[str, Any]], Awaitable[JobRecord | None]]


async def not_before_created(update: Update, record: JobRecord | None) -> JobRecord | None:
    """``record``, with a start that a worker's clock (behind the gateway's) put before the
    job's creation moved to the creation, and an end put before the run's start moved to that
    start, as the SQLite store writes them. The fix is conditional on the times just read, so
    it never undoes a later change."""
    if record is None:
        return None
    start = max(record.started or record.created, record.created)
    fixed = {
        name: floor
        for name, floor in (("started", record.created), ("finished", start))
        if (value := getattr(record, name)) is not None and value < floor
    }
    if not fixed:
        return record
    read = {name: getattr(record, name) for name in fixed}
    # A change a reader may see between the two updates: seq counts it, as it counts any.
    return (
        await update({"_id": str(record.id), **read}, {"$set": fixed, "$inc": {"seq": 1}}) or record
    )


@contextmanager
def driver_errors() -> Iterator[None]:
    """Raise the store's error for what the driver (or BSON) raises inside."""
    try:
        yield
    except FAILURES as exc:
        raise translate(exc) from exc


def page_filter(query: JobQuery) -> dict[str, Any]:
    """The filter of one job-list page (keyset on ``(created, _id)``, newest first)."""
    clauses: list[dict[str, Any]] = []
    if query.owner is not None:
        clauses.append({"owner": str(query.owner)})
    if query.services:
        clauses.append({"service": {"$in": sorted({str(s) for s in query.services})}})
    statuses = query.shown_statuses()
    if statuses:
        clauses.append({"$or": [SHOWN_STATUS[s] for s in sorted(statuses)]})
    created: dict[str, datetime] = {}
    if query.created_from is not None:
        created["$gte"] = query.created_from
    if query.created_to is not None:
        created["$lte"] = query.created_to
    if created:
        clauses.append({"created": created})
    if query.timed:
        now = query.now or datetime.now(UTC)
        run_ms = {"$subtract": [{"$ifNull": ["$finished", now]}, "$started"]}
        clauses.append({"started": {"$type": "date"}})
        if query.min_duration is not None:
            bound = float(query.min_duration) * 1000
            clauses.append({"$expr": {"$gte": [run_ms, bound]}})
        if query.max_duration is not None:
            bound = float(query.max_duration) * 1000
            clauses.append({"$expr": {"$lte": [run_ms, bound]}})
    if query.after is not None:
        at, job_id = query.after
        clauses.append(
            {"$or": [{"created": {"$lt": at}}, {"created": at, "_id": {"$lt": str(job_id)}}]}
        )
    return {"$and": clauses} if clauses else {}


async def create_indexes(jobs: Any) -> None:
    """The jobs collection's indexes (created if missing)."""
    # Job list pages: a keyset on (created, _id), per owner, per owner and service, and
    # for admins over everyone's jobs.
    await jobs.create_index([("owner", ASCENDING), ("created", DESCENDING), ("_id", DESCENDING)])
    await jobs.create_index(
        [
            ("owner", ASCENDING),
            ("service", ASCENDING),
            ("created", DESCENDING),
            ("_id", DESCENDING),
        ]
    )
    await jobs.create_index([("created", DESCENDING), ("_id", DESCENDING)])
    await jobs.create_index([("owner", ASCENDING), ("status", ASCENDING)])
    # (service, status) queries use the (service, status, created) index of _mongo_load.
    await jobs.create_index(
        [("owner", ASCENDING), ("idempotency_key", ASCENDING)],
        unique=True,
        partialFilterExpression={"idempotency_key": {"$type": "string"}},
        name="owner_idempotency_key",
    )
    # Retention: the gateway's sweep deletes expired jobs and leaves tombstones (a
    # purged id answers 410); the TTL index is the backstop a day later, when no
    # gateway sweeps. Jobs without expires_at are kept.
    await jobs.create_index("expires_at", expireAfterSeconds=TTL_BACKSTOP)
