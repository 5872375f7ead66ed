"""Job persistence: one async interface (:class:`JobStore`), one implementation per backend."""

from __future__ import annotations

from .base import JobStore, StoreError
from .model import ACTIVE, TERMINAL, JobRecord, JobStatus, Reason, WorkerInfo
from .sqlite import SQLiteStore

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "Reason",
    "SQLiteStore",
    "StoreError",
    "WorkerInfo",
    "open_store",
]


def open_store(url: str) -> JobStore:
    """Build (not yet open) the store named by ``url``: ``sqlite:///<path>``."""
    prefix = "sqlite:///"
    if url.startswith(prefix):
        return SQLiteStore(url.removeprefix(prefix) or ":memory:")
    raise ValueError(f"unsupported store URL {url!r}: expected sqlite:///<path>")
