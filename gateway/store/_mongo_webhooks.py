"""The MongoDB store's part of the webhooks: the outbox's marks on the jobs collection, and
the deliveries' attempts in a collection of their own (``_id``: the event's webhook-id)."""

from __future__ import annotations

from contextlib import suppress
from datetime import datetime
from typing import Any
from uuid import UUID

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from ._mongo_codec import driver_errors, to_record
from .base import StoreError
from .model import JobRecord, WebhookAttempt, WebhookDelivery


async def create_webhook_indexes(jobs: Any, deliveries: Any) -> None:
    """The outbox sweep's index (only jobs that may owe a webhook), and the job's list."""
    await jobs.create_index(
        [("updated", ASCENDING)],
        partialFilterExpression={"webhook_open": True},
        name="webhook_open_updated",
    )
    await deliveries.create_index([("job_id", ASCENDING), ("first_attempt", ASCENDING)])


def _delivery(doc: dict[str, Any]) -> WebhookDelivery:
    return WebhookDelivery.model_validate({**doc, "id": doc["_id"]})


class MongoWebhooks:
    """Mixed into :class:`~gateway.store.mongo.MongoStore`."""

    _deliveries: Any

    @property
    def _collection(self) -> Any:
        raise NotImplementedError  # the store's jobs collection

    @property
    def _webhooks(self) -> Any:
        if self._deliveries is None:
            raise StoreError("the MongoDB store is not open")
        return self._deliveries

    async def owed_webhooks(self, *, before: datetime, limit: int = 100) -> list[JobRecord]:
        query = {
            "webhook_open": True,
            "updated": {"$lt": before},
            "$expr": {"$lt": ["$webhook_seq", "$seq"]},
        }
        with driver_errors():
            docs = (
                await self._collection.find(query)
                .sort("updated", ASCENDING)
                .limit(int(limit))
                .to_list(None)
            )
        return [r for r in map(to_record, docs) if r is not None]

    async def mark_webhook(self, job_id: UUID, *, seq: int, close: bool) -> None:
        update: dict[str, Any] = {"$max": {"webhook_seq": int(seq)}}
        if close:
            update["$set"] = {"webhook_open": False}
        with driver_errors():
            await self._collection.update_one({"_id": str(job_id), "webhook_open": True}, update)

    async def record_webhook_attempt(self, attempt: WebhookAttempt) -> None:
        update: dict[str, Any] = {
            "$inc": {"attempts": 1},
            "$set": {
                "last_attempt": attempt.at,
                "last_status": attempt.status_code,
                "last_error": attempt.error,
                "next_attempt": attempt.next_attempt,
            },
            "$setOnInsert": {
                "job_id": str(attempt.job_id),
                "type": str(attempt.type),
                "url": str(attempt.url),
            },
            # $min sets a missing field: a delivery deferred before its first attempt has none.
            "$min": {"first_attempt": attempt.at},
        }
        if attempt.delivered:
            update["$min"]["delivered"] = attempt.at
        if attempt.exhausted:
            update["$set"]["exhausted"] = True
        if not await self._job_exists(attempt.job_id):
            return
        with driver_errors():
            await self._webhooks.update_one({"_id": str(attempt.event_id)}, update, upsert=True)

    async def _job_exists(self, job_id: UUID) -> bool:
        """Whether the job is still there: a delivery outliving its job (removed by
        retention while its schedule went on) is not recorded, as nothing would remove it."""
        with driver_errors():
            found = await self._collection.find_one({"_id": str(job_id)}, {"_id": 1})
        return found is not None

    async def defer_webhook(
        self, *, event_id: str, job_id: UUID, type: str, url: str, due: datetime
    ) -> None:
        # One upsert: a delivered or exhausted document fails the filter, whose upsert then
        # collides with it on _id (duplicate key): left as it is.
        settled = {"$or": [{"delivered": {"$type": "date"}}, {"exhausted": True}]}
        update = {
            "$set": {"next_attempt": due},
            "$setOnInsert": {"job_id": str(job_id), "type": type, "url": url, "attempts": 0},
        }
        if not await self._job_exists(job_id):
            return
        with driver_errors(), suppress(DuplicateKeyError):
            await self._webhooks.update_one(
                {"_id": event_id, "$nor": [settled]}, update, upsert=True
            )

    async def webhook_delivery(self, event_id: str) -> WebhookDelivery | None:
        with driver_errors():
            doc = await self._webhooks.find_one({"_id": str(event_id)})
        return _delivery(doc) if doc is not None else None

    async def webhook_deliveries(self, job_id: UUID) -> list[WebhookDelivery]:
        with driver_errors():
            docs = (
                await self._webhooks.find({"job_id": str(job_id)})
                .sort([("first_attempt", ASCENDING), ("_id", ASCENDING)])
                .to_list(None)
            )
        return [_delivery(doc) for doc in docs]
