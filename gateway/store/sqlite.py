"""The embedded default store: one SQLite file in WAL mode, whose statements
:mod:`gateway.store._sqlite_executor` commits in groups on a thread (a quick one at once on a
quiet loop). Several gateway processes on one host may share the file: WAL lets readers run
beside the single writer, and ``busy_timeout`` queues writers instead of failing them. A
failing statement is undone alone (SQLite's statement atomicity); the rest of its batch commits.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from worker_sdk.wire import ErrorInfo

from . import _sqlite_load as _load
from . import _sqlite_workers as _workers
from ._sqlite_executor import BUSY_TIMEOUT_MS, GroupCommit
from ._sqlite_recent import RecentRows
from ._sqlite_recovery import SQLiteRecovery
from ._sqlite_schema import ADDED_COLUMNS, SCHEMA, SHOWN_STATUS, decode, encode, stored_ts, ts
from ._sqlite_webhooks import WEBHOOK_SCHEMA, SQLiteWebhooks
from .base import DuplicateJob, JobQuery, ServiceLoad, StoreError
from .model import ACTIVE, JobRecord, JobStatus, WorkerInfo, WorkerState

# Ids per statement where a list of ids is looked up (SQLite allows 32,766 parameters).
_ID_BATCH = 500
# A usage counter raised (made at ``by``, counting since ``now``, when it is new).
_BUMP = (
    "INSERT INTO counters (name, value, since) VALUES (:name, :by, :now) "
    "ON CONFLICT (name) DO UPDATE SET value = value + :by"
)


class SQLiteStore(SQLiteWebhooks, SQLiteRecovery):
    """:class:`~gateway.store.base.JobStore` on a local SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self._path = str(path)
        self._executor = GroupCommit()
        self._run = self._executor.run
        self._read = self._executor.read
        self._recent = RecentRows()

    async def open(self) -> None:
        memory = self._path == ":memory:"
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)  # in memory: "."
        try:
            await self._executor.open(self._connect, None if memory else Path(self._path))
        except sqlite3.Error as exc:
            await self.close()
            raise StoreError(f"cannot open SQLite store {self._path!r}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA temp_store=MEMORY")  # savepoint journals never spill to a file
        db.executescript(SCHEMA)
        for table, added in ADDED_COLUMNS.items():
            present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for column, kind in added.items():
                if column not in present:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        db.executescript(WEBHOOK_SCHEMA)  # after the columns it indexes exist
        return db

    async def close(self) -> None:
        await self._executor.close()

    async def ping(self) -> None:
        await self._read(lambda db: db.execute("SELECT 1").fetchone())

    async def insert(self, record: JobRecord, *, counter: str | None = None) -> bool:
        """The job's row, committed with ``counter``'s count when it commits on its own (a
        quiet gateway's insert, on the event loop): one commit per submission where the
        count's own write, batched by :class:`~gateway.tally.Tally`, took a second one on the
        store's thread while the task crossed the broker. Under load the inserts commit in
        groups, and the count stays the caller's: counted in every insert of a group, it
        cost a fifth of the submissions a second."""
        row = encode(record)
        columns = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        sql = f"INSERT INTO jobs ({columns}) VALUES ({marks})"

        def insert(db: sqlite3.Connection) -> bool:
            db.execute(sql, row)
            return False

        def insert_counted(db: sqlite3.Connection) -> bool:
            db.execute(sql, row)
            db.execute(_BUMP, {"name": counter, "by": 1, "now": ts(record.created)})
            return True

        try:
            counted: bool = await self._run(
                insert, quick=True, alone=insert_counted if counter is not None else None
            )
        except StoreError as exc:
            if "UNIQUE" in str(exc) and record.idempotency_key is not None:
                raise DuplicateJob(str(exc)) from exc
            raise
        return counted

    async def find_by_key(self, owner: str, key: str) -> JobRecord | None:
        return await self._one(
            "SELECT * FROM jobs WHERE owner = :owner AND idempotency_key = :key",
            {"owner": owner, "key": key},
            writes=False,
        )

    async def release_key(self, job_id: UUID) -> None:
        sql = "UPDATE jobs SET idempotency_key = NULL WHERE id = :id"
        await self._run(lambda db: db.execute(sql, {"id": str(job_id)}))

    async def get(self, job_id: UUID) -> JobRecord | None:
        return await self._read(self._recent.reader(str(job_id)), quick=True)

    async def owners(self, job_ids: Collection[UUID]) -> dict[UUID, str]:
        ids = [str(job_id) for job_id in job_ids]

        def statement(db: sqlite3.Connection) -> dict[UUID, str]:
            found: dict[UUID, str] = {}
            for start in range(0, len(ids), _ID_BATCH):  # SQLite caps a statement's parameters
                chunk = ids[start : start + _ID_BATCH]
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT id, owner FROM jobs WHERE id IN ({marks})"
                found.update((UUID(row[0]), row[1]) for row in db.execute(sql, chunk))
            return found

        return await self._read(statement) if ids else {}

    async def page_jobs(self, query: JobQuery) -> list[JobRecord]:
        where: list[str] = []
        params: dict[str, Any] = {"limit": query.limit}
        if query.owner is not None:
            where.append("owner = :owner")
            params["owner"] = query.owner
        if query.services:
            names = sorted(set(query.services))
            params.update({f"p{i}": name for i, name in enumerate(names)})
            where.append(f"service IN ({', '.join(f':p{i}' for i in range(len(names)))})")
        statuses = query.shown_statuses()
        if statuses:
            where.append("(" + " OR ".join(SHOWN_STATUS[s] for s in sorted(statuses)) + ")")
        if query.created_from is not None:
            where.append("created >= :created_from")
            params["created_from"] = stored_ts(query.created_from)
        if query.created_to is not None:
            where.append("created <= :created_to")
            params["created_to"] = stored_ts(query.created_to)
        if query.timed:
            # julianday() is a double (some 40 µs of precision today): round to milliseconds.
            duration = (
                "round((julianday(COALESCE(finished, :now)) - julianday(started)) * 86400.0, 3)"
            )
            where.append("started IS NOT NULL")
            params["now"] = stored_ts(query.now or datetime.now(UTC))
            if query.min_duration is not None:
                where.append(f"{duration} >= :min_duration")
                params["min_duration"] = query.min_duration
            if query.max_duration is not None:
                where.append(f"{duration} <= :max_duration")
                params["max_duration"] = query.max_duration
        if query.after is not None:
            where.append("(created, id) < (:after_created, :after_id)")
            params["after_created"] = stored_ts(query.after[0])
            params["after_id"] = str(query.after[1])
        sql = (
            f"SELECT * FROM jobs WHERE {' AND '.join(where) or '1 = 1'} "
            "ORDER BY created DESC, id DESC LIMIT :limit"
        )

        def statement(db: sqlite3.Connection) -> list[JobRecord]:
            return [decode(row) for row in db.execute(sql, params)]

        records: list[JobRecord] = await self._read(statement)
        return records

    async def service_load(
        self, service: str, *, since: Sequence[datetime], sample: int = 500
    ) -> ServiceLoad:
        load: ServiceLoad = await self._read(
            lambda db: _load.service_load(db, service, since=since, sample=sample)
        )
        return load

    async def queue_position(self, record: JobRecord) -> int:
        position: int = await self._read(lambda db: _load.queue_position(db, record))
        return position

    async def count_active(self, owner: str) -> int:
        sql = "SELECT count(*) FROM jobs WHERE owner = :owner AND status IN ('accepted', 'running')"

        def statement(db: sqlite3.Connection) -> int:
            return int(db.execute(sql, {"owner": owner}).fetchone()[0])

        count: int = await self._read(statement)
        return count

    async def purge(self, job_id: UUID, *, at: datetime) -> JobRecord | None:
        return await self._one(
            """UPDATE jobs SET result = NULL, purged = :at, updated = :at, seq = seq + 1
               WHERE id = :id AND status IN ('successful', 'failed', 'dismissed')
                   AND purged IS NULL
               RETURNING *""",
            {"id": str(job_id), "at": ts(at)},
        )

    async def expire(self, now: datetime, *, limit: int = 1000) -> int:
        params = {"now": ts(now), "limit": limit}

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
                db.execute("DELETE FROM webhook_deliveries WHERE job_id = ?", (job_id,))
            return len(ids)

        count: int = await self._run(statement)
        return count

    async def tombstone(self, job_id: UUID) -> str | None:
        def statement(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT owner FROM tombstones WHERE id = ?", (str(job_id),)).fetchone()
            return str(row[0]) if row is not None else None

        owner: str | None = await self._read(statement)
        return owner

    async def heartbeat(
        self,
        worker: WorkerInfo,
        *,
        service: str,
        at: datetime,
        concurrency: int = 0,
        running: Collection[UUID] = (),
    ) -> None:
        await self._run(
            lambda db: _workers.heartbeat(
                db, worker, service=service, at=at, concurrency=concurrency, running=running
            )
        )

    async def worker_left(self, worker_id: str, *, at: datetime) -> None:
        await self._run(lambda db: _workers.worker_left(db, worker_id, at=at))

    async def forget_workers(self, *, before: datetime) -> int:
        count: int = await self._run(lambda db: _workers.forget_workers(db, before=before))
        return count

    async def last_heartbeat(self, worker_id: str) -> datetime | None:
        def statement(db: sqlite3.Connection) -> datetime | None:
            row = db.execute("SELECT seen FROM workers WHERE id = ?", (worker_id,)).fetchone()
            return datetime.fromisoformat(row[0]) if row is not None else None

        seen: datetime | None = await self._run(statement)
        return seen

    async def active_workers(self, service: str, *, since: datetime) -> int:
        count: int = await self._run(lambda db: _workers.active_workers(db, service, since=since))
        return count

    async def live_workers(
        self, *, since: datetime, service: str | None = None
    ) -> list[WorkerState]:
        found: list[WorkerState] = await self._run(
            lambda db: _workers.live_workers(db, since=since, service=service)
        )
        return found

    async def bump(self, counter: str, by: int = 1) -> None:
        params = {"name": counter, "by": by, "now": ts(datetime.now(UTC))}
        await self._run(lambda db: db.execute(_BUMP, params), quick=True)

    async def counter_since(self, counter: str) -> datetime | None:
        def statement(db: sqlite3.Connection) -> datetime | None:
            row = db.execute("SELECT since FROM counters WHERE name = ?", (counter,)).fetchone()
            return datetime.fromisoformat(row[0]) if row is not None and row[0] else None

        since: datetime | None = await self._run(statement)
        return since

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
                   progress = 0, progress_seq = 0, message = NULL, worker = :worker, seq = seq + 1,
                   started = COALESCE(started, MAX(:at, created)), updated = MAX(:at, updated)
               WHERE id = :id AND status IN ('accepted', 'running') AND attempt <= :attempt
                   AND (run_id IS NULL OR run_id != :run_id)
               RETURNING *""",
            {
                "id": str(job_id),
                "attempt": attempt,
                "run_id": str(run_id),
                "worker": worker.model_dump_json(),
                "at": ts(at),
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
            {"id": str(job_id), "attempt": attempt, "message": message, "at": ts(at)},
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
                "at": ts(at),
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
            started=ts(started),
            worker=worker.model_dump_json() if worker is not None else None,
            expires_at=ts(expires_at),
            at=ts(at),
        )
        return await self._one(
            f"""UPDATE jobs SET status = :status, reason = :reason, result = :result,
                    error = :error, updated = MAX(:at, updated),
                    finished = MAX(:at, created, COALESCE(started, :started, created)),
                    progress = CASE WHEN :status = 'successful' THEN 100 ELSE progress END,
                    attempt = COALESCE(:attempt, attempt), worker = COALESCE(worker, :worker),
                    started = COALESCE(started, MAX(:started, created)),
                    expires_at = COALESCE(:expires_at, expires_at), seq = seq + 1
                WHERE id = :id AND status IN ({marks}) AND attempt <= COALESCE(:attempt, attempt)
                RETURNING *""",
            params,
        )

    async def _one(
        self, sql: str, params: Mapping[str, Any], *, writes: bool = True
    ) -> JobRecord | None:
        def statement(db: sqlite3.Connection) -> JobRecord | None:
            row = db.execute(sql, params).fetchone()
            return decode(row) if row is not None else None

        run = self._run if writes else self._read
        result: JobRecord | None = await run(statement, quick=True)
        return result
