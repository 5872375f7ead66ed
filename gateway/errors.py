"""One error tree, one handler: every error knows its HTTP status and a stable machine code.

::

    GatewayError
    ├── NotFound (404)
    │   ├── UnknownProcess        no-such-process
    │   ├── UnknownJob            no-such-job
    │   ├── ResultNotReady        result-not-ready
    │   └── JobDismissed          job-dismissed
    ├── BadRequest (400)          invalid-request
    │   ├── InvalidQueryParameter invalid-query-parameter-value
    │   ├── InvalidParameterValue invalid-parameter-value
    │   └── NoSuchOutput          no-such-output
    ├── Unauthorized (401)        unauthorized
    ├── Forbidden (403)           forbidden
    ├── IdempotencyConflict (409) idempotency-conflict
    ├── ResultPurged (410)        result-purged
    ├── JobGone (410)             job-gone
    ├── BodyTooLarge (413)        body-too-large
    ├── InvalidInput (422)        invalid-input
    ├── JobFailed (422)           job-failed
    ├── QueueFull (429)           queue-full
    ├── RateLimited (429)         rate-limited
    ├── QuotaExceeded (429)       quota-exceeded
    └── ServiceUnavailable (503)
        ├── BrokerUnavailable     broker-unavailable
        └── StoreUnavailable      store-unavailable

Bodies are RFC 9457 problem details (``application/problem+json``); the ``type`` URIs are the
OGC API – Processes exception types where one exists.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.store.base import StoreError
from worker_sdk.wire import ErrorInfo

OGC_EXCEPTIONS = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
PROBLEM_JSON = "application/problem+json"


class FieldError(BaseModel):
    """One failing part of a request: where (a JSON pointer or a parameter) and why."""

    path: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable ``code`` to switch on."""

    type: str
    title: str
    status: int
    code: str
    detail: str
    errors: list[FieldError] | None = Field(default=None, description="Each failing field.")
    job_error: ErrorInfo | None = Field(default=None, description="Why the job failed.")


class GatewayError(Exception):
    """Base of every error the gateway answers with; subclasses set status and code."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"
    ogc: ClassVar[bool] = False

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        job_error: ErrorInfo | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.job_error = job_error
        self.headers = headers or {}

    def problem(self) -> Problem:
        prefix = OGC_EXCEPTIONS if self.ogc else "urn:service-gateway:error:"
        return Problem(
            type=prefix + self.code,
            title=self.title,
            status=self.status,
            code=self.code,
            detail=self.detail,
            errors=self.errors,
            job_error=self.job_error,
        )


class NotFound(GatewayError):
    status = 404
    code = "not-found"
    title = "Not found"


class UnknownProcess(NotFound):
    code = "no-such-process"
    title = "No such process"
    ogc = True


class UnknownJob(NotFound):
    code = "no-such-job"
    title = "No such job"
    ogc = True


class ResultNotReady(NotFound):
    code = "result-not-ready"
    title = "Result not ready"
    ogc = True


class JobDismissed(NotFound):
    code = "job-dismissed"
    title = "Job dismissed"


class BadRequest(GatewayError):
    """The request itself is malformed: its body, a parameter or a header."""

    status = 400
    code = "invalid-request"
    title = "Invalid request"
    ogc = False


class InvalidQueryParameter(BadRequest):
    """A query parameter's value cannot be used (a filter, a cursor, a page size)."""

    code = "invalid-query-parameter-value"
    title = "Invalid query parameter value"
    ogc = True


class InvalidParameterValue(BadRequest):
    """An execute request asks for a results form the process cannot give."""

    code = "invalid-parameter-value"
    title = "Invalid parameter value"


class NoSuchOutput(BadRequest):
    """An execute request names an output the process does not have."""

    code = "no-such-output"
    title = "No such output"
    ogc = True


class RequestTimeout(GatewayError):
    """A request whose headers or body came too slowly (``SG_HEADER_TIMEOUT``,
    ``SG_BODY_TIMEOUT``; answered by :mod:`gateway.server`, which then closes the
    connection)."""

    status = 408
    code = "request-timeout"
    title = "Request timeout"


class HeadersTooLarge(GatewayError):
    """Request headers over ``SG_MAX_HEADER_SIZE`` bytes (answered by :mod:`gateway.server`,
    which then closes the connection)."""

    status = 431
    code = "headers-too-large"
    title = "Request header fields too large"


class BodyTooLarge(GatewayError):
    """A request body over ``SG_MAX_BODY_SIZE`` (see :mod:`gateway.body_limit`)."""

    status = 413
    code = "body-too-large"
    title = "Body too large"


