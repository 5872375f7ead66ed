"""The MongoDB store's reads of a service's load (the capacity figures) and of a job's place
in its queue: counts and a bounded read on the ``(service, status, created)`` and
``(service, finished)`` indexes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING

from ._mongo_codec import driver_errors
from .base import ServiceLoad
from .model import JobRecord, JobStatus

_STATUSES = sorted(str(s) for s in JobStatus)


async def create_indexes(jobs: Any) -> None:
    """The queue's and the completions' indexes."""
    await jobs.create_index([("service", ASCENDING), ("status", ASCENDING), ("created", ASCENDING)])
    await jobs.create_index(
        [("service", ASCENDING), ("finished", DESCENDING)],
        partialFilterExpression={"finished": {"$type": "date"}},
    )


async def service_load(
    jobs: Any, service: str, *, since: Sequence[datetime], sample: int
) -> ServiceLoad:
    name = str(service)
    with driver_errors():
        accepted = await jobs.count_documents({"service": name, "status": "accepted"})
        running = await jobs.count_documents({"service": name, "status": "running"})
        arrivals = [
            await jobs.count_documents(
                {"service": name, "status": {"$in": _STATUSES}, "created": {"$gte": cut}}
            )
            for cut in since
        ]
        completions = [
            await jobs.count_documents(
                {"service": name, "finished": {"$gte": cut}, "started": {"$type": "date"}}
            )
            for cut in since
        ]
        firsts = []
        for status in _STATUSES:
            first = await jobs.find_one(
                {"service": name, "status": status},
                {"created": 1},
                sort=[("created", ASCENDING)],
            )
            if first is not None:
                firsts.append(first["created"])
        docs = (
            await jobs.find(
                {"service": name, "finished": {"$type": "date"}, "started": {"$type": "date"}},
                {"created": 1, "started": 1, "finished": 1},
            )
            .sort("finished", DESCENDING)
            .limit(int(sample))
            .to_list(None)
        )
    runs = tuple(
        (
            max((doc["started"] - doc["created"]).total_seconds(), 0.0),
            max((doc["finished"] - doc["started"]).total_seconds(), 0.0),
        )
        for doc in docs
    )
    return ServiceLoad(
        accepted=int(accepted),
        running=int(running),
        arrivals=tuple(int(n) for n in arrivals),
        completions=tuple(int(n) for n in completions),
        first_created=min(firsts) if firsts else None,
        runs=runs,
    )


async def queue_position(jobs: Any, record: JobRecord) -> int:
    query = {
        "service": str(record.service),
        "status": str(JobStatus.ACCEPTED),
        "$or": [
            {"created": {"$lt": record.created}},
            {"created": record.created, "_id": {"$lt": str(record.id)}},
        ],
    }
    with driver_errors():
        return int(await jobs.count_documents(query))
