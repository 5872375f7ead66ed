"""Job persistence: one async interface (:class:`JobStore`), one implementation per backend."""

from __future__ import annotations

from .base import DuplicateJob, JobQuery, JobStore, ServiceLoad, StoreError, StoreRejected
from .model import (
    ACTIVE,
    TERMINAL,
    Delivery,
    JobRecord,
    JobStatus,
    LegacyFields,
    Reason,
    WebhookAttempt,
    WebhookDelivery,
    WorkerInfo,
    WorkerState,
    new_job_id,
)
from .mongo import MongoStore
from .sqlite import SQLiteStore

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "Delivery",
    "DuplicateJob",
    "JobQuery",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "LegacyFields",
    "MongoStore",
    "Reason",
    "SQLiteStore",
    "ServiceLoad",
    "StoreError",
    "StoreRejected",
    "WebhookAttempt",
    "WebhookDelivery",
    "WorkerInfo",
    "WorkerState",
    "new_job_id",
    "open_store",
]


def open_store(url: str) -> JobStore:
    """Build (not yet open) the store named by ``url``: ``sqlite:///<path>`` or
    ``mongodb://...`` / ``mongodb+srv://...`` (the database is the URL's path, else
    ``servicegateway``)."""
    prefix = "sqlite:///"
    if url.startswith(prefix):
        return SQLiteStore(url.removeprefix(prefix) or ":memory:")
    if url.startswith(("mongodb://", "mongodb+srv://")):
        return MongoStore(url)
    raise ValueError(f"unsupported store URL {url!r}: expected sqlite:///<path> or mongodb://...")
