"""The wire contract between the gateway and its workers.

Every message is a pydantic model serialised as JSON (never pickle) with an explicit
``schema_version``. Readers ignore fields they do not know, so a newer writer can add fields
without breaking an older reader; a change that old readers cannot ignore bumps the version,
and a reader refuses a message whose version is newer than its own (:class:`NewerSchema`)
while it accepts older ones.

Tasks travel gateway → worker on ``{ns}.tasks`` (routing key: the service id), and so do
barriers (AMQP ``type`` ``barrier``), which the gateway sends through a queue to learn that
everything published before them has been delivered. Events travel worker → gateway on
``{ns}.events`` (routing key: ``<service>.<kind>``). Control messages travel gateway → every
worker on ``{ns}.control``.

Every field is bounded, so a message that parses can be stored and published on: integers
fit 64 bits, timestamps carry a time zone and fall in a sane range, and texts have a length
cap (long free texts are cut rather than refused, so a failure report is never dropped for
its length).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

from .values import INT64_MAX

SCHEMA_VERSION = 1

TASK = "task"
BARRIER = "barrier"
# A worker that refuses a task dead-letters it itself, saying why in this header.
REFUSED_HEADER = "x-sg-refused"


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def _sane(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamps must carry a time zone")
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"timestamp {value.isoformat()} is outside {EARLIEST.year}–{LATEST.year}")
    return value.astimezone(UTC)


def _cut(limit: int) -> Any:
    def cut(value: Any) -> Any:
        if isinstance(value, str) and len(value) > limit:
            return value[: limit - 1] + "…"
        return value

    return BeforeValidator(cut)


Timestamp = Annotated[datetime, AfterValidator(_sane)]
# Names and versions are shown in logs, pages and terminals: no control characters.
_PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]+$"
Name = Annotated[str, Field(min_length=1, max_length=256, pattern=_PRINTABLE)]
Version = Annotated[str, Field(min_length=1, max_length=64, pattern=_PRINTABLE)]
ServiceId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
Attempt = Annotated[int, Field(ge=1, le=10_000)]
Sequence = Annotated[int, Field(ge=1, le=INT64_MAX)]
Text = Annotated[str, _cut(4000)]
ShortText = Annotated[str, _cut(256)]


class NewerSchema(ValueError):
    """A message written for a newer major version of the contract than this reader's."""


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=1000)

    def to_bytes(self) -> bytes:
        """Serialise to the JSON body published on the broker."""
        return self.model_dump_json().encode()


def check_schema(message: _Wire) -> None:
    """Refuse a message of a newer major version than this reader knows."""
    if message.schema_version > SCHEMA_VERSION:
        raise NewerSchema(
            f"{type(message).__name__} has schema version {message.schema_version}; "
            f"this reader knows versions up to {SCHEMA_VERSION}: upgrade it"
        )


class LegacyDocument(BaseModel):
    """The document block of the old ServiceGateway message (``service.document``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    url: str | None = None


class Task(_Wire):
    """One unit of work for a worker: published once per attempt by the gateway."""

    job_id: UUID
    service: ServiceId
    service_version: Version | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    attempt: Attempt = 1
    max_attempts: Attempt = Field(default=1, description="Attempts allowed, retries included.")
    submitted_at: Timestamp = Field(default_factory=utcnow)
    time_limit: float | None = Field(
        default=None, gt=0, le=366 * 86400, description="Seconds the handler may run."
    )
    deadline: Timestamp | None = Field(
        default=None, description="When the task expires if no worker has taken it."
    )
    max_result_bytes: int | None = Field(
        default=None, ge=1, le=INT64_MAX, description="Largest result the job may publish."
    )
    document: LegacyDocument | None = None
    misc: dict[str, Any] | None = None
    annotation_service_url: str | None = None
    batch_outcomes: bool = Field(
        default=False,
        description="The gateway reads an ``outcomes`` message, so the worker may report "
        "this task's end together with other tasks' (older gateways leave it unset).",
    )


class Barrier(_Wire):
    """Sent through a service's task queue; the worker that receives it says so at once."""

    kind: Literal["barrier"] = "barrier"
    barrier_id: UUID
    service: ServiceId


class ErrorInfo(BaseModel):
    """Why a job failed: a stable machine code, the exception type and a human message."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    code: Annotated[str, Field(min_length=1, max_length=64)]
    type: ShortText
    message: Text
    retryable: bool = False


class _JobEvent(_Wire):
    job_id: UUID
    service: ServiceId
    attempt: Attempt = 1
    run_id: UUID = Field(description="One execution of the task; a redelivery starts a new run.")
    worker_id: Name
    emitted_at: Timestamp = Field(default_factory=utcnow)


class Started(_JobEvent):
    """A worker took the task and is about to run the handler."""

    kind: Literal["started"] = "started"
    host: Name
    worker_version: Version


class Progress(_JobEvent):
    """How far along the run is; ``seq`` rises with every progress event of a run."""

    kind: Literal["progress"] = "progress"
    percent: int = Field(ge=0, le=100)
    message: Text | None = None
    seq: Sequence


class RunStart(BaseModel):
    """Where and when a run started, carried by its terminal event (whether or not a
    ``started`` event announced it: the two may be applied in either order)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    host: Name
    worker_version: Version
    started_at: Timestamp