class Unauthorized(GatewayError):
    """No valid token: answered with ``WWW-Authenticate`` (RFC 6750)."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"

    def __init__(self, detail: str, *, error: str | None = None) -> None:
        challenge = 'Bearer realm="service-gateway"'
        if error is not None:
            challenge += f', error="{error}", error_description="{_description(detail)}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


# The most characters of a challenge's error_description: the problem document has the whole.
DESCRIPTION_MAX = 200


def _description(detail: str) -> str:
    """``detail`` as a challenge's ``error_description`` may hold it (RFC 6750 section 3:
    printable ASCII but ``"`` and ``\\``): a token's own text, which PyJWT quotes in its
    errors (an unknown ``crit`` extension, a ``kid``), is any text, and a header with a
    non-Latin-1 or control character cannot be sent at all."""
    text = detail.replace('"', "'")
    safe = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text)
    return safe if len(safe) <= DESCRIPTION_MAX else safe[: DESCRIPTION_MAX - 3] + "..."


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class IdempotencyConflict(GatewayError):
    status = 409
    code = "idempotency-conflict"
    title = "Idempotency key reused"


class ResultPurged(GatewayError):
    status = 410
    code = "result-purged"
    title = "Result purged"


class JobGone(GatewayError):
    status = 410
    code = "job-gone"
    title = "Job purged"


class InvalidInput(GatewayError):
    status = 422
    code = "invalid-input"
    title = "Invalid input"


class JobFailed(GatewayError):
    status = 422
    code = "job-failed"
    title = "Job failed"


class QueueFull(GatewayError):
    status = 429
    code = "queue-full"
    title = "Queue full"


class RateLimited(GatewayError):
    status = 429
    code = "rate-limited"
    title = "Too many submissions"


class QuotaExceeded(GatewayError):
    status = 429
    code = "quota-exceeded"
    title = "Too many active jobs"


class ServiceUnavailable(GatewayError):
    status = 503
    code = "service-unavailable"
    title = "Service unavailable"


class BrokerUnavailable(ServiceUnavailable):
    code = "broker-unavailable"
    title = "Broker unavailable"


class StoreUnavailable(ServiceUnavailable):
    code = "store-unavailable"
    title = "Store unavailable"


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        problem.model_dump(mode="json", exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def responses(*errors: type[GatewayError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries declaring that a route may answer these errors."""
    out: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        entry = out.setdefault(
            error.status, {"model": Problem, "description": "", "content": _PROBLEM_CONTENT}
        )
        entry["description"] = ", ".join(filter(None, [entry["description"], error.code]))
    return out


# Declared on every route, replacing FastAPI's default 422 (documented as application/json).
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": Problem,
        "description": "invalid-request (a malformed parameter, header or body)",
        "content": _PROBLEM_CONTENT,
    },
    422: {
        "model": Problem,
        "description": "invalid-input (the inputs do not match the process's schema)",
        "content": _PROBLEM_CONTENT,
    },
    413: {
        "model": Problem,
        "description": "body-too-large (the body is larger than SG_MAX_BODY_SIZE)",
        "content": _PROBLEM_CONTENT,
    },
}


def error_response(exc: GatewayError | StoreError) -> JSONResponse:
    """The answer to one of our errors (the handlers' and the fast lanes')."""
    if isinstance(exc, StoreError):
        # The one place a store failure becomes an HTTP answer.
        failure = StoreUnavailable(f"the job store does not answer: {exc}")
        return problem_response(failure.problem(), {"Retry-After": "5"})
    return problem_response(exc.problem(), exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, ours and the framework's, as problem details."""

    async def gateway_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        return error_response(exc)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            FieldError(path="/".join(str(p) for p in e["loc"]), message=e["msg"])
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e.path}: {e.message}" for e in errors)
        if all(e["loc"][:1] == ("query",) for e in exc.errors()):
            return problem_response(InvalidQueryParameter(detail, errors=errors).problem())
        return problem_response(BadRequest(detail, errors=errors).problem())

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        # The framework's own refusals read as ours: the same code and title for the same
        # status (its detail kept), whichever layer answered.
        ours = {400: BadRequest, 404: NotFound, 413: BodyTooLarge}.get(exc.status_code)
        code = ours.code if ours else f"http-{exc.status_code}"
        if exc.status_code == 405:
            code = "method-not-allowed"
        problem = Problem(
            type=f"urn:service-gateway:error:{code}",
            title=ours.title if ours else str(exc.detail),
            status=exc.status_code,
            code=code,
            detail=str(exc.detail),
        )
        return problem_response(problem, dict(exc.headers or {}))

    async def store_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StoreError)
        return error_response(exc)

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(StoreError, store_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
