"""Everything the client raises, one tree. Problem documents become the class of their ``code``
(or of their HTTP status when the code is new to this client)::

    ClientError
    ├── GatewayUnreachable            no answer: refused, reset or timed out, retries spent
    ├── WaitTimeout                   the job did not end in time (also a TimeoutError)
    ├── UnexpectedResponse            an answer the API does not promise
    └── ApiError                      a problem document; .status .code .detail .errors
        ├── BadRequest (400)          invalid-request
        │   ├── InvalidQueryParameter invalid-query-parameter-value
        │   ├── InvalidParameterValue invalid-parameter-value
        │   └── NoSuchOutput          no-such-output
        ├── Unauthorized (401)        unauthorized
        ├── Forbidden (403)           forbidden
        ├── NotFound (404)            not-found
        │   ├── UnknownProcess        no-such-process
        │   ├── UnknownJob            no-such-job
        │   ├── ResultNotReady        result-not-ready
        │   └── JobDismissed          job-dismissed
        ├── RequestTimeout (408)      request-timeout
        ├── IdempotencyConflict (409) idempotency-conflict
        ├── Gone (410)
        │   ├── ResultPurged          result-purged
        │   └── JobGone               job-gone
        ├── BodyTooLarge (413)        body-too-large
        ├── Unprocessable (422)
        │   ├── InvalidInput          invalid-input
        │   └── JobFailed             job-failed (.job_error says why)
        ├── TooManyRequests (429)
        │   ├── QueueFull             queue-full
        │   ├── RateLimited           rate-limited
        │   └── QuotaExceeded         quota-exceeded
        ├── HeadersTooLarge (431)     headers-too-large
        └── ServiceUnavailable (503)
            ├── BrokerUnavailable     broker-unavailable
            └── StoreUnavailable      store-unavailable

The codes are the gateway's (``docs/jobs.md``, ``docs/security.md``); this package does not
import the gateway, so the two lists are kept in step by a test.
"""

from __future__ import annotations

from typing import ClassVar

import httpx

from sgw_client._models import FieldError, Job, JobError, Problem


class ClientError(Exception):
    """Base of everything this package raises."""


class GatewayUnreachable(ClientError):
    """The gateway gave no answer (connection refused or reset, timeout) and the retries are
    spent; ``__cause__`` is the last transport error."""


class WaitTimeout(ClientError, TimeoutError):
    """The job did not end within the time given; ``job`` is how it stood last."""

    def __init__(self, message: str, job: Job | None = None) -> None:
        super().__init__(message)
        self.job = job


class UnexpectedResponse(ClientError):
    """The gateway answered something the API does not promise (a body that does not parse)."""

    def __init__(self, message: str, response: httpx.Response | None = None) -> None:
        super().__init__(message)
        self.response = response


_BY_CODE: dict[str, type[ApiError]] = {}
_BY_STATUS: dict[int, type[ApiError]] = {}


class ApiError(ClientError):
    """The gateway answered with a problem document (``application/problem+json``)."""

    status_code: ClassVar[int | None] = None  # set on the class of an HTTP status
    error_code: ClassVar[str | None] = None  # set on the class of a problem code

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        code = cls.__dict__.get("error_code")
        if isinstance(code, str):
            _BY_CODE[code] = cls
        status = cls.__dict__.get("status_code")
        if isinstance(status, int):
            _BY_STATUS.setdefault(status, cls)

    def __init__(self, problem: Problem, response: httpx.Response | None = None) -> None:
        text = f"{problem.status} {problem.code or problem.title}: {problem.detail}"
        super().__init__(text)
        self.problem = problem
        self.response = response

    @property
    def status(self) -> int:
        """The HTTP status."""
        return self.problem.status

    @property
    def code(self) -> str:
        """The gateway's stable machine code (``no-such-job``, ``invalid-input``, ...)."""
        return self.problem.code

    @property
    def title(self) -> str:
        return self.problem.title

    @property
    def detail(self) -> str:
        """What went wrong, for a human."""
        return self.problem.detail

    @property
    def type(self) -> str:
        """The problem type URI."""
        return self.problem.type

    @property
    def errors(self) -> tuple[FieldError, ...]:
        """Each failing field of the request (422)."""
        return self.problem.errors

    @property
    def job_error(self) -> JobError | None:
        """Why the job failed (``job-failed``)."""
        return self.problem.job_error


