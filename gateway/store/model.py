"""The job record: one per job, the store's unit (DESIGN §4)."""

from __future__ import annotations

import os
import time
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from worker_sdk.wire import ErrorInfo


class JobStatus(StrEnum):
    """OGC API – Processes status codes."""

    ACCEPTED = "accepted"
    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    DISMISSED = "dismissed"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCESSFUL, JobStatus.FAILED, JobStatus.DISMISSED})
ACTIVE = frozenset({JobStatus.ACCEPTED, JobStatus.RUNNING})

_MS = (1 << 48) - 1
_RAND_B = (1 << 62) - 1


def new_job_id() -> UUID:
    """A new job's id: a version-7 UUID (RFC 9562), the Unix time in milliseconds followed by
    74 random bits.

    Ids that grow with time go to the right edge of the store's primary-key index (SQLite's
    and MongoDB's ``_id``) instead of a random leaf of it: a group commit of new jobs dirties
    the few pages the previous jobs dirtied, not one more page per job. The random bits keep
    ids unguessable, and every read of such a job is checked against its owner. A job of the
    old routes, which ``SG_LEGACY_OPEN_STATUS`` lets anyone holding its uuid read, gets a
    random version-4 uuid instead (122 random bits; see ``JobService.submit``).

    Written here because Python has ``uuid.uuid7`` only from 3.14, and the ``uuid6`` package
    keeps its ids increasing by moving their time a millisecond ahead per id past 1,000 ids a
    second, which a gateway reaches; ids of one millisecond need no order here.
    """
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits: 12 for rand_a, 62 for rand_b
    ms = time.time_ns() // 1_000_000 & _MS
    return UUID(int=ms << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62 | rand & _RAND_B)


class Reason(StrEnum):
    """Why a job is dismissed or failed."""

    CANCELLED = "cancelled"
    EXPIRED = "expired"
    WORKER_LOST = "worker_lost"
    TIME_LIMIT = "time_limit"
    MEMORY_LIMIT = "memory_limit"
    CPU_TIME_LIMIT = "cpu_time_limit"
    INVALID_INPUT = "invalid_input"
    INVALID_TASK = "invalid_task"
    HANDLER_ERROR = "handler_error"
    PUBLISH_FAILED = "publish_failed"
    NOT_QUEUED = "not_queued"
    VERSION_MISMATCH = "version_mismatch"
    RESULT_TOO_LARGE = "result_too_large"
    INVALID_RESULT = "invalid_result"


# The reasons a run's own failure gives, as its worker names them in its error's code. The
# others are the gateway's verdicts (a cancel, an expiry, a lost worker...), no handler's.
RUN_REASONS = frozenset(
    {
        Reason.TIME_LIMIT,
        Reason.MEMORY_LIMIT,
        Reason.CPU_TIME_LIMIT,
        Reason.INVALID_INPUT,
        Reason.HANDLER_ERROR,
        Reason.RESULT_TOO_LARGE,
        Reason.INVALID_RESULT,
    }
)


class WorkerInfo(BaseModel):
    """Which worker ran (or runs) the job."""

    model_config = ConfigDict(frozen=True)

    id: str
    host: str
    version: str


class WorkerState(BaseModel):
    """A worker as its heartbeats left it in the store."""

    model_config = ConfigDict(frozen=True)

    id: str
    service: str
    host: str
    version: str
    concurrency: int = 0
    running: tuple[UUID, ...] = ()
    seen: datetime = Field(description="When the gateway last applied one of its heartbeats.")
    since: datetime = Field(description="When the gateway applied its first heartbeat.")


class LegacyFields(BaseModel):
    """What a job submitted on the old ServiceGateway routes carries beside its ``misc``
    (kept as its inputs): the document and the annotation storage its task names."""

    model_config = ConfigDict(frozen=True)

    document_url: str | None = None
    annotation_service_url: str | None = None


class Delivery(BaseModel):
    """How the client asked for the results (OGC execute ``response`` and ``outputs``):
    ``raw`` values or a results ``document``, of these outputs (``None``: every output)."""

    model_config = ConfigDict(frozen=True)

    response: Literal["raw", "document"] = "raw"
    outputs: tuple[str, ...] | None = None


class JobRecord(BaseModel):
    """Everything the gateway knows about one job."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    service: str
    owner: str
    status: JobStatus = JobStatus.ACCEPTED
    reason: str | None = None
    progress: int = Field(default=0, ge=0, le=100)
    message: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: ErrorInfo | None = None
    attempt: int = 1
    run_id: UUID | None = None
    progress_seq: int = 0
    worker: WorkerInfo | None = None
    created: datetime
    started: datetime | None = None
    updated: datetime
    finished: datetime | None = None
    purged: datetime | None = Field(
        default=None, description="When a dismiss removed the result of this finished job."
    )
    expires_at: datetime | None = None
    idempotency_key: str | None = None
    request_hash: str | None = Field(
        default=None, description="Fingerprint of the submission, to tell key reuse apart."
    )
    subscriber: dict[str, str] | None = None
    seq: int = Field(
        default=1,
        ge=1,
        description="Rises by one with every change a client can see (server-sent event ids).",
    )
    legacy: LegacyFields | None = Field(
        default=None, description="Set for jobs submitted on the old ServiceGateway routes."
    )
    queued: datetime | None = Field(
        default=None, description="When the broker confirmed the job's first task, if known."
    )
    delivery: Delivery | None = Field(
        default=None, description="The results form asked for at submission (raw when unset)."
    )
    webhook_open: bool = Field(
        default=False,
        description="A webhook may still be owed: set at submission with a subscriber, cleared "
        "once the webhook of the job's terminal state is queued (the webhooks' outbox).",
    )
    webhook_seq: int = Field(
        default=0,
        ge=0,
        description="The ``seq`` of the last change whose webhook was queued (or that owed none).",
    )


class WebhookAttempt(BaseModel):
    """The outcome of one attempt to deliver a webhook event, as the store records it."""

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(description="The event's ``webhook-id``; the same on every attempt.")
    job_id: UUID
    type: str
    url: str
    at: datetime
    status_code: int | None = None
    error: str | None = None
    delivered: bool = False
    next_attempt: datetime | None = None
    exhausted: bool = Field(default=False, description="The last attempt allowed failed.")


class WebhookDelivery(BaseModel):
    """One webhook event of a job and where its delivery stands, attempt by attempt."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="The event's ``webhook-id``.")
    job_id: UUID
    type: str
    url: str
    attempts: int = 0
    first_attempt: datetime | None = None
    last_attempt: datetime | None = None
    last_status: int | None = Field(default=None, description="HTTP status of the last attempt.")
    last_error: str | None = None
    next_attempt: datetime | None = None
    delivered: datetime | None = Field(default=None, description="When an attempt succeeded.")
    exhausted: bool = False

    @property
    def state(self) -> Literal["delivered", "failed", "retrying"]:
        if self.delivered is not None:
            return "delivered"
        return "failed" if self.exhausted else "retrying"
