"""Delivering webhooks: one signed POST per attempt, retried with backoff from the broker.

The consumer of ``{ns}.webhooks`` makes one attempt per message:

1. An event already delivered (a duplicate the outbox queued), or one this process is
   attempting right now (a redelivered copy meeting its own retry), is acked and skipped:
   the attempt in flight delivers it or schedules its next attempt itself.
2. A receiver (scheme, host, port) gets at most ``host_concurrency`` attempts of this process
   at once. An event for a receiver at that limit waits for a free slot, at most
   ``host_wait`` seconds, so that a burst to a receiver that answers goes at its pace; a
   receiver whose wait ran out or whose last attempt took longer than ``host_wait`` is
   *slow*, and its events are deferred at once until one of its attempts is quick again. A
   deferral takes the next step of the retry schedule as a failed attempt would (queued again
   for that step's delay, which shows as the delivery's ``next_attempt``), without counting
   as an attempt: a receiver that answers slowly or not at all holds back no other
   receiver's events, its backlog comes back ever less often, and an event's schedule keeps
   its length whatever its receiver does. An event at the schedule's last step, or whose
   deferral the broker refuses, is attempted beyond the limit. The count of deferrals travels
   in the message's ``x-sg-deferrals`` header.
3. The URI is checked against the webhooks' URL policy again, now, and the request goes to
   the very address that was checked (the host name kept for ``Host`` and TLS), so a name
   that resolves elsewhere since the submission (DNS rebinding) reaches nothing forbidden.
   Redirects are not followed.
4. A 2xx answer delivers the event. Anything else (another status, a refused address, a
   timeout, a connection error) is a failed attempt: while the schedule lasts, the next
   attempt is published to the holding queue of its delay (it comes back when its TTL
   ends), else the delivery is given up (``exhausted``).
5. The attempt is recorded on the job (``GET /jobs/{id}/webhooks``), then the message acked.

A gateway that dies mid-attempt leaves the message unacked: the broker hands it to another
(a repeat the receiver tells by its ``webhook-id``). A store that is down is retried in
place; a retry the broker does not confirm puts the message back in the queue; the queue's
delivery limit parks a message that keeps failing so in the poison queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import httpx
from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError
from standardwebhooks import Webhook

from gateway.broker import Broker, BrokerDown, PublishRefused
from gateway.metrics import Metrics
from gateway.store import JobStore, StoreError, StoreRejected, WebhookAttempt
from gateway.webhooks import DEFERRALS_HEADER, WebhookTask, headers
from worker_sdk.wire import settle
from worker_sdk.wire.urls import UrlPolicy, UrlRefused, aresolve, pin

log = logging.getLogger("gateway.webhooks")

T = TypeVar("T")
STORE_RETRY_FIRST = 0.5
STORE_RETRY_MAX = 10.0
USER_AGENT = "ServiceGateway-Webhooks/0.1"
MAX_ERROR = 500


@dataclass
class _Receiver:
    """The attempts of this process to one receiver: its slots, and whether it is slow."""

    slots: asyncio.Semaphore
    users: int = 0  # events attempted or waiting for a slot
    slow: bool = False


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
        host_wait: float = 1.0,
        metrics: Metrics | None = None,
    ) -> None:
        """``host_concurrency``: attempts in flight to one receiver at most (``None``: no
        limit); a limit needs a retry schedule to defer with, and has none without one.
        ``host_wait``: how long an event waits for a slot of its receiver before it is
        deferred (see the module)."""
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
        self._host_wait = host_wait
        self._receivers: dict[tuple[str, str, int], _Receiver] = {}

    async def close(self) -> None:
        await self._client.aclose()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        """Consumer of ``{ns}.webhooks``: one attempt, recorded, then ack (see the module)."""
        try:
            task = WebhookTask.model_validate_json(message.body)
        except ValidationError:
            log.warning("message %r on webhooks is no delivery; set aside", message.message_id)
            await self._set_aside(message, "unreadable")
            return
        try:
            outcome = await self._deliver(task, _deferrals(message))
        except (BrokerDown, PublishRefused) as exc:
            log.warning("webhook %s: next attempt not queued (%s); retrying", task.event_id, exc)
            await settle(message, "requeue")
            return
        except StoreRejected:
            log.exception("webhook %s: the store refused its attempt; set aside", task.event_id)
            await self._set_aside(message, "store-refused")
            return
        except Exception:
            log.exception("webhook %s failed; set aside", task.event_id)
            await self._set_aside(message, "failed")
            return
        log.debug("webhook %s attempt %d: %s", task.event_id, task.attempt, outcome)
        await settle(message, "ack")

    async def _set_aside(self, message: AbstractIncomingMessage, why: str) -> None:
        """Dead-letter ``message`` to the poison queue, counted as the events' are."""
        if self._metrics is not None:
            self._metrics.events_refused.labels("webhooks", why).inc()
        await settle(message, "reject")

    async def _deliver(self, task: WebhookTask, deferrals: int) -> str:
        if task.event_id in self._in_flight:
            return "being attempted already"
        key = self._receiver(task.url)
        if key is None or self._host_limit is None:
            return await self._attempt_in_flight(task, deferrals)
        self._in_flight.add(task.event_id)  # from now on: waiting for a slot counts
        receiver = self._receivers.get(key)
        if receiver is None:
            receiver = self._receivers[key] = _Receiver(asyncio.Semaphore(self._host_limit))
        receiver.users += 1
        try:
            return await self._within_limit(task, deferrals, receiver)
        finally:
            self._in_flight.discard(task.event_id)
            receiver.users -= 1
            if not receiver.users:
                del self._receivers[key]

    async def _within_limit(self, task: WebhookTask, deferrals: int, receiver: _Receiver) -> str:
        if not await self._slot(receiver):
            if self._step(task, deferrals) < len(self._delays):
                deferred = await self._defer(task, deferrals)
                if deferred is not None:
                    return deferred
            return await self._attempt_once(task, deferrals)  # beyond the limit: see the module
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            return await self._attempt_once(task, deferrals)
        finally:
            receiver.slots.release()
            receiver.slow = loop.time() - started > self._host_wait

    async def _slot(self, receiver: _Receiver) -> bool:
        """Take one of the receiver's slots: at once, or within the wait when it is not slow;
        ``False`` when none came."""
        if not receiver.slots.locked():
            await receiver.slots.acquire()
            return True
        if receiver.slow:
            return False
        try:
            async with asyncio.timeout(self._host_wait):
                await receiver.slots.acquire()
        except TimeoutError:
            receiver.slow = True
            return False
        return True

    async def _attempt_in_flight(self, task: WebhookTask, deferrals: int) -> str:
        self._in_flight.add(task.event_id)
        try:
            return await self._attempt_once(task, deferrals)
        finally:
            self._in_flight.discard(task.event_id)

    def _receiver(self, url: str) -> tuple[str, str, int] | None:
        """The receiver an attempt goes to (``None``: a URL the policy refuses outright,
        which its attempt then says)."""
        try:
            return self._policy.split(url)
        except UrlRefused:
            return None

    @staticmethod
    def _step(task: WebhookTask, deferrals: int) -> int:
        """The retry schedule's step the delivery is at: its attempts and deferrals so far."""
        return task.attempt - 1 + deferrals

    async def _defer(self, task: WebhookTask, deferrals: int) -> str | None:
        """Queue the same attempt again, due after its step's delay, and show when on the
        delivery; ``None`` when the broker refused it (the attempt is made now)."""
        known = await self._with_store(lambda: self._store.webhook_delivery(task.event_id))
        if known is not None and known.delivered is not None:
            return "already delivered"
        delay = self._delays[self._step(task, deferrals)]
        try:
            await self._broker.publish_webhook(
                task.to_bytes(),
                job_id=task.job_id,
                delay=delay,
                headers={DEFERRALS_HEADER: deferrals + 1},
            )
        except PublishRefused as exc:
            log.warning("webhook %s: its deferral was refused (%s); attempting", task.event_id, exc)
            return None
        due = datetime.now(UTC) + timedelta(seconds=delay)
        await self._with_store(
            lambda: self._store.defer_webhook(
                event_id=task.event_id, job_id=task.job_id, type=task.type, url=task.url, due=due
            )
        )
        if self._metrics is not None:
            self._metrics.webhook_attempts.labels(task.type, "deferred").inc()
        return f"deferred {delay}s: its receiver is at its limit of {self._host_limit}"

    async def _attempt_once(self, task: WebhookTask, deferrals: int) -> str:
        known = await self._with_store(lambda: self._store.webhook_delivery(task.event_id))
        if known is not None and known.delivered is not None:
            return "already delivered"
        at = datetime.now(UTC)
        status, error = await self.attempt(task, at)
        delivered = error is None
        step = self._step(task, deferrals)
        delay = None if delivered or step >= len(self._delays) else self._delays[step]
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
                task.next_attempt().to_bytes(),
                job_id=task.job_id,
                delay=delay,
                headers={DEFERRALS_HEADER: deferrals} if deferrals else None,
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


def _deferrals(message: AbstractIncomingMessage) -> int:
    """The deferrals the delivery has had; a header this gateway did not write (not a
    non-negative integer) counts none."""
    value = (message.headers or {}).get(DEFERRALS_HEADER)
    return value if type(value) is int and value >= 0 else 0
