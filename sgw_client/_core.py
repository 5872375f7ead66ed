"""What the sync and async clients share: building requests, reading answers, mapping
problem documents to errors, and the retry budget of a call. No I/O happens here; each client
sends, sleeps and reads in its own way around these pieces (as httpx does)."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote
from uuid import UUID

import httpx
from httpx_sse import ServerSentEvent
from pydantic import BaseModel, TypeAdapter, ValidationError

from sgw_client._config import RetryPolicy, resolve
from sgw_client._errors import (
    ApiError,
    GatewayUnreachable,
    UnexpectedResponse,
    WaitTimeout,
    error_class,
)
from sgw_client._models import Job, JobStatus, Problem, Process, WorkerInfo

#: Answers that mean "not now": the call is retried after a pause.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: Failures that mean "no answer": the request may or may not have arrived.
BROKEN: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)
#: While following a job with a deadline, an idle stream is reopened this often (seconds).
#: The gateway pings an idle stream every 15 s, so no ping arrives before this read timeout:
#: a blocking read never outlives the deadline, in the sync client as in the async one.
IDLE_REOPEN = 10.0
#: Without a deadline, a stream silent this long (pings included) is taken for dead.
STREAM_SILENCE = 60.0

JobRef = UUID | str | Job
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_PROCESSES = TypeAdapter(list[Process])
_WORKERS = TypeAdapter(list[WorkerInfo])


@dataclass(frozen=True, slots=True)
class Call:
    """One request, ready to be built by either client and sent as often as needed."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    timeout: httpx.Timeout | None = None

    def describe(self) -> str:
        return f"{self.method} {self.path}"


def job_id(job: JobRef) -> str:
    """The id of a job given as a Job, a UUID or a string, quoted for a path."""
    value = job.id if isinstance(job, Job) else job
    return quote(str(value), safe="")


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_of(response: httpx.Response) -> ApiError:
    """The typed error of an unsuccessful answer, from its problem document when it has one."""
    problem: Problem | None = None
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        body.setdefault("status", response.status_code)
        try:
            problem = Problem.model_validate(body)
        except ValidationError:
            problem = None
    if problem is None:  # a proxy's page, or no body at all
        text = response.text.strip()[:500] if response.content else ""
        problem = Problem(
            status=response.status_code,
            title=response.reason_phrase,
            detail=text or response.reason_phrase,
        )
    return error_class(problem.status, problem.code)(problem, response)


def finished_job(response: httpx.Response) -> str | None:
    """The job a submission answered with its results (OGC synchronous execution: ``200``,
    the results as the body, the job at ``Location``), else ``None``."""
    if response.status_code != 200 or "location" not in response.headers:
        return None
    body = response.json() if response.content else None
    if isinstance(body, dict) and "jobID" in body:
        return None
    return response.headers["location"].rstrip("/").rsplit("/", 1)[-1]


def parse(model: type[M], response: httpx.Response) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise UnexpectedResponse(
            f"{response.request.method} {response.request.url.path}: not a {model.__name__}: "
            f"{exc.errors()[0]['msg']}",
            response,
        ) from exc


def parse_list(adapter: TypeAdapter[list[T]], key: str, response: httpx.Response) -> list[T]:
    """A list answered bare or under ``key`` (``{"processes": [...]}``)."""
    try:
        body = response.json()
        return adapter.validate_python(body.get(key) if isinstance(body, dict) else body)
    except (ValidationError, ValueError) as exc:
        raise UnexpectedResponse(
            f"{response.request.method} {response.request.url.path}: not a list of {key}",
            response,
        ) from exc


def status_event(sse: ServerSentEvent) -> Job | None:
    """The job state a ``status`` event carries; None for any other event."""
    if sse.event != "status":
        return None
    try:
        return Job.model_validate_json(sse.data)
    except ValidationError as exc:
        raise UnexpectedResponse(f"a status event that is not a job: {sse.data[:200]!r}") from exc


