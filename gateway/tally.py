"""Usage counters bumped by many requests at once: one store statement per counter and turn.

Every submission counts itself on its service's counter (the CANARIE monitoring routes show
the sum) and its answer waits until the count is stored, so a client that submits and then
reads the statistics sees its own job. The counts that arrive while one write is on its way
are added up and written by the next, as ``bump(name, by=n)``: under load, one statement serves
tens of submissions instead of one each. A submission the store counted with its insert (a
quiet gateway's, see :meth:`gateway.store.JobStore.insert`) is not counted here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from gateway.store import JobStore, StoreError

log = logging.getLogger("gateway")


class Tally:
    """Counters of one gateway process, written to ``store`` in batches."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._pending: Counter[str] = Counter()
        self._waiters: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None

    async def count(self, name: str) -> None:
        """Add one to ``name`` and return once it is stored (or could not be: logged)."""
        await self.add(name)

    def add(self, name: str) -> asyncio.Future[None]:
        """Add one to ``name`` now; the future is done once it is stored (or could not be:
        logged). A caller with more to do meanwhile awaits it after, with no task of its
        own."""
        self._pending[name] += 1
        stored = asyncio.get_running_loop().create_future()
        self._waiters.append(stored)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return stored

    async def _write(self) -> None:
        while self._pending:
            counts, self._pending = self._pending, Counter()
            waiters, self._waiters = self._waiters, []
            try:
                written = await asyncio.gather(
                    *(self._store.bump(n, by=c) for n, c in counts.items()),
                    return_exceptions=True,
                )
                for (name, by), outcome in zip(counts.items(), written, strict=True):
                    if isinstance(outcome, StoreError):
                        log.warning("usage counter %s not raised by %d: %s", name, by, outcome)
                    elif isinstance(outcome, BaseException):
                        raise outcome
            finally:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
