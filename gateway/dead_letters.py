"""Dead letters: tasks the broker gave up on (expired, past their delivery limit) or a worker
refused, each of which ends its job with the reason, and barriers, which pass all the same.

A death's effect waits for the events published before it (:class:`DeathOrder`): a worker
that published its run's end (confirmed) and died before acking the task leaves that end in
``{ns}.events`` while the task goes back, expires or passes its delivery limit and is
dead-lettered; applied first, the death would fail the job and the confirmed result would then
be dropped as an event of a finished job.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from gateway.broker import BrokerDown
from gateway.store import ACTIVE, JobRecord, JobStatus, JobStore, Reason
from worker_sdk.wire import REFUSED_HEADER, ErrorInfo, Task, parse_task
from worker_sdk.wire.catalogue import Catalogue, ServiceSpec
from worker_sdk.wire.publish import PublishRefused

log = logging.getLogger("gateway.events")
POLL = 0.25
# How often a task handed back after its queue TTL was published again (see hand_on).
HANDED_ON_HEADER = "x-sg-handed-on"

Requeue = Callable[[Task, ServiceSpec, int], Awaitable[None]]


class DeathOrder:
    """Releases deaths once the events published before them are applied.

    A death is released by a *round* that began after it came: the events queue found holding
    nothing ready (every event published before the death has reached a gateway), then, after
    ``grace`` seconds for those being applied, nothing ready again. Every death waiting when a
    round begins is released by it, so a thousand deaths cost one round. A death still waiting
    after ``limit`` seconds (an events path that far behind) is released all the same, and
    said so.
    """

    def __init__(self, ready: Callable[[], Awaitable[int]], *, grace: float, limit: float) -> None:
        """``ready``: how many messages ``{ns}.events`` holds ready (raises when it cannot
        tell, which counts as some)."""
        self._ready = ready
        self._grace = grace
        self._limit = limit
        self._next: asyncio.Future[None] | None = None  # the round the next deaths wait for
        self._round: asyncio.Task[None] | None = None

    async def wait(self) -> None:
        """Return once a round that began after this call has passed, or after the limit."""
        loop = asyncio.get_running_loop()
        if self._next is None:
            self._next = loop.create_future()
        released = self._next
        if self._round is None or self._round.done():
            self._round = asyncio.create_task(self._rounds())
        try:
            async with asyncio.timeout(self._limit):
                await asyncio.shield(released)
        except TimeoutError:
            log.warning("a dead letter waited %gs for the events before it; applied", self._limit)

    async def _rounds(self) -> None:
        while self._next is not None:
            released, self._next = self._next, None
            while not await self._settled():  # noqa: ASYNC110 - the broker pushes no counts
                await asyncio.sleep(POLL)
            if not released.done():
                released.set_result(None)

    async def _settled(self) -> bool:
        try:
            if await self._ready():
                return False
            await asyncio.sleep(self._grace)  # for the events delivered, being applied
            return not await self._ready()
        except Exception as exc:  # noqa: BLE001 - a broker that cannot tell: look again
            log.debug("events queue not inspected (%s); looking again", exc)
            return False


class NoJob(ValueError):
    """A dead letter that names no job."""


def dead_job(message: AbstractIncomingMessage) -> tuple[uuid.UUID, str | None, str]:
    """The job a dead-lettered task belongs to, its service, and why it died: the job from the
    body when it parses, else from the ``correlation_id`` (a task too deep or too new to parse
    still ends its job); the reason a worker gave, else the broker's."""
    refused = message.headers.get(REFUSED_HEADER)
    death = str(refused) if refused else last_death(message.headers)
    try:
        task = parse_task(message.body)
    except (ValueError, ValidationError):
        task = None
    if isinstance(task, Task):
        return task.job_id, task.service, death
    try:
        return uuid.UUID(message.correlation_id or ""), message.routing_key, death
    except ValueError as exc:
        raise NoJob("a dead letter that names no job") from exc


