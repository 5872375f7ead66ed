"""The MongoDB store's part of recovery: the queries by which the gateway finds jobs whose task
may not be in a queue (never marked queued) and the sweeper finds jobs no event moved for too
long."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from pymongo import ASCENDING

from ._mongo_codec import driver_errors, to_record
from .model import JobRecord, JobStatus


class MongoRecovery:
    """Mixed into :class:`~gateway.store.mongo.MongoStore`."""

    @property
    def _collection(self) -> Any:
        raise NotImplementedError  # the store's jobs collection

    async def mark_queued(self, job_ids: Collection[UUID], *, at: datetime) -> None:
        if not job_ids:
            return
        with driver_errors():
            await self._collection.update_many(
                {"_id": {"$in": [str(j) for j in job_ids]}, "queued": {"$exists": False}},
                {"$set": {"queued": at}},
            )

    async def claim_recovery(self, job_id: UUID, *, at: datetime, lease: timedelta) -> bool:
        query = {
            "_id": str(job_id),
            "status": str(JobStatus.ACCEPTED),
            "queued": {"$exists": False},
            "attempt": 1,
            "$or": [{"recovering": {"$exists": False}}, {"recovering": {"$lt": at - lease}}],
        }
        with driver_errors():
            result = await self._collection.update_one(query, {"$set": {"recovering": at}})
        return int(result.modified_count) == 1

    async def unqueued(
        self, *, service: str, before: datetime, limit: int = 100
    ) -> list[JobRecord]:
        query = {
            "service": str(service),
            "status": str(JobStatus.ACCEPTED),
            "queued": {"$exists": False},
            "attempt": 1,
            "created": {"$lt": before},
        }
        with driver_errors():
            docs = (
                await self._collection.find(query)
                .sort("created", ASCENDING)
                .limit(int(limit))
                .to_list(None)
            )
        return [r for r in map(to_record, docs) if r is not None]

    async def stale(
        self,
        *,
        service: str,
        status: JobStatus,
        before: datetime,
        retried_before: datetime | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        query: dict[str, Any] = {"service": str(service), "status": str(status)}
        order = "started" if status is JobStatus.RUNNING else "created"
        if status is JobStatus.RUNNING:
            query["started"] = {"$lt": before}
        else:
            query["$or"] = [
                {"attempt": {"$lte": 1}, "created": {"$lt": before}},
                {"attempt": {"$gt": 1}, "updated": {"$lt": retried_before or before}},
            ]
        with driver_errors():
            docs = (
                await self._collection.find(query)
                .sort(order, ASCENDING)
                .limit(int(limit))
                .to_list(None)
            )
        return [r for r in map(to_record, docs) if r is not None]
