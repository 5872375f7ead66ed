"""Response and request bodies of the OGC-API-Processes-style job API."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.fleet import Waiting
from gateway.oas30 import to_oas30
from gateway.store import JobRecord, JobStatus, WebhookDelivery
from worker_sdk.wire.catalogue import ServiceSpec


class Link(BaseModel):
    href: str
    rel: str
    type: str | None = None
    title: str | None = None


OGC_REL = "http://www.opengis.net/def/rel/ogc/1.0/"
JSON = "application/json"
HTML = "text/html"


class ProcessSummary(BaseModel):
    """A service as a process (OGC ``processSummary``)."""

    id: str
    title: str
    description: str
    version: str
    jobControlOptions: list[Literal["sync-execute", "async-execute", "dismiss"]] = Field(
        description="`sync-execute` when the process is sync-capable: its `sync_execute` "
        "flag, else a `time_limit` no longer than `SG_MAX_WAIT`."
    )
    outputTransmission: list[Literal["value", "reference"]] = Field(default=["value"])
    links: list[Link] = Field(default_factory=list)

    @classmethod
    def of(cls, spec: ServiceSpec, base: str, max_wait: float) -> ProcessSummary:
        options: list[Literal["sync-execute", "async-execute", "dismiss"]] = [
            "async-execute",
            "dismiss",
        ]
        if spec.sync_capable(max_wait):
            options.insert(0, "sync-execute")
        href = f"{base}/processes/{spec.id}"
        return cls(
            id=spec.id,
            title=spec.title,
            description=spec.description,
            version=spec.version,
            jobControlOptions=options,
            links=[
                Link(href=href, rel="self", type=JSON, title="Process description"),
                Link(href=f"{href}?f=html", rel="alternate", type=HTML, title="As HTML"),
            ],
        )


class ProcessList(BaseModel):
    """OGC ``processList``."""

    processes: list[ProcessSummary]
    links: list[Link] = Field(default_factory=list)


class InputDescription(BaseModel):
    """One input (OGC ``inputDescription``), from a property of the catalogue's schema."""

    title: str
    description: str | None = None
    schema_: dict[str, Any] = Field(
        alias="schema", description="OpenAPI 3.0 schema object of the input's value."
    )
    minOccurs: int
    maxOccurs: int

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class OutputDescription(BaseModel):
    """One output (OGC ``outputDescription``)."""

    title: str
    description: str | None = None
    schema_: dict[str, Any] = Field(
        alias="schema", description="OpenAPI 3.0 schema object of the output's value."
    )

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


def input_descriptions(spec: ServiceSpec) -> dict[str, InputDescription]:
    """The catalogue's input schema as OGC input descriptions: one per property, required
    ones ``minOccurs: 1``; each value (an array too) occurs once."""
    schema = to_oas30(spec.inputs)
    required = set(spec.inputs.get("required", ()))
    raw = spec.inputs.get("properties", {})
    described = {}
    for name, converted in schema.get("properties", {}).items():
        prop = raw.get(name) if isinstance(raw.get(name), Mapping) else {}
        described[name] = InputDescription(
            title=str(prop.get("title") or name),
            description=prop.get("description"),
            schema_=converted,
            minOccurs=1 if name in required else 0,
            maxOccurs=1,
        )
    return described


def output_descriptions(spec: ServiceSpec) -> dict[str, OutputDescription]:
    return {
        output_id: OutputDescription(
            title=output.title or output_id,
            description=output.description or None,
            schema_=to_oas30(output.value_schema),
        )
        for output_id, output in spec.output_specs.items()
    }


