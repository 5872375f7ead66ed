"""The status read's fast lane: ``GET /jobs/{jobID}`` answered without the framework's routing
and dependency solving, which cost more than the read itself.

Only the plain case takes the lane: a ``GET`` of ``/jobs/<uuid>`` (the id in its canonical
lower-case form) with no query string and no root path, that wants JSON, from a caller whose
token is good, for a job the caller sees. It builds the answer with the route's own function
(:func:`status_info`) and sends the same response. Anything else (another form of the id, a
query, HTML, an error of any kind) goes to the application, which routes it as ever and
answers with its problem document: an error found here costs that request a second try,
never a different answer.
"""

from __future__ import annotations

import re
from uuid import UUID

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api import listing
from gateway.api.schemas import StatusInfo
from gateway.auth import Principal
from gateway.runtime import Presenter, Runtime, base_url

_STATUS_PATH = re.compile(
    r"/jobs/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})", re.ASCII
)


async def status_info(
    runtime: Runtime, principal: Principal, present: Presenter, job_id: UUID
) -> StatusInfo:
    """One of the caller's jobs as its status document (the route's and the lane's)."""
    record = await runtime.jobs.get(job_id, principal)
    return present(record, await runtime.capacity.waiting(record))


class StatusFastLane:
    """Pure ASGI middleware: the plain status read answered here, every other request passed
    on untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and not scope["query_string"]
            and not scope.get("root_path")
            and "state" in scope
        ):
            found = _STATUS_PATH.fullmatch(scope["path"])
            if found is not None:
                request = Request(scope)
                try:
                    status = await self._read(request, UUID(found.group(1)))
                except Exception:  # noqa: BLE001  # the application answers it, as ever
                    status = None
                if status is not None:
                    await status.response()(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    @staticmethod
    async def _read(request: Request, job_id: UUID) -> StatusInfo | None:
        if listing.wants_html(request.headers.get("accept"), None):
            return None
        runtime: Runtime = request.scope["state"]["runtime"]
        principal = await runtime.auth.authenticate(request.headers.get("authorization"))
        present = Presenter(await base_url(request), runtime.catalogue)
        return await status_info(runtime, principal, present, job_id)
