"""The embedded default store: one SQLite file in WAL mode, on a thread of its own.

Every statement runs on one dedicated thread, so the event loop never blocks on disk. The
statements that arrive while a batch runs are committed together in the next transaction
(group commit): under load, one lock acquisition and one WAL commit serve tens of jobs.
aiosqlite, the usual bridge, runs one statement per thread hop and one transaction per
statement, which made the store the gateway's bottleneck; hence this small executor.

Several gateway processes on one host may share the file: WAL lets readers run beside the
single writer, and ``busy_timeout`` queues writers instead of failing them. A failing
statement is undone alone (SQLite's statement atomicity); the rest of its batch commits.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from worker_sdk.wire import ErrorInfo

from .base import DuplicateJob, JobQuery, StoreError, StoreRejected
from .model import ACTIVE, JobRecord, JobStatus, WorkerInfo

_SCHEMA = """
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
    delivery TEXT
);
DROP INDEX IF EXISTS jobs_owner_created;
CREATE INDEX IF NOT EXISTS jobs_owner_page ON jobs (owner, created DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_owner_service_page ON jobs (owner, service, created DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_page ON jobs (created DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_service_status ON jobs (service, status);
CREATE INDEX IF NOT EXISTS jobs_owner_status ON jobs (owner, status);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY, value INTEGER NOT NULL, since TEXT
);
CREATE INDEX IF NOT EXISTS jobs_expires_at ON jobs (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS tombstones (id TEXT PRIMARY KEY, owner TEXT NOT NULL, expired TEXT);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, service TEXT NOT NULL, host TEXT, version TEXT, seen TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_owner_idempotency
    ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_unqueued ON jobs (service, created)
    WHERE status = 'accepted' AND queued IS NULL;
"""

# The status a client sees: a finished job whose result was dismissed shows as dismissed.
_SHOWN_STATUS = {
    JobStatus.ACCEPTED: "status = 'accepted'",
    JobStatus.RUNNING: "status = 'running'",
    JobStatus.SUCCESSFUL: "(status = 'successful' AND purged IS NULL)",
    JobStatus.FAILED: "(status = 'failed' AND purged IS NULL)",
    JobStatus.DISMISSED: "(status = 'dismissed' OR purged IS NOT NULL)",
}

T = TypeVar("T")
Statement = Callable[[sqlite3.Connection], Any]

_COLUMNS = tuple(JobRecord.model_fields)
_JSON_COLUMNS = frozenset(
    {"inputs", "result", "error", "worker", "subscriber", "legacy", "delivery"}
)
# Columns added after the first schema: a store file made before them gets them at open.
_ADDED_COLUMNS = {"delivery": "TEXT"}


def _stored_ts(value: datetime) -> str:
    """A time as every column holds it: UTC with six fraction digits, fixed width, so that
    text order is time order (the job list's keyset, the reaper's and the recovery's cut-offs
    and the heartbeats' ``max`` rely on it; ISO 8601 as Python writes it drops a zero
    fraction, which sorts a whole second after its own fractions)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ts(value: datetime | None) -> str | None:
    return _stored_ts(value) if value is not None else None


def _encode(record: JobRecord) -> dict[str, Any]:
    data = record.model_dump(mode="json")
    row: dict[str, Any] = {}
    for name in _COLUMNS:
        value = data[name]
        if name in _JSON_COLUMNS:
            unset = value is None and not (
                name == "result" and record.status is JobStatus.SUCCESSFUL
            )
            row[name] = None if unset else json.dumps(value)
        elif isinstance(getattr(record, name), datetime):
            row[name] = _ts(getattr(record, name))
        else:
            row[name] = value
    return row


def _decode(row: sqlite3.Row) -> JobRecord:
    data = {name: row[name] for name in _COLUMNS}
    for name in _JSON_COLUMNS:
        if data[name] is not None:
            data[name] = json.loads(data[name])
    if data["inputs"] is None:
        data["inputs"] = {}
    return JobRecord.model_validate(data)


class _Batch:
    """Statements waiting for the next transaction, each with the future of its caller."""

    def __init__(self) -> None:
        self.statements: list[Statement] = []
        self.futures: list[asyncio.Future[Any]] = []


class SQLiteStore:
    """:class:`~gateway.store.base.JobStore` on a local SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self._path = str(path)
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._pending: _Batch | None = None
        self._flusher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        try:
            self._db = await asyncio.get_running_loop().run_in_executor(self._thread, self._connect)
        except sqlite3.Error as exc:
            await self.close()
            raise StoreError(f"cannot open SQLite store {self._path!r}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(_SCHEMA)
        present = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in present:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        return db

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        db, self._db = self._db, None
        thread, self._thread = self._thread, None
        if thread is not None:
            if db is not None:
                await asyncio.get_running_loop().run_in_executor(thread, db.close)
            thread.shutdown(wait=True)

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())

    async def insert(self, record: JobRecord) -> None:
        row = _encode(record)
        columns = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        sql = f"INSERT INTO jobs ({columns}) VALUES ({marks})"
        try:
            await self._run(lambda db: db.execute(sql, row))
        except StoreError as exc:
            if "UNIQUE" in str(exc) and record.idempotency_key is not None:
                raise DuplicateJob(str(exc)) from exc
            raise

    async def find_by_key(self, owner: str, key: str) -> JobRecord | None:
        return await self._one(
            "SELECT * FROM jobs WHERE owner = :owner AND idempotency_key = :key",
            {"owner": owner, "key": key},
        )

    async def release_key(self, job_id: UUID) -> None:
        sql = "UPDATE jobs SET idempotency_key = NULL WHERE id = :id"
        await self._run(lambda db: db.execute(sql, {"id": str(job_id)}))

    async def get(self, job_id: UUID) -> JobRecord | None:
        return await self._one("SELECT * FROM jobs WHERE id = :id", {"id": str(job_id)})

    async def page_jobs(self, query: JobQuery) -> list[JobRecord]:
        where: list[str] = []
        params: dict[str, Any] = {"limit": query.limit}
        if query.owner is not None:
            where.append("owner = :owner")
            params["owner"] = query.owner
        if query.services:
            marks = []
            for i, service in enumerate(sorted(set(query.services))):
                params[f"p{i}"] = service
                marks.append(f":p{i}")
            where.append(f"service IN ({', '.join(marks)})")
        statuses = query.shown_statuses()
        if statuses:
            where.append("(" + " OR ".join(_SHOWN_STATUS[s] for s in sorted(statuses)) + ")")
        if query.created_from is not None:
            where.append("created >= :created_from")
            params["created_from"] = _stored_ts(query.created_from)
        if query.created_to is not None:
            where.append("created <= :created_to")
            params["created_to"] = _stored_ts(query.created_to)
        if query.timed:
            # julianday() is a double (some 40 µs of precision today): round to milliseconds.
            duration = (
                "round((julianday(COALESCE(finished, :now)) - julianday(started)) * 86400.0, 3)"
            )
            where.append("started IS NOT NULL")
            params["now"] = _stored_ts(query.now or datetime.now(UTC))
            if query.min_duration is not None:
                where.append(f"{duration} >= :min_duration")
                params["min_duration"] = query.min_duration
            if query.max_duration is not None:
                where.append(f"{duration} <= :max_duration")
                params["max_duration"] = query.max_duration
        if query.after is not None:
            where.append("(created, id) < (:after_created, :after_id)")
            params["after_created"] = _stored_ts(query.after[0])
            params["after_id"] = str(query.after[1])
        sql = (
            f"SELECT * FROM jobs WHERE {' AND '.join(where) or '1 = 1'} "
            "ORDER BY created DESC, id DESC LIMIT :limit"
        )

        def statement(db: sqlite3.Connection) -> list[JobRecord]:
            return [_decode(row) for row in db.execute(sql, params)]

        records: list[JobRecord] = await self._run(statement)
        return records

    async def count_active(self, owner: str) -> int:
        sql = "SELECT count(*) FROM jobs WHERE owner = :owner AND status IN ('accepted', 'running')"

        def statement(db: sqlite3.Connection) -> int:
            return int(db.execute(sql, {"owner": owner}).fetchone()[0])

        count: int = await self._run(statement)
        return count

    async def purge(self, job_id: UUID, *, at: datetime) -> JobRecord | None:
        return await self._one(
            """UPDATE jobs SET result = NULL, purged = :at, updated = :at, seq = seq + 1
               WHERE id = :id AND status IN ('successful', 'failed', 'dismissed')
                   AND purged IS NULL
               RETURNING *""",
            {"id": str(job_id), "at": _ts(at)},
        )

    async def expire(self, now: datetime, *, limit: int = 1000) -> int:
        params = {"now": _ts(now), "limit": limit}

        def statement(db: sqlite3.Connection) -> int:
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT id FROM jobs WHERE expires_at <= :now LIMIT :limit", params
                )
            ]
            for job_id in ids:
                db.execute(
                    "INSERT OR REPLACE INTO tombstones (id, owner, expired) "
                    "SELECT id, owner, :now FROM jobs WHERE id = :id",
                    {"id": job_id, "now": params["now"]},
                )
                db.execute("DELETE FROM jobs WHERE id = :id", {"id": job_id})
            return len(ids)

        count: int = await self._run(statement)
        return count

    async def mark_queued(self, job_ids: Collection[UUID], *, at: datetime) -> None:
        rows = [{"id": str(job_id), "at": _ts(at)} for job_id in job_ids]
        sql = "UPDATE jobs SET queued = :at WHERE id = :id AND queued IS NULL"
        if rows:
            await self._run(lambda db: db.executemany(sql, rows))

    async def claim_recovery(self, job_id: UUID, *, at: datetime, lease: timedelta) -> bool:
        sql = (
            "UPDATE jobs SET recovering = :at WHERE id = :id AND status = 'accepted' "
            "AND queued IS NULL AND (recovering IS NULL OR recovering < :expired)"
        )
        params = {"id": str(job_id), "at": _ts(at), "expired": _ts(at - lease)}

        def statement(db: sqlite3.Connection) -> bool:
            return db.execute(sql, params).rowcount == 1

        claimed: bool = await self._run(statement)
        return claimed

    async def unqueued(
        self, *, service: str, before: datetime, limit: int = 100
    ) -> list[JobRecord]:
        sql = (
            "SELECT * FROM jobs WHERE service = :service AND status = 'accepted' "
            "AND queued IS NULL AND attempt = 1 AND created < :before ORDER BY created LIMIT :limit"
        )
        params = {"service": service, "before": _ts(before), "limit": limit}

        def statement(db: sqlite3.Connection) -> list[JobRecord]:
            return [_decode(row) for row in db.execute(sql, params)]

        records: list[JobRecord] = await self._run(statement)
        return records

    async def tombstone(self, job_id: UUID) -> str | None:
        def statement(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT owner FROM tombstones WHERE id = ?", (str(job_id),)).fetchone()
            return str(row[0]) if row is not None else None

        owner: str | None = await self._run(statement)
        return owner

    async def stale(
        self, *, service: str, status: JobStatus, before: datetime, limit: int = 100
    ) -> list[JobRecord]:
        field = "started" if status is JobStatus.RUNNING else "created"
        sql = (
            f"SELECT * FROM jobs WHERE service = :service AND status = :status "
            f"AND {field} < :before ORDER BY {field} LIMIT :limit"
        )
        params = {"service": service, "status": str(status), "before": _ts(before), "limit": limit}

        def statement(db: sqlite3.Connection) -> list[JobRecord]:
            return [_decode(row) for row in db.execute(sql, params)]

        records: list[JobRecord] = await self._run(statement)
        return records

    async def heartbeat(self, worker: WorkerInfo, *, service: str, at: datetime) -> None:
        sql = (
            "INSERT INTO workers (id, service, host, version, seen) "
            "VALUES (:id, :service, :host, :version, :seen) "
            "ON CONFLICT (id) DO UPDATE SET seen = max(seen, :seen)"
        )
        params = {
            "id": worker.id,
            "service": service,
            "host": worker.host,
            "version": worker.version,
            "seen": _ts(at),
        }
        await self._run(lambda db: db.execute(sql, params))

    async def last_heartbeat(self, worker_id: str) -> datetime | None:
        def statement(db: sqlite3.Connection) -> datetime | None:
            row = db.execute("SELECT seen FROM workers WHERE id = ?", (worker_id,)).fetchone()
            return datetime.fromisoformat(row[0]) if row is not None else None

        seen: datetime | None = await self._run(statement)
        return seen

    async def bump(self, counter: str, by: int = 1) -> None:
        sql = (
            "INSERT INTO counters (name, value, since) VALUES (:name, :by, :now) "
            "ON CONFLICT (name) DO UPDATE SET value = value + :by"
        )
        params = {"name": counter, "by": by, "now": _ts(datetime.now(UTC))}
        await self._run(lambda db: db.execute(sql, params))

    async def counter_since(self, counter: str) -> datetime | None:
        def statement(db: sqlite3.Connection) -> datetime | None:
            row = db.execute("SELECT since FROM counters WHERE name = ?", (counter,)).fetchone()
            return datetime.fromisoformat(row[0]) if row is not None and row[0] else None

        since: datetime | None = await self._run(statement)
        return since

    async def active_workers(self, service: str, *, since: datetime) -> int:
        sql = "SELECT count(*) FROM workers WHERE service = :service AND seen > :since"

        def statement(db: sqlite3.Connection) -> int:
            return int(db.execute(sql, {"service": service, "since": _ts(since)}).fetchone()[0])

        count: int = await self._run(statement)
        return count

    async def counters(self, prefix: str = "") -> dict[str, int]:
        sql = "SELECT name, value FROM counters WHERE substr(name, 1, :n) = :prefix"

        def statement(db: sqlite3.Connection) -> dict[str, int]:
            rows = db.execute(sql, {"n": len(prefix), "prefix": prefix})
            return {str(name): int(value) for name, value in rows}

        found: dict[str, int] = await self._run(statement)
        return found

    async def start(
        self, job_id: UUID, *, attempt: int, run_id: UUID, worker: WorkerInfo, at: datetime
    ) -> JobRecord | None:
        return await self._one(
            """UPDATE jobs SET status = 'running', attempt = :attempt, run_id = :run_id,
                   progress = 0, progress_seq = 0, message = NULL, worker = :worker,
                   started = COALESCE(started, :at), updated = :at, seq = seq + 1
               WHERE id = :id AND status IN ('accepted', 'running') AND attempt <= :attempt
                   AND (run_id IS NULL OR run_id != :run_id)
               RETURNING *""",
            {
                "id": str(job_id),
                "attempt": attempt,
                "run_id": str(run_id),
                "worker": worker.model_dump_json(),
                "at": _ts(at),
            },
        )

    async def retrying(
        self, job_id: UUID, *, attempt: int, message: str, at: datetime
    ) -> JobRecord | None:
        return await self._one(
            """UPDATE jobs SET status = 'accepted', attempt = :attempt, run_id = NULL,
                   progress = 0, progress_seq = 0, message = :message, updated = :at,
                   seq = seq + 1
               WHERE id = :id AND status IN ('accepted', 'running') AND attempt < :attempt
               RETURNING *""",
            {"id": str(job_id), "attempt": attempt, "message": message, "at": _ts(at)},
        )

    async def progress(
        self,
        job_id: UUID,
        *,
        run_id: UUID,
        seq: int,
        percent: int,
        message: str | None,
        at: datetime,
    ) -> JobRecord | None:
        return await self._one(
            """UPDATE jobs SET progress = :percent, message = :message, progress_seq = :seq,
                   updated = :at, seq = seq + 1
               WHERE id = :id AND status = 'running' AND run_id = :run_id
                   AND progress_seq < :seq AND progress <= :percent
               RETURNING *""",
            {
                "id": str(job_id),
                "run_id": str(run_id),
                "seq": seq,
                "percent": percent,
                "message": message,
                "at": _ts(at),
            },
        )

    async def finish(
        self,
        job_id: UUID,
        *,
        status: JobStatus,
        at: datetime,
        reason: str | None = None,
        result: Any = None,
        error: ErrorInfo | None = None,
        attempt: int | None = None,
        started: datetime | None = None,
        worker: WorkerInfo | None = None,
        expires_at: datetime | None = None,
        only_from: Collection[JobStatus] = ACTIVE,
    ) -> JobRecord | None:
        allowed = sorted(str(s) for s in only_from)
        marks = ", ".join(f":from{i}" for i in range(len(allowed)))
        params: dict[str, Any] = {f"from{i}": s for i, s in enumerate(allowed)}
        params.update(
            id=str(job_id),
            status=str(status),
            reason=reason,
            result=json.dumps(result) if status is JobStatus.SUCCESSFUL else None,
            error=error.model_dump_json() if error is not None else None,
            attempt=attempt,
            started=_ts(started),
            worker=worker.model_dump_json() if worker is not None else None,
            expires_at=_ts(expires_at),
            at=_ts(at),
        )
        return await self._one(
            f"""UPDATE jobs SET status = :status, reason = :reason, result = :result,
                    error = :error, finished = :at, updated = :at,
                    progress = CASE WHEN :status = 'successful' THEN 100 ELSE progress END,
                    attempt = COALESCE(:attempt, attempt),
                    started = COALESCE(started, :started), worker = COALESCE(worker, :worker),
                    expires_at = COALESCE(:expires_at, expires_at), seq = seq + 1
                WHERE id = :id AND status IN ({marks})
                RETURNING *""",
            params,
        )

    async def _one(self, sql: str, params: Mapping[str, Any]) -> JobRecord | None:
        def statement(db: sqlite3.Connection) -> JobRecord | None:
            row = db.execute(sql, params).fetchone()
            return _decode(row) if row is not None else None

        result: JobRecord | None = await self._run(statement)
        return result

    async def _run(self, statement: Callable[[sqlite3.Connection], T]) -> T:
        """Queue ``statement`` for the next transaction and wait for its result."""
        if self._db is None or self._thread is None:
            raise StoreError("the SQLite store is not open")
        loop = asyncio.get_running_loop()
        if self._pending is None:
            self._pending = _Batch()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.statements.append(statement)
        self._pending.futures.append(future)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending is not None and self._db is not None and self._thread is not None:
            batch, self._pending = self._pending, None
            try:
                outcomes = await loop.run_in_executor(
                    self._thread, _commit, self._db, batch.statements
                )
            except Exception as exc:  # noqa: BLE001 - every waiter must hear how its batch ended
                outcomes = [StoreError(f"SQLite transaction failed: {exc!r}")] * len(batch.futures)
            for future, outcome in zip(batch.futures, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)


def _classify(exc: Exception) -> StoreError:
    """A failing statement's error: transient (the database is busy, locked or unwell) or a
    rejection of this statement's values, which no retry will change."""
    if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
        return StoreError(str(exc))
    return StoreRejected(f"{type(exc).__name__}: {exc}")


def _commit(db: sqlite3.Connection, statements: list[Statement]) -> list[Any]:
    """Run on the store's thread: one transaction for the whole batch.

    Each statement runs under a savepoint of its own, so one that fails (whatever it raises)
    is undone alone and its caller hears why; the others commit.
    """
    assert threading.current_thread().name.startswith("sqlite")
    outcomes: list[Any] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in statements:
            db.execute("SAVEPOINT statement")
            try:
                outcomes.append(statement(db))
            except Exception as exc:  # noqa: BLE001 - the statement's caller gets it, not the batch
                db.execute("ROLLBACK TO statement")
                outcomes.append(_classify(exc))
            db.execute("RELEASE statement")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return outcomes
