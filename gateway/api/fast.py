"""The fast lanes of the two hot requests: the status read (``GET /jobs/{jobID}``) and the
submission (``POST /processes/{processID}/execution``) answered without the framework's
routing and dependency solving, which cost more than the read itself and a fifth of a
submission.

Only the plain case takes a lane, and it runs the route's own code:

- a status read: ``/jobs/<uuid>`` (the id in its canonical lower-case form), no query string,
  wanting JSON, from a caller whose token is good, for a job the caller sees;
- a submission: no query string, ``Content-Type: application/json``, no ``Idempotency-Key``,
  a body that parses as an execute request, a good token; from there the route's own
  :func:`~gateway.api.processes.execute_job` answers, its errors rendered by the same
  function as the application's handlers.

Anything else (another form of the id, a query, HTML, a body the framework would refuse, an
error found before a submission has any effect) goes to the application, which routes it as
ever (with the body already read handed on) and answers with its problem document: such a
request costs a second try, never a different answer. Neither lane runs under a root path.

The lanes are the outermost layer (:attr:`gateway.body_limit.GatewayApp.outermost`): a plain
request pays for no middleware. What the middleware would have done for it, they do: a
request that may carry a body past the limit takes no lane (the application's limit answers
it, 413), a submission takes its lane only with a declared length, and the lane stops reading
past the limit whatever the server delivers (the application gets the body, and answers
it); a failure the lane does not answer itself is answered 500 by the server, as the
framework's error middleware would.
"""

from __future__ import annotations

import json
import re
from uuid import UUID

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api import listing
from gateway.api.execution import prefer_header
from gateway.api.processes import execute_job
from gateway.api.schemas import ExecuteRequest
from gateway.auth import Principal
from gateway.body_limit import may_exceed
from gateway.errors import GatewayError, error_response
from gateway.fleet import Waiting
from gateway.runtime import Call, Runtime, base_url, presenter
from gateway.store import JobRecord, StoreError

_STATUS_PATH = re.compile(
    r"/jobs/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})", re.ASCII
)
_EXECUTE_PATH = re.compile(r"/processes/([^/]{1,64})/execution")


async def status_of(
    runtime: Runtime, principal: Principal, job_id: UUID
) -> tuple[JobRecord, Waiting | None]:
    """One of the caller's jobs and, while it is accepted, what it waits on: what its status
    document shows (the route's and the lane's)."""
    record = await runtime.jobs.get(job_id, principal)
    return record, await runtime.capacity.waiting(record)


async def _call(request: Request) -> Call:
    runtime: Runtime = request.scope["state"]["runtime"]
    principal = await runtime.auth.authenticate(request.headers.get("authorization"))
    return Call(runtime, principal, presenter(await base_url(request), runtime))


class FastLanes:
    """Pure ASGI middleware: the plain hot requests answered here, every other request passed
    on untouched."""

    def __init__(self, app: ASGIApp, max_body_size: int | None = None) -> None:
        self.app = app
        self._limit = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["query_string"]
            or scope.get("root_path")
            or "state" not in scope
            or (self._limit is not None and may_exceed(scope, self._limit))
        ):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method == "GET" and (found := _STATUS_PATH.fullmatch(scope["path"])) is not None:
            try:
                status = await _status(Request(scope), UUID(found.group(1)))
            except Exception:  # noqa: BLE001  # the application answers it, as ever
                status = None
            if status is not None:
                await status(scope, receive, send)
                return
        elif method == "POST" and (found := _EXECUTE_PATH.fullmatch(scope["path"])) is not None:
            request = Request(scope, receive)
            if (
                request.headers.get("content-type") == "application/json"
                and "idempotency-key" not in request.headers
                and "content-length" in request.headers  # within the limit (checked above)
            ):
                try:
                    raw, whole = await self._read(receive)
                except ClientDisconnect:  # the application sees the disconnect itself
                    await self.app(scope, receive, send)
                    return
                response = await _execute(request, found.group(1), raw) if whole else None
                if response is not None:
                    await response(scope, receive, send)
                    return
                receive = _replay(raw, receive, more=not whole)
        await self.app(scope, receive, send)

    async def _read(self, receive: Receive) -> tuple[bytes, bool]:
        """The body, and whether it is whole: the reading stops past the limit (a server
        that delivered more than the declared length), the rest left to the application."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk: bytes = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), True
            if self._limit is not None and size > self._limit:
                return b"".join(chunks), False


async def _status(request: Request, job_id: UUID) -> Response | None:
    if listing.wants_html(request.headers.get("accept"), None):
        return None
    call = await _call(request)
    return call.present.response(*await status_of(call.runtime, call.principal, job_id))


async def _execute(request: Request, process_id: str, raw: bytes) -> Response | None:
    """The submission's answer, or ``None`` when nothing happened and the application is to
    answer (as FastAPI parses it: ``json.loads``, then the model in Python mode)."""
    try:
        body = ExecuteRequest.model_validate(json.loads(raw))
        call = await _call(request)
    except Exception:  # noqa: BLE001  # nothing happened yet: the application answers it
        return None
    try:
        return await execute_job(call, process_id, body, prefer_header(request.headers), None)
    except (GatewayError, StoreError) as exc:
        return error_response(exc)


def _replay(raw: bytes, receive: Receive, *, more: bool = False) -> Receive:
    """``receive`` with the body already read given back first (``more``: the rest follows
    from ``receive``)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": more}
        return await receive()

    return replay
