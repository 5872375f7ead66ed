"""Delivering webhooks: one signed POST per attempt, retried with backoff from the broker.

The consumer of ``{ns}.webhooks`` makes one attempt per message:

1. An event already delivered (a duplicate the outbox queued), or one this process is
   attempting right now (a redelivered copy meeting its own retry), is acked and skipped:
   the attempt in flight delivers it or schedules its next attempt itself. One whose
   receiver (scheme, host, port) already has ``host_concurrency`` attempts of this process in
   flight is deferred: queued again for the first retry delay, its attempt not counted, so
   that a receiver that answers slowly or not at all holds back no other receiver's events.
2. The URI is checked against the webhooks' URL policy again, now, and the request goes to
   the very address that was checked (the host name kept for ``Host`` and TLS), so a name
   that resolves elsewhere since the submission (DNS rebinding) reaches nothing forbidden.
   Redirects are not followed.
3. A 2xx answer delivers the event. Anything else (another status, a refused address, a
   timeout, a connection error) is a failed attempt: while the schedule lasts, the next
   attempt is published to the holding queue of its delay (it comes back when its TTL
   ends), else the delivery is given up (``exhausted``).
4. The attempt is recorded on the job (``GET /jobs/{id}/webhooks``), then the message acked.

A gateway that dies mid-attempt leaves the message unacked: the broker hands it to another
(a repeat the receiver tells by its ``webhook-id``). A store that is down is retried in
place; a retry the broker does not confirm puts the message back in the queue; the queue's
delivery limit parks a message that keeps failing so in the poison queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import httpx
from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError
from standardwebhooks import Webhook

from gateway.broker import Broker, BrokerDown, PublishRefused
from gateway.metrics import Metrics
from gateway.store import JobStore, StoreError, StoreRejected, WebhookAttempt
from gateway.webhooks import WebhookTask, headers
from worker_sdk.wire import settle
from worker_sdk.wire.urls import UrlPolicy, UrlRefused, aresolve, pin

log = logging.getLogger("gateway.webhooks")

T = TypeVar("T")
STORE_RETRY_FIRST = 0.5
STORE_RETRY_MAX = 10.0
USER_AGENT = "ServiceGateway-Webhooks/0.1"
MAX_ERROR = 500


class WebhookDeliverer:
    """Makes webhook attempts; :meth:`on_message` consumes ``{ns}.webhooks``."""

    def __init__(
        self,
        store: JobStore,
        broker: Broker,
        *,
        signers: Sequence[Webhook],
        policy: UrlPolicy,
        delays: Sequence[int],
        timeout: float,
        host_concurrency: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``host_concurrency``: attempts in flight to one receiver at most (``None``: no
        limit); a limit needs a retry schedule to defer with, and has none without one."""
        self._metrics = metrics
        self._store = store
        self._broker = broker
        self._signers = tuple(signers)
        self._policy = policy
        self._delays = tuple(delays)
        self._timeout = timeout
        # No environment proxies: the request must reach the address the policy checked.
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)
        self._in_flight: set[str] = set()
        self._host_limit = host_concurrency if self._delays else None
        self._per_host: Counter[tuple[str, str, int]] = Counter()

    async def close(self) -> None:
        await self._client.aclose()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        """Consumer of ``{ns}.webhooks``: one attempt, recorded, then ack (see the module)."""
        try:
            task = WebhookTask.model_validate_json(message.body)
        except ValidationError:
            log.warning("message %r on webhooks is no delivery; set aside", message.message_id)
            await settle(message, "reject")
            return
        try:
            outcome = await self._deliver(task)
        except (BrokerDown, PublishRefused) as exc:
            log.warning("webhook %s: next attempt not queued (%s); retrying", task.event_id, exc)
            await settle(message, "requeue")
            return
        except StoreRejected:
            log.exception("webhook %s: the store refused its attempt; set aside", task.event_id)
            await settle(message, "reject")
            return
        except Exception:
            log.exception("webhook %s failed; set aside", task.event_id)
            await settle(message, "reject")
            return
        log.debug("webhook %s attempt %d: %s", task.event_id, task.attempt, outcome)
        await settle(message, "ack")

    async def _deliver(self, task: WebhookTask) -> str:
        if task.event_id in self._in_flight:
            return "being attempted already"
        receiver = self._receiver(task.url)
        if (
            receiver is not None
            and self._host_limit is not None
            and self._per_host[receiver] >= self._host_limit
        ):
            return await self._defer(task)
        self._in_flight.add(task.event_id)
        if receiver is not None:
            self._per_host[receiver] += 1
        try:
            return await self._attempt_once(task)
        finally:
            self._in_flight.discard(task.event_id)
            if receiver is not None:
                self._per_host[receiver] -= 1
                if not self._per_host[receiver]:
                    del self._per_host[receiver]

    def _receiver(self, url: str) -> tuple[str, str, int] | None:
        """The receiver an attempt goes to (``None``: a URL the policy refuses outright,
        which its attempt then says)."""
        try:
            return self._policy.split(url)
        except UrlRefused:
            return None

    async def _defer(self, task: WebhookTask) -> str:
        """Queue the same attempt again, due after the first retry delay."""
        delay = self._delays[0]
        await self._broker.publish_webhook(task.to_bytes(), job_id=task.job_id, delay=delay)
        if self._metrics is not None:
            self._metrics.webhook_attempts.labels(task.type, "deferred").inc()
        return f"deferred {delay}s: its receiver has {self._host_limit} attempts in flight"

    async def _attempt_once(self, task: WebhookTask) -> str:
        known = await self._with_store(lambda: self._store.webhook_delivery(task.event_id))
        if known is not None and known.delivered is not None:
            return "already delivered"
        at = datetime.now(UTC)
        status, error = await self.attempt(task, at)
        delivered = error is None
        delay = (
            None
            if delivered or task.attempt > len(self._delays)
            else self._delays[task.attempt - 1]
        )
        attempt = WebhookAttempt(
            event_id=task.event_id,
            job_id=task.job_id,
            type=task.type,
            url=task.url,
            at=at,
            status_code=status,
            error=error,
            delivered=delivered,
            next_attempt=at + timedelta(seconds=delay) if delay is not None else None,
            exhausted=not delivered and delay is None,
        )
        await self._with_store(lambda: self._store.record_webhook_attempt(attempt))
        if self._metrics is not None:
            outcome = "delivered" if delivered else "failed" if delay is None else "retrying"
            self._metrics.webhook_attempts.labels(task.type, outcome).inc()
        if delay is not None:
            await self._broker.publish_webhook(
                task.next_attempt().to_bytes(), job_id=task.job_id, delay=delay
            )
            return f"failed ({error}); next attempt in {delay}s"
        if not delivered:
            log.warning(
                "webhook %s to %s given up after %d attempts: %s",
                task.event_id,
                task.url,
                task.attempt,
                error,
            )
            return f"failed ({error}); given up"
        return "delivered"

    async def attempt(self, task: WebhookTask, at: datetime) -> tuple[int | None, str | None]:
        """POST the event once: (HTTP status, ``None``) when delivered, else (status or
        ``None``, why not)."""
        try:
            scheme, host, port = self._policy.split(task.url)
            async with asyncio.timeout(self._timeout):
                addresses = await aresolve(host, port)
            self._policy.check_resolved(host, addresses)
        except UrlRefused as exc:
            return None, f"refused by the URL policy: {exc}"[:MAX_ERROR]
        except TimeoutError:
            return None, f"resolving {host} took longer than {self._timeout:g}s"
        target = pin(task.url, scheme, host, port, addresses[0])
        sent = {**target.headers, **headers(self._signers, task, at), "user-agent": USER_AGENT}
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._client.stream(
                    "POST",
                    target.url,
                    content=task.body,
                    headers=sent,
                    extensions=target.extensions,
                ) as response,
            ):
                status = response.status_code  # the body is never read
        except TimeoutError:
            return None, f"no answer within {self._timeout:g}s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
        if 200 <= status < 300:
            return status, None
        return status, f"HTTP {status}"

    async def _with_store(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work``, retrying in place while the store fails transiently."""
        pause = STORE_RETRY_FIRST
        while True:
            try:
                return await work()
            except StoreRejected:
                raise
            except StoreError as exc:
                log.warning("store failed on a webhook (%s); retrying in %.1fs", exc, pause)
            await asyncio.sleep(pause)  # back-off while the store is down
            pause = min(pause * 2, STORE_RETRY_MAX)