class _Terminal(_JobEvent):
    start: RunStart | None = Field(
        default=None,
        description="Where and when the run started; set by every worker of this version, "
        "whether or not a ``started`` event announced the run (older workers set it only "
        "when none did).",
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
    message: Text | None = None


class Retrying(_JobEvent):
    """The run failed in a way worth retrying; ``attempt`` is the attempt that comes next."""

    kind: Literal["retrying"] = "retrying"
    delay: float = Field(ge=0, le=366 * 86400)
    error: ErrorInfo


MAX_CONCURRENCY = 10_000
"""The most jobs one worker process may run at once, and so list in a heartbeat: a bound that
keeps a hostile heartbeat from making the workers list and its pages huge."""


class Heartbeat(_Wire):
    """A worker is alive: sent every few seconds, even while handlers burn CPU; its last one,
    on a clean shutdown, says it is ``leaving``."""

    kind: Literal["heartbeat"] = "heartbeat"
    worker_id: Name
    service: ServiceId
    version: Version
    host: Name
    concurrency: int = Field(ge=0, le=MAX_CONCURRENCY)
    running: list[UUID] = Field(default_factory=list, max_length=MAX_CONCURRENCY)
    emitted_at: Timestamp = Field(default_factory=utcnow)
    leaving: bool = Field(
        default=False,
        description="The worker's goodbye: it stopped cleanly and sends no more heartbeats. "
        "A heartbeat rather than a kind of its own, so that a gateway that does not know "
        "the field still reads it (as one more heartbeat).",
    )


class BarrierPassed(_Wire):
    """A worker received a :class:`Barrier`: every task queued before it was delivered."""

    kind: Literal["barrier"] = "barrier"
    barrier_id: UUID
    service: ServiceId
    worker_id: Name
    emitted_at: Timestamp = Field(default_factory=utcnow)


JobEvent = Started | Progress | Retrying | Succeeded | Failed | Cancelled
TerminalEvent = Succeeded | Failed | Cancelled

MAX_OUTCOMES = 256
"""The most terminal events one ``outcomes`` message carries."""


class Outcomes(_Wire):
    """The terminal events of several tasks of one service that ended together, in one
    message: one publish, one confirm and one delivery for all of them.

    A worker sends one only for tasks whose gateway said it reads them
    (:attr:`Task.batch_outcomes`); each event in it means exactly what it means alone.
    """

    kind: Literal["outcomes"] = "outcomes"
    service: ServiceId
    worker_id: Name
    events: list[Annotated[TerminalEvent, Field(discriminator="kind")]] = Field(
        min_length=1, max_length=MAX_OUTCOMES
    )

    @staticmethod
    def encode(service: str, worker_id: str, bodies: list[bytes]) -> bytes:
        """The message's body around events already serialised (each by ``to_bytes``), so
        that a batch costs no second serialisation of its events."""
        head = Outcomes.model_construct(service=service, worker_id=worker_id, events=[])
        envelope = head.model_dump_json().encode()
        return envelope[: -len(b"[]}")] + b"[" + b",".join(bodies) + b"]}"


Event = Annotated[JobEvent | Heartbeat | BarrierPassed | Outcomes, Field(discriminator="kind")]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(body: bytes) -> Event:
    """Parse an event body.

    Raises ``pydantic.ValidationError`` when it is not one and :class:`NewerSchema` when it
    was written for a newer contract.
    """
    event = EVENT_ADAPTER.validate_json(body)
    check_schema(event)
    if isinstance(event, Outcomes):
        for inner in event.events:
            check_schema(inner)
    return event


def parse_task(body: bytes, message_type: str | None = None) -> Task | Barrier:
    """Parse what a task queue delivers: a :class:`Task`, or a :class:`Barrier` when the AMQP
    ``type`` says so. Raises like :func:`parse_event`."""
    message: Task | Barrier = (
        Barrier.model_validate_json(body)
        if message_type == BARRIER
        else Task.model_validate_json(body)
    )
    check_schema(message)
    return message


def describe_error(exc: Exception) -> str:
    """One line on why a message did not parse (the first of its errors, and how many)."""
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        if errors:
            where = ".".join(str(p) for p in errors[0]["loc"])
            return f"{where}: {errors[0]['msg']} ({len(errors)} error(s))"
    return str(exc)[:200]


class CancelRequest(_Wire):
    """Control message: stop this job wherever it is."""

    kind: Literal["cancel"] = "cancel"
    job_id: UUID


__all__ = [
    "BARRIER",
    "MAX_OUTCOMES",
    "REFUSED_HEADER",
    "SCHEMA_VERSION",
    "TASK",
    "Barrier",
    "BarrierPassed",
    "CancelRequest",
    "Cancelled",
    "ErrorInfo",
    "Event",
    "Failed",
    "Heartbeat",
    "JobEvent",
    "LegacyDocument",
    "NewerSchema",
    "Outcomes",
    "Progress",
    "Retrying",
    "RunStart",
    "Started",
    "Succeeded",
    "Task",
    "TerminalEvent",
    "check_schema",
    "describe_error",
    "parse_event",
    "parse_task",
    "utcnow",
]
