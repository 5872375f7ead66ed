"""Response and request bodies of the OGC-API-Processes-style job API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.store import JobRecord, JobStatus
from worker_sdk.wire.catalogue import ServiceSpec


class Link(BaseModel):
    href: str
    rel: str
    type: str | None = None
    title: str | None = None


class ProcessSummary(BaseModel):
    """A service as a process."""

    id: str
    title: str
    description: str
    version: str
    jobControlOptions: list[str] = Field(default_factory=lambda: ["async-execute", "sync-execute"])
    links: list[Link] = Field(default_factory=list)

    @classmethod
    def of(cls, spec: ServiceSpec, base: str) -> ProcessSummary:
        return cls(
            id=spec.id,
            title=spec.title,
            description=spec.description,
            version=spec.version,
            links=[Link(href=f"{base}/processes/{spec.id}", rel="self", type="application/json")],
        )


class ProcessList(BaseModel):
    processes: list[ProcessSummary]
    links: list[Link] = Field(default_factory=list)


class ProcessDescription(ProcessSummary):
    """A process with its input schema and output description."""

    inputs: dict[str, Any] = Field(description="JSON Schema of the execute request's inputs.")
    outputs: dict[str, Any]
    queueTtl: float
    timeLimit: float | None

    @classmethod
    def describe(cls, spec: ServiceSpec, base: str) -> ProcessDescription:
        summary = ProcessSummary.of(spec, base)
        summary.links.append(
            Link(
                href=f"{base}/processes/{spec.id}/execution",
                rel="http://www.opengis.net/def/rel/ogc/1.0/execute",
                title="Execute",
            )
        )
        return cls(
            **summary.model_dump(),
            inputs=dict(spec.inputs),
            outputs=dict(spec.outputs),
            queueTtl=spec.queue_ttl,
            timeLimit=spec.time_limit,
        )


class Subscriber(BaseModel):
    """OGC callback URIs for a job's progress and end."""

    model_config = ConfigDict(extra="forbid")

    successUri: str | None = None
    inProgressUri: str | None = None
    failedUri: str | None = None


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
    """OGC statusInfo, with the gateway's ``reason`` and ``attempt``."""

    jobID: UUID
    processID: str
    type: str = "process"
    status: JobStatus
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
    links: list[Link] = Field(default_factory=list)

    @classmethod
    def of(cls, job: JobRecord, base: str, expected_version: str | None = None) -> StatusInfo:
        links = [Link(href=f"{base}/jobs/{job.id}", rel="self", type="application/json")]
        if job.status is JobStatus.SUCCESSFUL and job.purged is None:
            links.append(
                Link(
                    href=f"{base}/jobs/{job.id}/results",
                    rel="http://www.opengis.net/def/rel/ogc/1.0/results",
                    type="application/json",
                )
            )
        return cls(
            jobID=job.id,
            processID=job.service,
            status=job.status,
            reason=job.reason,
            message=job.error.message if job.error is not None else job.message,
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
            links=links,
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


class JobList(BaseModel):
    """A page of jobs."""

    jobs: list[StatusInfo]
    links: list[Link] = Field(default_factory=list)


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