class ProcessDescription(ProcessSummary):
    """A process with its inputs and outputs (OGC ``process``), and the gateway's queueing
    policy (``queueTtl``, ``timeLimit``: extensions)."""

    inputs: dict[str, InputDescription]
    outputs: dict[str, OutputDescription]
    queueTtl: float = Field(description="Seconds a job may wait for a worker.")
    timeLimit: float | None = Field(description="Seconds a run may take.")

    @classmethod
    def describe(cls, spec: ServiceSpec, base: str, max_wait: float) -> ProcessDescription:
        summary = ProcessSummary.of(spec, base, max_wait)
        summary.links.append(
            Link(
                href=f"{base}/processes/{spec.id}/execution",
                rel=f"{OGC_REL}execute",
                type=JSON,
                title="Execute",
            )
        )
        return cls(
            **summary.model_dump(),
            inputs=input_descriptions(spec),
            outputs=output_descriptions(spec),
            queueTtl=spec.queue_ttl,
            timeLimit=spec.time_limit,
        )


class Subscriber(BaseModel):
    """OGC callback URIs for a job's progress and end, called with signed webhooks (Standard
    Webhooks) when the gateway has a webhook secret; each must pass the webhooks' URL policy
    (public addresses only, unless allow-listed)."""

    model_config = ConfigDict(extra="forbid")

    successUri: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="Called once when the job succeeds (`job.successful`).",
    )
    inProgressUri: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="Called when a run starts (`job.started`) and at each progress report "
        "(`job.progress`, coalesced).",
    )
    failedUri: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="Called once when the job fails (`job.failed`) or is dismissed "
        "(`job.dismissed`).",
    )


class WebhookDeliveryInfo(BaseModel):
    """One webhook event of the job and where its delivery stands."""

    id: str = Field(description="The event's `webhook-id`, the same on every attempt.")
    type: str
    url: str
    state: Literal["retrying", "delivered", "failed"] = Field(
        description="`delivered` (a 2xx came back), `retrying` (another attempt is "
        "scheduled, at `nextAttempt`; with `attempts` 0, the first was deferred) or `failed` "
        "(every attempt of the schedule failed)."
    )
    attempts: int
    firstAttempt: datetime | None = None
    lastAttempt: datetime | None = None
    lastStatus: int | None = Field(default=None, description="HTTP status of the last attempt.")
    lastError: str | None = None
    nextAttempt: datetime | None = None
    delivered: datetime | None = None

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> WebhookDeliveryInfo:
        return cls(
            id=delivery.id,
            type=delivery.type,
            url=delivery.url,
            state=delivery.state,
            attempts=delivery.attempts,
            firstAttempt=delivery.first_attempt,
            lastAttempt=delivery.last_attempt,
            lastStatus=delivery.last_status,
            lastError=delivery.last_error,
            nextAttempt=delivery.next_attempt,
            delivered=delivery.delivered,
        )


class WebhookList(BaseModel):
    """The job's subscriber and every webhook attempted so far (an event appears at its first
    attempt, or when that attempt is deferred because its receiver is slow)."""

    jobID: UUID
    subscriber: Subscriber | None = None
    webhooks: list[WebhookDeliveryInfo]
    links: list[Link] = Field(default_factory=list)


class OutputRequest(BaseModel):
    """How the client wants one output (OGC ``outputs`` entry)."""

    model_config = ConfigDict(extra="forbid")

    format: dict[str, Any] | None = None
    transmissionMode: Literal["value", "reference"] | None = None


class ExecuteRequest(BaseModel):
    """``POST /processes/{id}/execution`` body (OGC API – Processes ``execute``).

    ``inputs`` is required and validated against the process's schema; any member other than
    ``inputs``, ``outputs``, ``response`` and ``subscriber`` is refused (400), so a typo is
    never silently dropped.
    """

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any]
    outputs: dict[str, OutputRequest] | None = None
    response: Literal["raw", "document"] | None = None
    subscriber: Subscriber | None = None


