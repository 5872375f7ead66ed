"""The wire contract between the gateway and its workers.

Every message is a pydantic model serialised as JSON (never pickle) with an explicit
``schema_version``. Readers ignore fields they do not know, so a newer writer can add fields
without breaking an older reader; a change that old readers cannot ignore bumps the version.

Tasks travel gateway → worker on ``{ns}.tasks`` (routing key: the service id). Events travel
worker → gateway on ``{ns}.events`` (routing key: ``<service>.<kind>``). Control messages
travel gateway → every worker on ``{ns}.control``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: int = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        """Serialise to the JSON body published on the broker."""
        return self.model_dump_json().encode()


class LegacyDocument(BaseModel):
    """The document block of the old ServiceGateway message (``service.document``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    url: str | None = None


class Task(_Wire):
    """One unit of work for a worker: published once per attempt by the gateway."""

    job_id: UUID
    service: str
    service_version: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    attempt: int = Field(default=1, ge=1)
    max_attempts: int = Field(default=1, ge=1, description="Attempts allowed, retries included.")
    submitted_at: datetime = Field(default_factory=utcnow)
    time_limit: float | None = Field(default=None, gt=0, description="Seconds the handler may run.")
    deadline: datetime | None = Field(
        default=None, description="When the task expires if no worker has taken it."
    )
    document: LegacyDocument | None = None
    misc: dict[str, Any] | None = None
    annotation_service_url: str | None = None


class ErrorInfo(BaseModel):
    """Why a job failed: a stable machine code, the exception type and a human message."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    code: str
    type: str
    message: str
    retryable: bool = False


class _JobEvent(_Wire):
    job_id: UUID
    service: str
    attempt: int = Field(default=1, ge=1)
    run_id: UUID = Field(description="One execution of the task; a redelivery starts a new run.")
    worker_id: str
    emitted_at: datetime = Field(default_factory=utcnow)


class Started(_JobEvent):
    """A worker took the task and is about to run the handler."""

    kind: Literal["started"] = "started"
    host: str
    worker_version: str


class Progress(_JobEvent):
    """How far along the run is; ``seq`` rises with every progress event of a run."""

    kind: Literal["progress"] = "progress"
    percent: int = Field(ge=0, le=100)
    message: str | None = None
    seq: int = Field(ge=1)


class RunStart(BaseModel):
    """Where and when a run started, carried by a terminal event that no ``started`` preceded."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    host: str
    worker_version: str
    started_at: datetime


class _Terminal(_JobEvent):
    start: RunStart | None = Field(
        default=None,
        description="Set when the run ended before its ``started`` event was announced.",
    )


class Succeeded(_Terminal):
    """The handler returned; ``result`` is its JSON value."""

    kind: Literal["succeeded"] = "succeeded"
    result: Any = None


class Failed(_Terminal):
    """The handler (or the SDK around it) failed the job."""

    kind: Literal["failed"] = "failed"
    error: ErrorInfo


class Cancelled(_Terminal):
    """The run stopped because the job was cancelled."""

    kind: Literal["cancelled"] = "cancelled"
    message: str | None = None


class Retrying(_JobEvent):
    """The run failed in a way worth retrying; ``attempt`` is the attempt that comes next."""

    kind: Literal["retrying"] = "retrying"
    delay: float
    error: ErrorInfo


class Heartbeat(_Wire):
    """A worker is alive: sent every few seconds, even while handlers burn CPU."""

    kind: Literal["heartbeat"] = "heartbeat"
    worker_id: str
    service: str
    version: str
    host: str
    concurrency: int
    running: list[UUID] = Field(default_factory=list)
    emitted_at: datetime = Field(default_factory=utcnow)


JobEvent = Started | Progress | Retrying | Succeeded | Failed | Cancelled
TerminalEvent = Succeeded | Failed | Cancelled
Event = Annotated[JobEvent | Heartbeat, Field(discriminator="kind")]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(body: bytes) -> Event:
    """Parse an event body; raises ``pydantic.ValidationError`` when it is not one."""
    return EVENT_ADAPTER.validate_json(body)


class CancelRequest(_Wire):
    """Control message: stop this job wherever it is."""

    kind: Literal["cancel"] = "cancel"
    job_id: UUID