def last_death(headers: Mapping[str, Any]) -> str:
    """Why the broker gave up on a message this time: the reason of the newest of its deaths
    (``x-death`` lists them newest first). Not ``x-first-death-reason``: a retried task died
    first in its holding queue, ``expired`` by that queue's TTL, whatever ended it at last."""
    deaths = headers.get("x-death")
    newest = deaths[0] if isinstance(deaths, list) and deaths else None
    reason = newest.get("reason") if isinstance(newest, dict) else None
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    if reason:
        return str(reason)
    return str(headers.get("x-last-death-reason") or headers.get("x-first-death-reason") or "")


async def finish_dead(
    store: JobStore, catalogue: Catalogue, job_id: uuid.UUID, service: str | None, death: str
) -> JobRecord | None:
    """End a job whose task the broker or a worker gave up on, by the death's reason:
    ``expired`` (no worker took it in time), ``delivery_limit`` (its workers kept dying) or
    a refusal (a worker could not use it)."""
    now = datetime.now(UTC)
    expires_at = now + catalogue.retention(service or "")
    if death == "expired":
        record = await store.finish(
            job_id,
            status=JobStatus.DISMISSED,
            at=now,
            reason=Reason.EXPIRED,
            expires_at=expires_at,
            only_from={JobStatus.ACCEPTED},
        )
        if record is not None:
            return record
        error = ErrorInfo(
            code=Reason.WORKER_LOST,
            type="Expired",
            message="the job's worker was lost and no other worker took it before it expired",
        )
        reason = Reason.WORKER_LOST
    elif death == "delivery_limit":
        spec = catalogue.get(service or "")
        deliveries = f"{spec.delivery_limit + 1} times" if spec else "repeatedly"
        error = ErrorInfo(
            code=Reason.WORKER_LOST,
            type="DeliveryLimit",
            message=f"the task was handed to workers {deliveries} and never finished: "
            "its worker died or gave it back each time",
        )
        reason = Reason.WORKER_LOST
    else:
        error = ErrorInfo(
            code=Reason.INVALID_TASK,
            type="Rejected",
            message=f"a worker refused the task: {death or 'no reason given'}",
        )
        reason = Reason.INVALID_TASK
    return await store.finish(
        job_id,
        status=JobStatus.FAILED,
        at=now,
        reason=reason,
        error=error,
        expires_at=expires_at,
        only_from=ACTIVE,
    )


async def hand_on(
    store: JobStore, catalogue: Catalogue, message: AbstractIncomingMessage, requeue: Requeue
) -> bool:
    """Publish again a task that expired after a worker had started it; True if it was.

    A task's expiry (its service's ``queue_ttl``) counts from the job's submission, and keeps
    counting while a worker runs it: a run longer than the TTL whose worker hands it back (a
    stop, a lost connection) or dies finds its task already expired when it returns to the
    queue. That job was taken in time, and another worker is owed the chance to run it: its
    task goes back with a fresh TTL, as many times as the service's ``delivery_limit``, after
    which (or if the publish fails) the job fails ``worker_lost`` as before.
    """
    try:
        task = parse_task(message.body)
    except (ValueError, ValidationError):
        return False
    if not isinstance(task, Task):
        return False
    record = await store.get(task.job_id)
    spec = catalogue.get(task.service)
    if record is None or spec is None or record.status is not JobStatus.RUNNING:
        return False
    if record.attempt != task.attempt:
        return False  # a copy of another attempt's task
    handed_on = (message.headers or {}).get(HANDED_ON_HEADER)
    count = handed_on if isinstance(handed_on, int) and not isinstance(handed_on, bool) else 0
    if not 0 <= count < spec.delivery_limit:
        return False
    try:
        await requeue(task, spec, count + 1)
    except (BrokerDown, PublishRefused) as exc:
        log.warning("job %s: its expired task could not be queued again (%s)", task.job_id, exc)
        return False
    log.info("job %s: its task expired after a worker took it; queued again", task.job_id)
    return True
