"""The embedded default store: one SQLite file in WAL mode, driven through aiosqlite.

aiosqlite runs the sqlite3 calls on a dedicated thread, so the event loop never blocks on
disk. Several gateway processes on one host may share the file: WAL lets readers run beside
the single writer, and ``busy_timeout`` queues writers instead of failing them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import aiosqlite

from worker_sdk import ErrorInfo

from .base import StoreError
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
    expires_at TEXT,
    idempotency_key TEXT,
    subscriber TEXT
);
CREATE INDEX IF NOT EXISTS jobs_owner_created ON jobs (owner, created);
CREATE INDEX IF NOT EXISTS jobs_service_status ON jobs (service, status);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_owner_idempotency
    ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
"""

_COLUMNS = tuple(JobRecord.model_fields)
_JSON_COLUMNS = frozenset({"inputs", "result", "error", "worker", "subscriber"})


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


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


class SQLiteStore:
    """:class:`~gateway.store.base.JobStore` on a local SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self._path = str(path)
        self._db: aiosqlite.Connection | None = None

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the SQLite store is not open")
        return self._db

    async def open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = await aiosqlite.connect(self._path, isolation_level=None)
            self._db.row_factory = aiosqlite.Row
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=NORMAL")
            await self._db.execute("PRAGMA busy_timeout=5000")
            await self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            await self.close()
            raise StoreError(f"cannot open SQLite store {self._path!r}: {exc}") from exc

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def ping(self) -> None:
        try:
            await self._conn.execute("SELECT 1")
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"SQLite store unavailable: {exc}") from exc

    async def insert(self, record: JobRecord) -> None:
        row = _encode(record)
        columns = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        await self._write(f"INSERT INTO jobs ({columns}) VALUES ({marks})", row)

    async def get(self, job_id: UUID) -> JobRecord | None:
        try:
            async with self._conn.execute(
                "SELECT * FROM jobs WHERE id = ?", (str(job_id),)
            ) as cursor:
                row = await cursor.fetchone()
        except sqlite3.Error as exc:
            raise StoreError(str(exc)) from exc
        return _decode(row) if row is not None else None

    async def start(
        self, job_id: UUID, *, attempt: int, run_id: UUID, worker: WorkerInfo, at: datetime
    ) -> JobRecord | None:
        return await self._update(
            """UPDATE jobs SET status = 'running', attempt = :attempt, run_id = :run_id,
                   progress = 0, progress_seq = 0, message = NULL, worker = :worker,
                   started = COALESCE(started, :at), updated = :at
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
        return await self._update(
            """UPDATE jobs SET progress = :percent, message = :message, progress_seq = :seq,
                   updated = :at
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
            at=_ts(at),
        )
        return await self._update(
            f"""UPDATE jobs SET status = :status, reason = :reason, result = :result,
                    error = :error, finished = :at, updated = :at,
                    progress = CASE WHEN :status = 'successful' THEN 100 ELSE progress END,
                    attempt = COALESCE(:attempt, attempt)
                WHERE id = :id AND status IN ({marks})
                RETURNING *""",
            params,
        )

    async def _update(self, sql: str, params: Mapping[str, Any]) -> JobRecord | None:
        try:
            async with self._conn.execute(sql, params) as cursor:
                row = await cursor.fetchone()
        except sqlite3.Error as exc:
            raise StoreError(str(exc)) from exc
        return _decode(row) if row is not None else None

    async def _write(self, sql: str, params: Mapping[str, Any]) -> None:
        try:
            await self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(str(exc)) from exc