class Attempts:
    """The retry budget of one logical call: ``policy.attempts`` tries, or, with a deadline
    (``time.monotonic()`` seconds), as many as fit before it."""

    def __init__(self, policy: RetryPolicy, what: str, deadline: float | None = None) -> None:
        self.policy = policy
        self.what = what
        self.deadline = deadline
        self.failures = 0
        self.last_failure = ""

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def succeeded(self) -> None:
        self.failures = 0

    def refused(self, response: httpx.Response) -> float:
        """The pause before retrying an unsuccessful answer; raises its error when it is not
        retryable or the budget is spent."""
        error = error_of(response)
        if response.status_code not in RETRY_STATUSES:
            raise error
        self.last_failure = f"{error.status} {error.code or error.title}"
        return self._pause(error, retry_after(response))

    def broken(self, exc: Exception) -> float:
        """The pause before retrying after no answer; raises when the budget is spent."""
        unreachable = GatewayUnreachable(f"{self.what}: no answer from the gateway: {exc!r}")
        unreachable.__cause__ = exc
        self.last_failure = repr(exc)
        return self._pause(unreachable, None)

    def expired(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= 0

    def _pause(self, error: Exception, hint: float | None) -> float:
        self.failures += 1
        if (self.deadline is None and self.failures >= self.policy.attempts) or self.expired():
            raise error
        pause = self.policy.pause(self.failures, hint)
        remaining = self.remaining()
        return pause if remaining is None else max(0.0, min(pause, remaining))


class Following:
    """Following one job's event stream across reconnections: where it resumes, how long a
    read may block, and when to give up. Both clients drive it around their own I/O."""

    def __init__(self, client: BaseClient, job: JobRef, deadline: float | None) -> None:
        self.path = f"/jobs/{job_id(job)}/events"
        self.attempts = Attempts(client.retry, f"GET {self.path}", deadline)
        self.last: Job | None = job if isinstance(job, Job) else None
        self._last_id: str | None = None
        self._timeout = client.timeout

    def headers(self) -> dict[str, str]:
        """``Last-Event-ID`` once an event was seen: the gateway sends only what came after."""
        return {"Last-Event-ID": self._last_id} if self._last_id else {}

    def timeout(self) -> httpx.Timeout:
        remaining = self.attempts.remaining()
        read = STREAM_SILENCE if remaining is None else max(0.01, min(remaining, IDLE_REOPEN))
        return httpx.Timeout(self._timeout, read=read)

    def event(self, sse: ServerSentEvent) -> Job | None:
        """The job state an event carries (None for other events)."""
        state = status_event(sse)
        if state is not None:
            self._last_id = sse.id or self._last_id
            self.last = state
            self.attempts.succeeded()
        return state

    def on_time(self) -> None:
        """Raise :class:`WaitTimeout` once the deadline has passed."""
        if self.attempts.expired():
            raise WaitTimeout(f"{self.attempts.what}: the time given ran out", self.last)

    def refused(self, response: httpx.Response) -> float:
        return self.attempts.refused(response)

    def broken(self, exc: Exception) -> float:
        return self.attempts.broken(exc)

    def ended(self) -> float:
        """The stream closed before the job ended (a gateway shutting down): reopen."""
        return self.attempts.broken(httpx.RemoteProtocolError("the event stream ended early"))

    def idle(self) -> float:
        """The stream stayed quiet until its read timeout. With a deadline that is expected:
        reopen at once while time is left; without, the peer is taken for dead."""
        if self.attempts.deadline is None:
            return self.attempts.broken(httpx.ReadTimeout("the event stream went silent"))
        self.on_time()
        return 0.0


class BaseClient:
    """Settings and request building common to :class:`Client` and :class:`AsyncClient`."""

    def __init__(
        self,
        base_url: str | None,
        token: str | None,
        *,
        timeout: float,
        retry: RetryPolicy,
        headers: dict[str, str] | None,
    ) -> None:
        self.base_url, self.token = resolve(base_url, token)
        self.retry = retry
        self.timeout = timeout
        self._headers = {"User-Agent": "sgw-client", **(headers or {})}
        if self.token:
            self._headers["Authorization"] = f"Bearer {self.token}"

    def _http_options(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "headers": self._headers,
            "timeout": httpx.Timeout(self.timeout),
        }

    def _attempts(self, call: Call, deadline: float | None = None) -> Attempts:
        return Attempts(self.retry, call.describe(), deadline)

    def _submit_call(
        self,
        process: str,
        inputs: dict[str, Any] | None,
        wait: float | None,
        idempotency_key: str | None,
        subscriber: Mapping[str, str] | None = None,
    ) -> Call:
        # One key for the logical submit, reused by every retry: the gateway answers a retry
        # of an accepted submit with the first job instead of queueing a second.
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        timeout = None
        if wait is not None and wait > 0:
            seconds = math.ceil(wait)
            headers["Prefer"] = f"wait={seconds}"
            timeout = httpx.Timeout(self.timeout, read=self.timeout + seconds)
        body: dict[str, Any] = {"inputs": inputs or {}}
        if subscriber:
            body["subscriber"] = dict(subscriber)
        return Call(
            "POST",
            f"/processes/{quote(process, safe='')}/execution",
            headers=headers,
            json={
                "inputs": inputs or {},
                **({"subscriber": dict(subscriber)} if subscriber else {}),
            },
            timeout=timeout,
        )

    @staticmethod
    def _job_call(method: str, job: JobRef, suffix: str = "") -> Call:
        return Call(method, f"/jobs/{job_id(job)}{suffix}")

    @staticmethod
    def _jobs_call(
        process: str | None, status: str | JobStatus | list[str] | None, page_size: int
    ) -> Call:
        params = [("limit", str(page_size))]
        if process:
            params.append(("processID", process))
        statuses = [status] if isinstance(status, str) else list(status or [])
        params.extend(("status", str(s)) for s in statuses)
        return Call("GET", "/jobs", params=tuple(params))

    @staticmethod
    def _next_page(response: httpx.Response) -> tuple[list[Job], Call | None]:
        """A page of jobs and the call for the next one (None after the last)."""
        try:
            body = response.json()
            jobs = [Job.model_validate(j) for j in body["jobs"]]
            links = body.get("links") or []
        except (ValidationError, ValueError, KeyError, TypeError) as exc:
            raise UnexpectedResponse("GET /jobs: not a list of jobs", response) from exc
        for link in links:
            if isinstance(link, dict) and link.get("rel") == "next" and jobs:
                # Only the query of the link is used, against this client's own base URL:
                # the token never follows a link to another host.
                params = httpx.URL(str(link.get("href", ""))).params.multi_items()
                return jobs, Call("GET", "/jobs", params=tuple(params))
        return jobs, None

    @staticmethod
    def _workers_call(service: str | None) -> Call:
        return Call("GET", "/workers", params=(("processID", service),) if service else ())

    @staticmethod
    def _workers(response: httpx.Response, service: str | None) -> list[WorkerInfo]:
        workers = parse_list(_WORKERS, "workers", response)
        return [w for w in workers if service is None or w.service == service]

    @staticmethod
    def _processes(response: httpx.Response) -> list[Process]:
        return parse_list(_PROCESSES, "processes", response)


def deadline_of(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout
