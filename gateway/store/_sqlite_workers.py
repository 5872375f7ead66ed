"""The SQLite store's statements on workers: heartbeats, goodbyes and the live list."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from datetime import datetime
from uuid import UUID

from ._sqlite_schema import ts
from .model import WorkerInfo, WorkerState

# A heartbeat older than the one recorded (applied late, out of order) raises nothing:
# ``seen`` keeps its maximum and the other fields stay those of the newest heartbeat.
_HEARTBEAT = """
INSERT INTO workers (id, service, host, version, seen, concurrency, running, since)
VALUES (:id, :service, :host, :version, :seen, :concurrency, :running, :seen)
ON CONFLICT (id) DO UPDATE SET
    service = CASE WHEN :seen >= seen THEN :service ELSE service END,
    host = CASE WHEN :seen >= seen THEN :host ELSE host END,
    version = CASE WHEN :seen >= seen THEN :version ELSE version END,
    concurrency = CASE WHEN :seen >= seen THEN :concurrency ELSE concurrency END,
    running = CASE WHEN :seen >= seen THEN :running ELSE running END,
    since = min(COALESCE(since, seen), :seen),
    seen = max(seen, :seen)
"""


def heartbeat(
    db: sqlite3.Connection,
    worker: WorkerInfo,
    *,
    service: str,
    at: datetime,
    concurrency: int,
    running: Collection[UUID],
) -> None:
    db.execute(
        _HEARTBEAT,
        {
            "id": worker.id,
            "service": service,
            "host": worker.host,
            "version": worker.version,
            "seen": ts(at),
            "concurrency": concurrency,
            "running": json.dumps([str(job) for job in running]),
        },
    )


def worker_left(db: sqlite3.Connection, worker_id: str, *, at: datetime) -> None:
    db.execute(
        "UPDATE workers SET gone = :at WHERE id = :id AND gone IS NULL",
        {"id": worker_id, "at": ts(at)},
    )


def forget_workers(db: sqlite3.Connection, *, before: datetime) -> int:
    return db.execute("DELETE FROM workers WHERE seen < :before", {"before": ts(before)}).rowcount


def active_workers(db: sqlite3.Connection, service: str, *, since: datetime) -> int:
    sql = "SELECT count(*) FROM workers WHERE service = :service AND seen > :since AND gone IS NULL"
    return int(db.execute(sql, {"service": service, "since": ts(since)}).fetchone()[0])


def live_workers(
    db: sqlite3.Connection, *, since: datetime, service: str | None
) -> list[WorkerState]:
    where = "seen > :since AND gone IS NULL"
    if service is not None:
        where += " AND service = :service"
    rows = db.execute(
        f"SELECT * FROM workers WHERE {where} ORDER BY service, id",
        {"since": ts(since), "service": service},
    )
    return [
        WorkerState(
            id=row["id"],
            service=row["service"],
            host=row["host"] or "",
            version=row["version"] or "",
            concurrency=row["concurrency"] or 0,
            running=tuple(json.loads(row["running"] or "[]")),
            seen=datetime.fromisoformat(row["seen"]),
            since=datetime.fromisoformat(row["since"] or row["seen"]),
        )
        for row in rows
    ]
