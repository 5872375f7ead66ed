"""The SQLite store's part of recovery: the queries by which the gateway finds jobs whose task
may not be in a queue (never marked queued) and the sweeper finds jobs no event moved for too
long."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from datetime import datetime, timedelta
from uuid import UUID

from ._sqlite_executor import GroupCommit
from ._sqlite_schema import decode, ts
from .model import JobRecord, JobStatus


class SQLiteRecovery:
    """Mixed into :class:`~gateway.store.sqlite.SQLiteStore` (its executor runs these)."""

    _executor: GroupCommit

    async def mark_queued(self, job_ids: Collection[UUID], *, at: datetime) -> None:
        rows = [{"id": str(job_id), "at": ts(at)} for job_id in job_ids]
        sql = "UPDATE jobs SET queued = :at WHERE id = :id AND queued IS NULL"
        if rows:
            await self._executor.run(lambda db: db.executemany(sql, rows))

    async def claim_recovery(self, job_id: UUID, *, at: datetime, lease: timedelta) -> bool:
        sql = (
            "UPDATE jobs SET recovering = :at WHERE id = :id AND status = 'accepted' AND "
            "attempt = 1 AND queued IS NULL AND (recovering IS NULL OR recovering < :expired)"
        )
        params = {"id": str(job_id), "at": ts(at), "expired": ts(at - lease)}

        def statement(db: sqlite3.Connection) -> bool:
            return db.execute(sql, params).rowcount == 1

        claimed: bool = await self._executor.run(statement)
        return claimed

    async def unqueued(
        self, *, service: str, before: datetime, limit: int = 100
    ) -> list[JobRecord]:
        sql = (
            "SELECT * FROM jobs WHERE service = :service AND status = 'accepted' "
            "AND queued IS NULL AND attempt = 1 AND created < :before ORDER BY created LIMIT :limit"
        )
        params = {"service": service, "before": ts(before), "limit": limit}

        def statement(db: sqlite3.Connection) -> list[JobRecord]:
            return [decode(row) for row in db.execute(sql, params)]

        records: list[JobRecord] = await self._executor.run(statement)
        return records

    async def stale(
        self,
        *,
        service: str,
        status: JobStatus,
        before: datetime,
        retried_before: datetime | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        if status is JobStatus.RUNNING:
            since, order = "started < :before", "started"
        else:
            since = "(attempt <= 1 AND created < :before OR attempt > 1 AND updated < :retried)"
            order = "created"
        sql = (
            f"SELECT * FROM jobs WHERE service = :service AND status = :status AND {since} "
            f"ORDER BY {order} LIMIT :limit"
        )
        params = {
            "service": service,
            "status": str(status),
            "before": ts(before),
            "retried": ts(retried_before or before),
            "limit": limit,
        }

        def statement(db: sqlite3.Connection) -> list[JobRecord]:
            return [decode(row) for row in db.execute(sql, params)]

        records: list[JobRecord] = await self._executor.run(statement)
        return records
