"""Job persistence: one async interface (:class:`JobStore`), one implementation per backend.

:class:`MongoStore` is imported on first use: PyMongo takes about 0.35 s to import, a sixth
of a gateway's start-up, and a gateway on SQLite, a worker and the client commands never use
it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
from .sqlite import SQLiteStore

if TYPE_CHECKING:
    from .mongo import MongoStore

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
        from .mongo import MongoStore

        return MongoStore(url)
    raise ValueError(f"unsupported store URL {url!r}: expected sqlite:///<path> or mongodb://...")


def __getattr__(name: str) -> Any:
    if name == "MongoStore":
        from .mongo import MongoStore

        return MongoStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
