"""The MongoDB store's operations on the ``workers`` collection: heartbeats, goodbyes and the
live list."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any
from uuid import UUID

from pymongo.errors import DuplicateKeyError

from ._mongo_codec import driver_errors
from .model import WorkerInfo, WorkerState


async def heartbeat(
    workers: Any,
    worker: WorkerInfo,
    *,
    service: str,
    at: datetime,
    concurrency: int,
    running: Collection[UUID],
) -> None:
    """The newest heartbeat's fields win: the filter matches only a record seen no later than
    ``at``; a late heartbeat misses it, and its upsert then collides on ``_id`` (ignored)
    after lowering ``since`` if it is the earliest heard."""
    fields = {
        "service": str(service),
        "host": str(worker.host),
        "version": str(worker.version),
        "concurrency": int(concurrency),
        "running": [str(job) for job in running],
        "seen": at,
    }
    with driver_errors():
        try:
            await workers.update_one(
                {"_id": str(worker.id), "seen": {"$lte": at}},
                {"$set": fields, "$min": {"since": at}},
                upsert=True,
            )
        except DuplicateKeyError:
            await workers.update_one({"_id": str(worker.id)}, {"$min": {"since": at}})


async def create_indexes(workers: Any) -> None:
    """The live list's index: by service, recently seen."""
    await workers.create_index([("service", 1), ("seen", 1)])


async def worker_left(workers: Any, worker_id: str, *, at: datetime) -> None:
    with driver_errors():
        await workers.update_one(
            {"_id": str(worker_id), "gone": {"$exists": False}}, {"$set": {"gone": at}}
        )


async def forget_workers(workers: Any, *, before: datetime) -> int:
    with driver_errors():
        result = await workers.delete_many({"seen": {"$lt": before}})
    return int(result.deleted_count)


def live_filter(*, since: datetime, service: str | None) -> dict[str, Any]:
    query: dict[str, Any] = {"seen": {"$gt": since}, "gone": {"$exists": False}}
    if service is not None:
        query["service"] = str(service)
    return query


async def live_workers(workers: Any, *, since: datetime, service: str | None) -> list[WorkerState]:
    with driver_errors():
        docs = (
            await workers.find(live_filter(since=since, service=service))
            .sort([("service", 1), ("_id", 1)])
            .to_list(None)
        )
    return [
        WorkerState(
            id=doc["_id"],
            service=doc["service"],
            host=doc.get("host") or "",
            version=doc.get("version") or "",
            concurrency=doc.get("concurrency") or 0,
            running=tuple(doc.get("running") or ()),
            seen=doc["seen"],
            since=doc.get("since") or doc["seen"],
        )
        for doc in docs
    ]
