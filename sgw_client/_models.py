"""What the gateway answers, as frozen pydantic models (unknown fields are ignored, so a newer
gateway does not break an older client)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import AliasChoices, BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class JobStatus(StrEnum):
    """OGC API – Processes job states."""

    ACCEPTED = "accepted"
    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    DISMISSED = "dismissed"

    @property
    def terminal(self) -> bool:
        """True once the job has ended (terminal states never change)."""
        return self in (JobStatus.SUCCESSFUL, JobStatus.FAILED, JobStatus.DISMISSED)


class Link(_Model):
    """A link of a response (``rel`` says what it points to)."""

    href: str
    rel: str
    type: str | None = None
    title: str | None = None


class Job(_Model):
    """A job's statusInfo: where it stands, how far along it is, and why it ended."""

    id: UUID = Field(alias="jobID")
    process: str = Field(alias="processID")
    status: JobStatus
    reason: str | None = Field(
        default=None, description="Why it failed or was dismissed (cancelled, expired, ...)."
    )
    message: str | None = None
    progress: int = 0
    attempt: int = 1
    created: datetime
    started: datetime | None = None
    finished: datetime | None = None
    updated: datetime
    purged: datetime | None = None
    worker_version: str | None = Field(default=None, alias="workerVersion")
    version_mismatch: bool | None = Field(default=None, alias="versionMismatch")
    links: tuple[Link, ...] = ()

    @property
    def terminal(self) -> bool:
        """True once the job has ended."""
        return self.status.terminal


class Process(_Model):
    """A service of the gateway's catalogue."""

    id: str
    title: str
    description: str = ""
    version: str
    links: tuple[Link, ...] = ()


class WorkerInfo(_Model):
    """A live worker, from its heartbeats (``GET /workers``)."""

    id: str = Field(validation_alias=AliasChoices("id", "workerID", "worker_id"))
    service: str = Field(validation_alias=AliasChoices("service", "processID"))
    host: str
    version: str
    concurrency: int
    running: tuple[UUID, ...] = Field(
        default=(),
        validation_alias=AliasChoices("running", "runningJobs", "running_jobs", "jobs"),
        description="The jobs it runs now that the caller may see (all of them for an admin).",
    )
    busy: int | None = Field(
        default=None,
        description="How many jobs it runs now, whoever submitted them (None from a gateway "
        "that does not say).",
    )
    last_seen: datetime | None = Field(
        default=None, validation_alias=AliasChoices("lastSeen", "last_seen")
    )
    up_since: datetime | None = Field(
        default=None, validation_alias=AliasChoices("upSince", "up_since", "started")
    )

    @property
    def load(self) -> int:
        """How many jobs it runs now: :attr:`busy`, or the jobs listed where it is not said."""
        return len(self.running) if self.busy is None else self.busy


class FieldError(_Model):
    """One failing part of a request: where (a JSON pointer or a parameter) and why."""

    path: str
    message: str


class JobError(_Model):
    """Why a job failed, as its worker reported it."""

    code: str
    type: str
    message: str
    retryable: bool = False


class Problem(_Model):
    """An RFC 9457 problem document with the gateway's stable ``code``."""

    type: str = "about:blank"
    title: str = ""
    status: int
    code: str = ""
    detail: str = ""
    errors: tuple[FieldError, ...] = ()
    job_error: JobError | None = None
