"""The jobs the SQLite store read lately, kept with their rows: a job read again unchanged is
not decoded again."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from ._sqlite_schema import decode
from .model import JobRecord


class RecentRows:
    """The jobs decoded lately by :meth:`~gateway.store.sqlite.SQLiteStore.get`, by id, each
    with its row: a job read again while its row is unchanged (a client polling it) is the
    same record, not decoded again (a tenth of a status read). The row read is compared
    whole with the one kept, so a record is served again only for exactly the data it was
    decoded from; :class:`JobRecord` is frozen, so one record serves every reader.

    At most ``rows`` rows are kept and at most ``chars`` characters of their text in all
    (a row with more than a sixteenth of that is never kept), the oldest dropped first.
    Reads run on the event loop and on the store's thread: a lock guards the bookkeeping.
    """

    def __init__(self, rows: int = 1024, chars: int = 4 << 20) -> None:
        self._rows = rows
        self._chars = chars
        self._kept: dict[str, tuple[tuple[Any, ...], JobRecord, int]] = {}
        self._size = 0
        self._lock = threading.Lock()

    def reader(self, job_id: str) -> Callable[[sqlite3.Connection], JobRecord | None]:
        """The statement reading the job ``job_id`` (``None``: there is no such job)."""

        def statement(db: sqlite3.Connection) -> JobRecord | None:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return None if row is None else self.decode(job_id, row)

        return statement

    def decode(self, job_id: str, row: sqlite3.Row) -> JobRecord:
        """The job ``job_id`` from its row of ``jobs``, as :func:`decode`."""
        values = tuple(row)
        known = self._kept.get(job_id)
        if known is not None and known[0] == values:
            return known[1]
        record = decode(row)
        size = sum(len(value) for value in values if isinstance(value, str))
        if size <= self._chars >> 4:
            with self._lock:
                self._drop(job_id)
                while self._kept and (
                    len(self._kept) >= self._rows or self._size + size > self._chars
                ):
                    self._drop(next(iter(self._kept)))  # the oldest
                self._kept[job_id] = (values, record, size)
                self._size += size
        return record

    def _drop(self, job_id: str) -> None:
        gone = self._kept.pop(job_id, None)
        if gone is not None:
            self._size -= gone[2]

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def chars(self) -> int:
        """The characters of text the rows kept hold."""
        return self._size
