"""The SQLite store's part of the webhooks: the outbox's marks on the jobs table, and the
deliveries' attempts in a table of their own."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any
from uuid import UUID

from ._sqlite_executor import GroupCommit
from ._sqlite_schema import decode, ts
from .model import JobRecord, WebhookAttempt, WebhookDelivery

WEBHOOK_SCHEMA = """
CREATE INDEX IF NOT EXISTS jobs_webhook_open ON jobs (updated) WHERE webhook_open = 1;
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    type TEXT NOT NULL,
    url TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_attempt TEXT,
    last_attempt TEXT,
    last_status INTEGER,
    last_error TEXT,
    next_attempt TEXT,
    delivered TEXT,
    exhausted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_job ON webhook_deliveries (job_id, first_attempt);
"""

_RECORD_ATTEMPT = """
INSERT INTO webhook_deliveries (id, job_id, type, url, attempts, first_attempt, last_attempt,
    last_status, last_error, next_attempt, delivered, exhausted)
SELECT :id, :job_id, :type, :url, 1, :at, :at, :status, :error, :next, :delivered, :exhausted
WHERE EXISTS (SELECT 1 FROM jobs WHERE id = :job_id)
ON CONFLICT (id) DO UPDATE SET attempts = attempts + 1, last_attempt = :at,
    first_attempt = COALESCE(first_attempt, :at),
    last_status = :status, last_error = :error, next_attempt = :next,
    delivered = COALESCE(delivered, :delivered), exhausted = max(exhausted, :exhausted)
"""

_DEFER = """
INSERT INTO webhook_deliveries (id, job_id, type, url, next_attempt)
SELECT :id, :job_id, :type, :url, :next WHERE EXISTS (SELECT 1 FROM jobs WHERE id = :job_id)
ON CONFLICT (id) DO UPDATE SET next_attempt = :next
    WHERE delivered IS NULL AND exhausted = 0
"""


def _delivery(row: sqlite3.Row) -> WebhookDelivery:
    data: dict[str, Any] = dict(row)
    data["exhausted"] = bool(data["exhausted"])
    return WebhookDelivery.model_validate(data)


class SQLiteWebhooks:
    """Mixed into :class:`~gateway.store.sqlite.SQLiteStore` (its executor runs these)."""

    _executor: GroupCommit

    async def owed_webhooks(self, *, before: datetime, limit: int = 100) -> list[JobRecord]:
        sql = (
            "SELECT * FROM jobs WHERE webhook_open = 1 AND webhook_seq < seq "
            "AND updated < :before ORDER BY updated LIMIT :limit"
        )
        params = {"before": ts(before), "limit": limit}

        def statement(db: sqlite3.Connection) -> list[JobRecord]:
            return [decode(row) for row in db.execute(sql, params)]

        records: list[JobRecord] = await self._executor.run(statement)
        return records

    async def mark_webhook(self, job_id: UUID, *, seq: int, close: bool) -> None:
        sql = (
            "UPDATE jobs SET webhook_seq = max(webhook_seq, :seq), "
            "webhook_open = CASE WHEN :close THEN 0 ELSE webhook_open END "
            "WHERE id = :id AND webhook_open = 1"
        )
        params = {"id": str(job_id), "seq": seq, "close": int(close)}
        await self._executor.run(lambda db: db.execute(sql, params))

    async def record_webhook_attempt(self, attempt: WebhookAttempt) -> None:
        params = {
            "id": attempt.event_id,
            "job_id": str(attempt.job_id),
            "type": attempt.type,
            "url": attempt.url,
            "at": ts(attempt.at),
            "status": attempt.status_code,
            "error": attempt.error,
            "next": ts(attempt.next_attempt),
            "delivered": ts(attempt.at) if attempt.delivered else None,
            "exhausted": int(attempt.exhausted),
        }
        await self._executor.run(lambda db: db.execute(_RECORD_ATTEMPT, params))

    async def defer_webhook(
        self, *, event_id: str, job_id: UUID, type: str, url: str, due: datetime
    ) -> None:
        params = {"id": event_id, "job_id": str(job_id), "type": type, "url": url, "next": ts(due)}
        await self._executor.run(lambda db: db.execute(_DEFER, params))

    async def webhook_delivery(self, event_id: str) -> WebhookDelivery | None:
        def statement(db: sqlite3.Connection) -> WebhookDelivery | None:
            row = db.execute("SELECT * FROM webhook_deliveries WHERE id = ?", (event_id,))
            found = row.fetchone()
            return _delivery(found) if found is not None else None

        delivery: WebhookDelivery | None = await self._executor.run(statement)
        return delivery

    async def webhook_deliveries(self, job_id: UUID) -> list[WebhookDelivery]:
        sql = "SELECT * FROM webhook_deliveries WHERE job_id = ? ORDER BY first_attempt, id"

        def statement(db: sqlite3.Connection) -> list[WebhookDelivery]:
            return [_delivery(row) for row in db.execute(sql, (str(job_id),))]

        deliveries: list[WebhookDelivery] = await self._executor.run(statement)
        return deliveries
