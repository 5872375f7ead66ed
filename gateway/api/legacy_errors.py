"""The old gateway's error format, for every route of the old API: ``{"status",
"description", "vesta": {"code", "message"}}`` as JSON when the client accepts it, else an
HTML page. A :class:`LegacyRoute` renders the gateway's one error tree this way."""

from __future__ import annotations

import html
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from gateway.api.html import new_nonce, security_headers
from gateway.errors import (
    BadRequest,
    GatewayError,
    InvalidInput,
    ServiceUnavailable,
    StoreUnavailable,
    UnknownJob,
    UnknownProcess,
)
from gateway.negotiation import best_match
from gateway.store import StoreError


class VestaError(BaseModel):
    code: int
    message: str


class LegacyErrorBody(BaseModel):
    """The old gateway's error body."""

    status: int
    description: str
    vesta: VestaError


LEGACY_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "model": LegacyErrorBody,
        "description": "The old error body (JSON when accepted, else an HTML page).",
        "content": {"text/html": {"schema": {"type": "string"}}},
    }
    for status in (400, 401, 403, 429, 503)
}


class LegacyError(Exception):
    """An error in the old format: HTTP status, vesta code, message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers: dict[str, str] = {}

    @classmethod
    def of(cls, exc: Exception) -> LegacyError:
        """The old gateway's answer to one of the gateway's errors, with its ``Retry-After``
        (a 429's or a 503's: when to try again) and its ``WWW-Authenticate`` (a 401's
        challenge, which RFC 9110 requires), neither of which the old gateway sent."""
        error = cls._of(exc)
        if isinstance(exc, GatewayError):
            error.headers = {
                name: exc.headers[name]
                for name in ("Retry-After", "WWW-Authenticate")
                if name in exc.headers
            }
        return error

    @classmethod
    def _of(cls, exc: Exception) -> LegacyError:
        if isinstance(exc, LegacyError):
            return exc
        if isinstance(exc, StoreError):
            return cls(503, 102, f"the job store does not answer: {exc}")
        if isinstance(exc, RequestValidationError):
            return cls(400, 105, "; ".join(str(e.get("msg", "")) for e in exc.errors()))
        if isinstance(exc, HTTPException):  # the form parser's: too many fields, no boundary
            return cls(exc.status_code, 105 if exc.status_code == 400 else 101, str(exc.detail))
        assert isinstance(exc, GatewayError)
        if isinstance(exc, UnknownProcess):
            return cls(400, 202, f"User requested a service which does not exist : {exc.detail}")
        if isinstance(exc, UnknownJob):
            return cls(400, 203, f"User requested a UUID which did not exist : {exc.detail}")
        if isinstance(exc, InvalidInput | BadRequest):
            return cls(400, 105, exc.detail)
        if isinstance(exc, StoreUnavailable):
            return cls(exc.status, 102, exc.detail)
        if isinstance(exc, ServiceUnavailable):
            return cls(exc.status, 205, exc.detail)
        return cls(exc.status, 101, exc.detail)


def render_error(request: Request, exc: LegacyError) -> Response:
    """JSON for clients that prefer it (``*/*`` included, as Werkzeug matched it), else the
    old HTML page."""
    reason = HTTPStatus(exc.status).phrase
    accept = request.headers.get("accept")
    if best_match(accept, ["application/json", "text/html"]) == "application/json":
        body = {
            "status": exc.status,
            "description": reason,
            "vesta": {"code": exc.code, "message": exc.message},
        }
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)
    page = (
        f"<!doctype html><title>{exc.status} {html.escape(reason)}</title>"
        f"<h2>{exc.status} : {html.escape(reason)}</h2>"
        f"<p>Internal error code: {exc.code} : {html.escape(exc.message)}</p>"
    )
    headers = {**security_headers(new_nonce()), **exc.headers}
    return HTMLResponse(page, status_code=exc.status, headers=headers)


class LegacyRoute(APIRoute):
    """A route of the old API: every error it raises is answered in the old format."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def legacy_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except (
                GatewayError,
                StoreError,
                LegacyError,
                RequestValidationError,
                HTTPException,
            ) as exc:
                return render_error(request, LegacyError.of(exc))

        return legacy_handler