def error_class(status: int, code: str) -> type[ApiError]:
    """The most precise class for a problem: by its code, else by its status."""
    return _BY_CODE.get(code) or _BY_STATUS.get(status) or ApiError


class BadRequest(ApiError):
    """The request itself is malformed: its body, a parameter (a job id that is not a UUID)
    or a header."""

    status_code = 400
    error_code = "invalid-request"


class InvalidQueryParameter(BadRequest):
    """A query parameter (a job-list filter, a cursor) has a value the gateway refuses."""

    error_code = "invalid-query-parameter-value"


class InvalidParameterValue(BadRequest):
    """A member of the execute request has a value the process cannot honour."""

    error_code = "invalid-parameter-value"


class NoSuchOutput(BadRequest):
    """The execute request names an output the process does not have."""

    error_code = "no-such-output"


class Unauthorized(ApiError):
    """No valid token (missing, expired, wrong signature)."""

    status_code = 401
    error_code = "unauthorized"


class Forbidden(ApiError):
    """The token lacks a scope the service requires."""

    status_code = 403
    error_code = "forbidden"


class NotFound(ApiError):
    status_code = 404


class UnknownProcess(NotFound):
    error_code = "no-such-process"


class UnknownJob(NotFound):
    """No such job, or another caller's."""

    error_code = "no-such-job"


class ResultNotReady(NotFound):
    """The job is still queued or running."""

    error_code = "result-not-ready"


class JobDismissed(NotFound):
    """The job was dismissed (cancelled or expired): it has no result."""

    error_code = "job-dismissed"


class RequestTimeout(ApiError):
    """The request's headers or body came too slowly; the gateway closed the connection."""

    status_code = 408
    error_code = "request-timeout"


class IdempotencyConflict(ApiError):
    """The Idempotency-Key was used before for another request."""

    status_code = 409
    error_code = "idempotency-conflict"


class Gone(ApiError):
    status_code = 410


class ResultPurged(Gone):
    error_code = "result-purged"


class JobGone(Gone):
    """The job was purged when its retention ended."""

    error_code = "job-gone"


class BodyTooLarge(ApiError):
    status_code = 413
    error_code = "body-too-large"


class Unprocessable(ApiError):
    status_code = 422


class InvalidInput(Unprocessable):
    """The inputs do not match the process's schema; ``errors`` names each failing path."""

    error_code = "invalid-input"


class JobFailed(Unprocessable):
    """The job failed; ``job_error`` holds its worker's code, type and message."""

    error_code = "job-failed"


class TooManyRequests(ApiError):
    """Refused for now: retried with back-off on submit before it reaches the caller."""

    status_code = 429


class QueueFull(TooManyRequests):
    error_code = "queue-full"


class RateLimited(TooManyRequests):
    error_code = "rate-limited"


class QuotaExceeded(TooManyRequests):
    error_code = "quota-exceeded"


class HeadersTooLarge(ApiError):
    """The request's headers are past the gateway's limit (``SG_MAX_HEADER_SIZE``)."""

    status_code = 431
    error_code = "headers-too-large"


class ServiceUnavailable(ApiError):
    """The gateway cannot serve now (broker or store down)."""

    status_code = 503


class BrokerUnavailable(ServiceUnavailable):
    error_code = "broker-unavailable"


class StoreUnavailable(ServiceUnavailable):
    error_code = "store-unavailable"
