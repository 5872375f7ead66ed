"""The production store: MongoDB through PyMongo's async API (``AsyncMongoClient``).

Every state change is one ``find_one_and_update`` whose filter carries the rule (terminal
states sticky, progress rising within a run), so gateway replicas never race through a
read-modify-write (an end's corrections, of its times or its worker, are updates too: each
raises ``seq``). Filters are built from typed values only; no request JSON reaches them.
The client is created in :meth:`open`, inside the running loop it is bound to.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pymongo import DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.errors import (
    PyMongoError,
)

from worker_sdk.wire import ErrorInfo

from . import _mongo_load as _load
from . import _mongo_workers as _workers
from ._mongo_codec import (
    create_indexes,
    driver_errors,
    not_before_created,
    page_filter,
    to_document,
    to_record,
)
from ._mongo_recovery import MongoRecovery
from ._mongo_webhooks import MongoWebhooks, create_webhook_indexes
from .base import JobQuery, ServiceLoad, StoreError
from .model import ACTIVE, TERMINAL, JobRecord, JobStatus, WorkerInfo, WorkerState

DEFAULT_DATABASE = "servicegateway"

ClientFactory = Callable[[], Any]


class MongoStore(MongoWebhooks, MongoRecovery):
    """:class:`~gateway.store.base.JobStore` on a MongoDB database (replica set in production)."""

    def __init__(
        self,
        url: str,
        *,
        database: str | None = None,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self._url = url
        self._database = database
        self._factory = client_factory or (
            lambda: AsyncMongoClient(url, tz_aware=True, uuidRepresentation="standard")
        )
        self._client: Any = None
        self._jobs: Any = None
        self._counters: Any = None
        self._tombstones: Any = None
        self._workers: Any = None
        self._deliveries: Any = None

    async def open(self) -> None:
        try:
            self._client = self._factory()
            database = (
                self._client[self._database]
                if self._database
                else self._client.get_default_database(DEFAULT_DATABASE)
            )
            self._jobs = database["jobs"]
            self._counters = database["counters"]
            self._tombstones = database["tombstones"]
            self._workers = database["workers"]
            self._deliveries = database["webhook_deliveries"]
            await self._client.admin.command("ping")
            await create_indexes(self._jobs)
            await create_webhook_indexes(self._jobs, self._deliveries)
            await _load.create_indexes(self._jobs)
            await _workers.create_indexes(self._workers)
        except PyMongoError as exc:
            await self.close()
            raise StoreError(f"cannot open the MongoDB store: {exc}") from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            closing = client.close()
            if inspect.isawaitable(closing):
                await closing

    @property
    def _collection(self) -> Any:
        if self._jobs is None or self._client is None:
            raise StoreError("the MongoDB store is not open")
        return self._jobs

    async def ping(self) -> None:
        if self._client is None:
            raise StoreError("the MongoDB store is not open")
        try:
            await self._client.admin.command("ping")
        except PyMongoError as exc:
            raise StoreError(f"MongoDB unavailable: {exc}") from exc

    async def insert(self, record: JobRecord, *, counter: str | None = None) -> bool:
        """The job's document; the count is the caller's (batched, one update per counter
        for many submissions: a count here would be a second write of the request's)."""
        with driver_errors():
            await self._collection.insert_one(to_document(record))
        return False

    async def find_by_key(self, owner: str, key: str) -> JobRecord | None:
        with driver_errors():
            doc = await self._collection.find_one(
                {"owner": str(owner), "idempotency_key": str(key)}
            )
        return to_record(doc)

    async def release_key(self, job_id: UUID) -> None:
        with driver_errors():
            await self._collection.update_one(
                {"_id": str(job_id)}, {"$unset": {"idempotency_key": ""}}
            )

    async def get(self, job_id: UUID) -> JobRecord | None:
        with driver_errors():
            return to_record(await self._collection.find_one({"_id": str(job_id)}))

    async def owners(self, job_ids: Collection[UUID]) -> dict[UUID, str]:
        ids = [str(job_id) for job_id in job_ids]
        with driver_errors():
            docs = await self._collection.find({"_id": {"$in": ids}}, {"owner": 1}).to_list(None)
        return {UUID(doc["_id"]): doc["owner"] for doc in docs}

    async def page_jobs(self, query: JobQuery) -> list[JobRecord]:
        with driver_errors():
            cursor = (
                self._collection.find(page_filter(query))
                .sort([("created", DESCENDING), ("_id", DESCENDING)])
                .limit(int(query.limit))
            )
            docs = await cursor.to_list(None)
        return [r for r in map(to_record, docs) if r is not None]

    async def service_load(
        self, service: str, *, since: Sequence[datetime], sample: int = 500
    ) -> ServiceLoad:
        return await _load.service_load(self._collection, service, since=since, sample=sample)

    async def queue_position(self, record: JobRecord) -> int:
        return await _load.queue_position(self._collection, record)

    async def count_active(self, owner: str) -> int:
        query = {"owner": str(owner), "status": {"$in": sorted(str(s) for s in ACTIVE)}}
        with driver_errors():
            return int(await self._collection.count_documents(query))

    async def purge(self, job_id: UUID, *, at: datetime) -> JobRecord | None:
        return await self._update(
            {
                "_id": str(job_id),
                "status": {"$in": sorted(str(s) for s in TERMINAL)},
                "purged": {"$exists": False},
            },
            {"$set": {"purged": at, "updated": at}, "$unset": {"result": ""}, "$inc": {"seq": 1}},
        )

    async def expire(self, now: datetime, *, limit: int = 1000) -> int:
        if self._tombstones is None:
            raise StoreError("the MongoDB store is not open")
        with driver_errors():
            docs = (
                await self._collection.find({"expires_at": {"$lte": now}}, {"_id": 1, "owner": 1})
                .limit(int(limit))
                .to_list(None)
            )
            for doc in docs:
                await self._tombstones.update_one(
                    {"_id": doc["_id"]},
                    {"$set": {"owner": doc["owner"], "expired": now}},
                    upsert=True,
                )
            if docs:
                ids = [d["_id"] for d in docs]
                await self._collection.delete_many({"_id": {"$in": ids}})
                await self._webhooks.delete_many({"job_id": {"$in": ids}})
        return len(docs)

    async def tombstone(self, job_id: UUID) -> str | None:
        if self._tombstones is None:
            raise StoreError("the MongoDB store is not open")
        with driver_errors():
            doc = await self._tombstones.find_one({"_id": str(job_id)})
        return str(doc["owner"]) if doc is not None else None

    async def heartbeat(
        self,
        worker: WorkerInfo,
        *,
        service: str,
        at: datetime,
        concurrency: int = 0,
        running: Collection[UUID] = (),
    ) -> None:
        await _workers.heartbeat(
            self._worker_docs,
            worker,
            service=service,
            at=at,
            concurrency=concurrency,
            running=running,
        )

    async def worker_left(self, worker_id: str, *, at: datetime) -> None:
        await _workers.worker_left(self._worker_docs, worker_id, at=at)

    async def forget_workers(self, *, before: datetime) -> int:
        return await _workers.forget_workers(self._worker_docs, before=before)

    async def live_workers(
        self, *, since: datetime, service: str | None = None
    ) -> list[WorkerState]:
        return await _workers.live_workers(self._worker_docs, since=since, service=service)

    @property
    def _worker_docs(self) -> Any:
        if self._workers is None:
            raise StoreError("the MongoDB store is not open")
        return self._workers

    async def last_heartbeat(self, worker_id: str) -> datetime | None:
        if self._workers is None:
            raise StoreError("the MongoDB store is not open")
        with driver_errors():
            doc = await self._workers.find_one({"_id": str(worker_id)})
        return doc["seen"] if doc is not None else None

    async def bump(self, counter: str, by: int = 1) -> None:
        if self._counters is None:
            raise StoreError("the MongoDB store is not open")
        with driver_errors():
            await self._counters.update_one(
                {"_id": str(counter)},
                {"$inc": {"value": int(by)}, "$setOnInsert": {"since": datetime.now(UTC)}},
                upsert=True,
            )

    async def counter_since(self, counter: str) -> datetime | None:
        if self._counters is None:
            raise StoreError("the MongoDB store is not open")
        with driver_errors():
            doc = await self._counters.find_one({"_id": str(counter)})
        return doc.get("since") if doc is not None else None

    async def active_workers(self, service: str, *, since: datetime) -> int:
        query = _workers.live_filter(since=since, service=service)
        with driver_errors():
            return int(await self._worker_docs.count_documents(query))

    async def counters(self, prefix: str = "") -> dict[str, int]:
        if self._counters is None:
            raise StoreError("the MongoDB store is not open")
        query = {"_id": {"$regex": "^" + re.escape(prefix)}} if prefix else {}
        with driver_errors():
            docs = await self._counters.find(query).to_list(None)
        return {str(d["_id"]): int(d["value"]) for d in docs}

    async def start(
        self, job_id: UUID, *, attempt: int, run_id: UUID, worker: WorkerInfo, at: datetime
    ) -> JobRecord | None:
        return await self._update(
            {
                "_id": str(job_id),
                "status": {"$in": sorted(str(s) for s in ACTIVE)},
                "attempt": {"$lte": int(attempt)},
                "run_id": {"$ne": str(run_id)},
            },
            {
                "$set": {
                    "status": str(JobStatus.RUNNING),
                    "attempt": int(attempt),
                    "run_id": str(run_id),
                    "progress": 0,
                    "progress_seq": 0,
                    "worker": worker.model_dump(),
                },
                "$max": {"updated": at},
                "$unset": {"message": ""},
                "$min": {"started": at},
                "$inc": {"seq": 1},
            },
        )

    async def retrying(
        self, job_id: UUID, *, attempt: int, message: str, at: datetime
    ) -> JobRecord | None:
        return await self._update(
            {
                "_id": str(job_id),
                "status": {"$in": sorted(str(s) for s in ACTIVE)},
                "attempt": {"$lt": int(attempt)},
            },
            {
                "$set": {
                    "status": str(JobStatus.ACCEPTED),
                    "attempt": int(attempt),
                    "progress": 0,
                    "progress_seq": 0,
                    "message": message,
                    "updated": at,
                },
                "$unset": {"run_id": ""},
                "$inc": {"seq": 1},
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
            {
                "_id": str(job_id),
                "status": str(JobStatus.RUNNING),
                "run_id": str(run_id),
                "progress_seq": {"$lt": int(seq)},
                "progress": {"$lte": int(percent)},
            },
            {
                "$set": {
                    "progress": int(percent),
                    "message": message,
                    "progress_seq": int(seq),
                    "updated": at,
                },
                "$inc": {"seq": 1},
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
        changes: dict[str, Any] = {"status": str(status), "finished": at}
        if reason is not None:
            changes["reason"] = str(reason)
        if status is JobStatus.SUCCESSFUL:
            changes["result"] = result
            changes["progress"] = 100
        if error is not None:
            changes["error"] = error.model_dump()
        query: dict[str, Any] = {"_id": str(job_id), "status": {"$in": sorted(map(str, only_from))}}
        if attempt is not None:  # a run's end changes nothing of a later attempt
            changes["attempt"], query["attempt"] = int(attempt), {"$lte": int(attempt)}
        if expires_at is not None:
            changes["expires_at"] = expires_at
        update: dict[str, Any] = {"$set": changes, "$inc": {"seq": 1}, "$max": {"updated": at}}
        if started is not None:
            update["$min"] = {"started": started}
        record = await self._update(query, update)
        if record is not None and record.worker is None and worker is not None:
            # An unannounced run's end names its worker, where no start did; a change: new seq.
            record = (
                await self._update(
                    {"_id": str(job_id), "worker": {"$exists": False}},
                    {"$set": {"worker": worker.model_dump()}, "$inc": {"seq": 1}},
                )
                or record
            )
        return record

    async def _update(self, query: dict[str, Any], update: dict[str, Any]) -> JobRecord | None:
        with driver_errors():
            doc = await self._collection.find_one_and_update(
                query, update, return_document=ReturnDocument.AFTER
            )
        return await not_before_created(self._update, to_record(doc))
