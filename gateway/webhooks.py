"""Webhooks (OGC ``subscriber``): which change of a job calls which URI, with what body, and
how it is signed (Standard Webhooks).

A job submitted with a ``subscriber`` is called back:

- ``inProgressUri`` when a run starts (``job.started``) and at each progress it reports
  (``job.progress``);
- ``successUri`` when it succeeds (``job.successful``);
- ``failedUri`` when it fails (``job.failed``) or is dismissed (``job.dismissed``: cancelled
  by its owner, or expired before any worker took it).

Each event has a ``webhook-id`` derived from the change itself (the job and its terminal
status, or the run and its progress report), so that whoever queues it — the process that
made the change, or the outbox sweep after a crash — names it the same, and the receiver can
drop repeats. The body is the same bytes on every attempt; each attempt is signed afresh
(``webhook-timestamp`` is the attempt's time) with the deployment's secret, and with each
secret being retired, one ``v1,`` signature each.

The outbox (:mod:`gateway.webhook_outbox`) queues events; the deliverer
(:mod:`gateway.webhook_delivery`) makes the attempts.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from standardwebhooks import Webhook

from gateway.errors import BadRequest, FieldError, InvalidInput
from gateway.store import JobRecord, JobStatus
from worker_sdk.wire.urls import UrlPolicy, UrlRefused, check_urls

SUBSCRIBER_URIS = ("successUri", "inProgressUri", "failedUri")

EventType = Literal["job.started", "job.progress", "job.successful", "job.failed", "job.dismissed"]

_TERMINAL: dict[JobStatus, tuple[EventType, str]] = {
    JobStatus.SUCCESSFUL: ("job.successful", "successUri"),
    JobStatus.FAILED: ("job.failed", "failedUri"),
    JobStatus.DISMISSED: ("job.dismissed", "failedUri"),
}


class WebhookLink(BaseModel):
    href: str
    rel: str
    type: str = "application/json"


class JobSnapshot(BaseModel):
    """The job as the event left it (the fields of its OGC statusInfo)."""

    jobID: uuid.UUID
    processID: str
    status: JobStatus
    reason: str | None = None
    message: str | None = None
    progress: int
    attempt: int
    created: datetime
    started: datetime | None = None
    finished: datetime | None = None
    updated: datetime
    links: list[WebhookLink] = Field(default_factory=list)


class WebhookPayload(BaseModel):
    """The body of every webhook: Standard Webhooks' ``type``/``timestamp``/``data`` shape."""

    type: EventType
    timestamp: datetime = Field(description="When the change was made.")
    data: JobSnapshot


class WebhookTask(BaseModel):
    """One delivery on the broker: the event, where it goes, and which attempt is next."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str
    job_id: uuid.UUID
    type: EventType
    url: str
    body: str = Field(description="The exact JSON body, signed anew at each attempt.")
    attempt: int = Field(default=1, ge=1)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    def next_attempt(self) -> WebhookTask:
        return self.model_copy(update={"attempt": self.attempt + 1})


# How many deferrals the delivery has had: a header, not a field of the body, which a gateway
# of an earlier version (its fields closed) reads whatever this one adds.
DEFERRALS_HEADER = "x-sg-deferrals"


def _event(record: JobRecord) -> tuple[EventType, str, str] | None:
    """(type, subscriber URI name, webhook-id) of the change ``record`` shows, if any."""
    if record.status.terminal:
        kind, uri = _TERMINAL[record.status]
        return kind, uri, f"{record.id}.{record.status}"
    if record.status is JobStatus.RUNNING and record.run_id is not None:
        kind = "job.started" if record.progress_seq == 0 else "job.progress"
        return kind, "inProgressUri", f"{record.id}.{record.run_id.hex}.{record.progress_seq}"
    return None  # accepted (again, after a retry): nothing to call


def webhook_for(record: JobRecord, public_url: str | None) -> WebhookTask | None:
    """The delivery the change ``record`` shows owes its subscriber, or ``None``."""
    event = _event(record)
    if event is None or not record.subscriber:
        return None
    kind, uri_name, event_id = event
    url = record.subscriber.get(uri_name)
    if not url:
        return None
    links = []
    if public_url:
        href = f"{public_url.rstrip('/')}/jobs/{record.id}"
        links.append(WebhookLink(href=href, rel="self"))
        if record.status is JobStatus.SUCCESSFUL:
            links.append(
                WebhookLink(
                    href=f"{href}/results", rel="http://www.opengis.net/def/rel/ogc/1.0/results"
                )
            )
    snapshot = JobSnapshot(
        jobID=record.id,
        processID=record.service,
        status=record.status,
        reason=record.reason,
        message=record.error.message if record.error is not None else record.message,
        progress=record.progress,
        attempt=record.attempt,
        created=record.created,
        started=record.started,
        finished=record.finished,
        updated=record.updated,
        links=links,
    )
    payload = WebhookPayload(type=kind, timestamp=record.updated, data=snapshot)
    return WebhookTask(
        event_id=event_id,
        job_id=record.id,
        type=kind,
        url=url,
        body=payload.model_dump_json(exclude_none=True),
    )


def signature(signers: Sequence[Webhook], event_id: str, at: datetime, body: str) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per secret, space-separated."""
    return " ".join(signer.sign(event_id, at.astimezone(UTC), body) for signer in signers)


def headers(signers: Sequence[Webhook], task: WebhookTask, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt made at ``at``."""
    return {
        "content-type": "application/json",
        "webhook-id": task.event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature(signers, task.event_id, at, task.body),
    }


class Subscriptions:
    """Checks a submission's ``subscriber`` before the job exists: webhooks must be enabled,
    and every URI must pass the webhooks' URL policy, its host resolved now (the deliverer
    checks again, against the address it connects to, at every attempt)."""

    def __init__(self, policy: UrlPolicy | None, *, deadline: float) -> None:
        self._policy = policy
        self._deadline = deadline

    async def check(self, uris: Mapping[str, str]) -> None:
        """Raise :class:`BadRequest` when webhooks are off and :class:`InvalidInput` for a
        URI the policy refuses."""
        if self._policy is None:
            raise BadRequest(
                "this gateway does not deliver webhooks (no SG_WEBHOOK_SECRET): remove `subscriber`"
            )
        refused: dict[str, UrlRefused] = {}
        for url in uris.values():
            try:
                self._policy.check_literal(url)
            except UrlRefused as exc:
                refused[url] = exc
        if not refused:
            refused = await check_urls(
                self._policy,
                uris.values(),
                limit=len(SUBSCRIBER_URIS),
                deadline=self._deadline,
                unresolvable=False,
            )
        errors = [
            FieldError(path=f"/subscriber/{name}", message=str(refused[url]))
            for name, url in uris.items()
            if url in refused
        ]
        if errors:
            detail = "; ".join(f"{e.path}: {e.message}" for e in errors)
            raise InvalidInput(f"a subscriber URI is refused: {detail}", errors=errors)


def subscribed(subscriber: Mapping[str, Any]) -> dict[str, str] | None:
    """The subscriber's URIs that are set, or ``None`` when none is."""
    uris = {name: str(subscriber[name]) for name in SUBSCRIBER_URIS if subscriber.get(name)}
    return uris or None
