"""The webhooks' outbox: every change a subscriber is owed is queued, even when the gateway
that made it died right after the store's commit.

The record is the outbox. A job submitted with a ``subscriber`` is stored ``webhook_open``;
every change raises its ``seq``. Queuing the webhook of a change (a confirmed publish to
``{ns}.webhooks``) is followed by :meth:`~gateway.store.JobStore.mark_webhook` with that
change's ``seq``; the terminal state's mark also closes the job. So a job owes a webhook
exactly while it is open with ``webhook_seq < seq``, whatever happened to the process that
made the change:

1. **At once.** The process that made a change hears of it (:meth:`WebhookOutbox.owe`, from
   :class:`~gateway.changes.Changes`) and queues its webhook within a fraction of a second;
   changes of one job that come faster are coalesced to the latest.
2. **Sweep.** Every ``interval``, any gateway looks for jobs that still owe one and were last
   changed longer ago than a publish can take, and queues the webhook of their current state.

A webhook may be queued twice (a sweep racing a slow mark): both copies carry the same
``webhook-id``, and the deliverer skips an event already delivered. Progress that moves on
before its webhook is queued is reported at its latest, not step by step.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import suppress
from datetime import UTC, datetime, timedelta

from gateway.broker import Broker, BrokerDown, PublishRefused
from gateway.store import JobRecord, JobStore, StoreError
from gateway.webhooks import webhook_for

log = logging.getLogger("gateway.webhooks")

BATCH = 64
FLUSH_INTERVAL = 0.25
OWED_PER_SWEEP = 500


class WebhookOutbox:
    """Queues the webhooks of the changes this process makes, and sweeps for lost ones."""

    def __init__(
        self,
        store: JobStore,
        broker: Broker,
        *,
        public_url: str | None,
        interval: float,
        older_than: float,
    ) -> None:
        self._store = store
        self._broker = broker
        self._public_url = public_url
        self._interval = interval
        self._older_than = timedelta(seconds=older_than)
        self._due: dict[uuid.UUID, JobRecord] = {}
        self._wake = asyncio.Event()
        self.queued = 0

    def owe(self, record: JobRecord) -> None:
        """This process changed a job: queue its webhook soon (if it has a subscriber)."""
        if not record.webhook_open:
            return
        known = self._due.get(record.id)
        if known is None or known.seq < record.seq:
            self._due[record.id] = record
            self._wake.set()

    async def run(self) -> None:
        """Queue due webhooks and sweep until cancelled; the first sweep runs at once."""
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while True:
            await self._flush()
            if loop.time() >= next_sweep:
                await self.sweep(datetime.now(UTC))
                next_sweep = loop.time() + self._interval
            # asyncio.timeout, not wait_for: see gateway.recovery.
            with suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_INTERVAL):
                    await self._wake.wait()
            self._wake.clear()

    async def _flush(self) -> None:
        while self._due:
            batch = list(self._due.values())[:BATCH]
            for record in batch:
                if self._due.get(record.id) is record:
                    del self._due[record.id]
            await asyncio.gather(*(self._queue(record) for record in batch))

    async def sweep(self, now: datetime) -> int:
        """Queue the webhook of every job that still owes one (changed before ``now`` less
        the time a publish may take); how many were queued."""
        try:
            owed = await self._store.owed_webhooks(
                before=now - self._older_than, limit=OWED_PER_SWEEP
            )
        except StoreError as exc:
            log.warning("webhook sweep postponed: %s", exc)
            return 0
        if owed:
            log.info("%d job(s) owe a webhook their gateway did not queue; queuing", len(owed))
        done = 0
        for start in range(0, len(owed), BATCH):
            outcomes = await asyncio.gather(
                *(self._queue(record) for record in owed[start : start + BATCH])
            )
            done += sum(outcomes)
        return done

    async def _queue(self, record: JobRecord) -> bool:
        """Queue the webhook ``record``'s change owes (if any), then mark it; a failure leaves
        the job owing, for the sweep."""
        task = webhook_for(record, self._public_url)
        try:
            if task is not None:
                await self._broker.publish_webhook(task.to_bytes(), job_id=record.id, delay=None)
            await self._store.mark_webhook(record.id, seq=record.seq, close=record.status.terminal)
        except (BrokerDown, PublishRefused, StoreError) as exc:
            log.warning("job %s: webhook not queued yet (%s); the sweep will", record.id, exc)
            return False
        except Exception:
            # Whatever one record meets, the others' webhooks must still go.
            log.exception("job %s: webhook not queued; the sweep will try again", record.id)
            return False
        if task is not None:
            self.queued += 1
            log.debug("job %s: webhook %s queued", record.id, task.event_id)
        return task is not None