class StatusInfo(BaseModel):
    """OGC statusInfo, with the gateway's ``reason``, ``attempt`` and ``outcome``.

    A finished job whose result was dismissed (``DELETE``) shows ``dismissed``, as OGC's
    dismiss class requires, and keeps the status it ended with in ``outcome``."""

    jobID: UUID
    processID: str
    type: Literal["process"] = "process"
    status: JobStatus
    outcome: JobStatus | None = Field(
        default=None, description="The status the job ended with, once its result is purged."
    )
    reason: str | None = None
    message: str | None = None
    progress: int
    attempt: int
    created: datetime
    started: datetime | None = None
    finished: datetime | None = None
    updated: datetime
    purged: datetime | None = None
    workerVersion: str | None = None
    versionMismatch: bool | None = Field(
        default=None, description="True when the worker's version is not the catalogue's."
    )
    queuePosition: int | None = Field(
        default=None,
        description="While accepted (on GET /jobs/{jobID}): 1 + the accepted jobs of its "
        "process created before it. Approximate: a job waiting out a retry delay counts.",
    )
    estimatedStart: datetime | None = Field(
        default=None,
        description="While accepted (on GET /jobs/{jobID}): when a worker should take it, "
        "from the live workers, the jobs ahead and the recent mean run time "
        "(docs/scaling.md); absent when that cannot be known.",
    )
    links: list[Link] = Field(default_factory=list)

    @classmethod
    def of(
        cls,
        job: JobRecord,
        base: str,
        expected_version: str | None = None,
        waiting: Waiting | None = None,
    ) -> StatusInfo:
        """The job's status; ``waiting`` (an accepted job's, on ``GET /jobs/{id}``) adds
        what it waits on: its place and estimated start, and a ``message`` when no worker of
        its service is live."""
        href = f"{base}/jobs/{job.id}"
        links = [
            Link(href=href, rel="self", type=JSON, title="Job status"),
            Link(href=f"{href}?f=html", rel="alternate", type=HTML, title="As HTML"),
            Link(href=f"{base}/jobs", rel="up", type=JSON, title="Your jobs"),
        ]
        if job.status is JobStatus.SUCCESSFUL and job.purged is None:
            links.append(Link(href=f"{href}/results", rel=f"{OGC_REL}results", title="Job results"))
        if job.subscriber:
            links.append(Link(href=f"{href}/webhooks", rel="related", type=JSON, title="Webhooks"))
        return cls(
            jobID=job.id,
            processID=job.service,
            status=JobStatus.DISMISSED if job.purged is not None else job.status,
            outcome=job.status if job.purged is not None else None,
            reason=job.reason,
            message=_message(job, waiting),
            progress=job.progress,
            attempt=job.attempt,
            created=job.created,
            started=job.started,
            finished=job.finished,
            updated=job.updated,
            purged=job.purged,
            workerVersion=job.worker.version if job.worker else None,
            versionMismatch=(
                job.worker.version != expected_version
                if job.worker is not None and expected_version is not None
                else None
            ),
            queuePosition=waiting.position if waiting is not None else None,
            estimatedStart=waiting.estimated_start if waiting is not None else None,
            links=links,
        )

    @staticmethod
    def shown(job: JobRecord) -> tuple[object, ...]:
        """What of ``job`` its document shows, beside its id (:meth:`of` with no ``waiting``
        reads nothing else of it): two records of one job with the same ``shown`` have the
        same document under one root and version."""
        return (
            job.service,
            job.status,
            job.purged,
            job.reason,
            job.error.message if job.error is not None else None,
            job.message,
            job.progress,
            job.attempt,
            job.created,
            job.started,
            job.finished,
            job.updated,
            job.worker.version if job.worker is not None else None,
            bool(job.subscriber),
        )

    def response(
        self, *, status_code: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        """The serialised response, skipping FastAPI's re-validation of a model built here."""
        return Response(
            self.model_dump_json(exclude_none=True),
            status_code=status_code,
            headers=headers,
            media_type="application/json",
        )


def _message(job: JobRecord, waiting: Waiting | None) -> str | None:
    if job.error is not None:
        return job.error.message
    note = waiting.note(job.service) if waiting is not None else None
    if note is None:
        return job.message
    return f"{job.message}; {note}" if job.message else note


class JobList(BaseModel):
    """A page of jobs (OGC ``jobList``); its ``next`` link carries the cursor of the next
    page."""

    jobs: list[StatusInfo]
    links: list[Link] = Field(default_factory=list)


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
