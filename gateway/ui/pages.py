"""The dashboard's sign-in and job pages (``/ui``): the job list with its filters and paging,
the submit form, a job's page and its dismiss button. Every job call goes through
:class:`gateway.jobs.JobService` on behalf of the signed-in principal, as the API's do."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import unquote, urlencode
from uuid import UUID

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import RedirectResponse

from gateway.api.listing import decode_cursor, encode_cursor
from gateway.auth import Principal
from gateway.errors import (
    GatewayError,
    InvalidParameterValue,
    InvalidQueryParameter,
    JobGone,
    Unauthorized,
    UnknownJob,
)
from gateway.runtime import JobsDep, RuntimeDep, public_path
from gateway.store import JobQuery, JobRecord, JobStatus, StoreError, WebhookDelivery
from gateway.ui import session as sessions
from gateway.ui.session import CheckedForm, Session, SessionDep
from gateway.ui.views import duration, render, shown_status, timeline

router = APIRouter(prefix="/ui", include_in_schema=False)

PAGE_SIZE = 25
MAX_INPUTS = 64 * 1024


def _ui(request: Request, path: str) -> str:
    """A dashboard path as the browser reaches it (behind a proxy's prefix, if any)."""
    return f"{public_path(request)}/ui{path}"


def _safe_next(request: Request, target: str | None) -> str:
    """Where to go after signing in: a dashboard page only (never another site, nor another
    application of this host reached through dot segments, encoded or not)."""
    home = _ui(request, "")
    path = unquote((target or "").split("?", 1)[0])
    segments = path.split("/")
    if (
        target
        and (path == home or path.startswith(f"{home}/"))
        and "." not in segments
        and ".." not in segments
        and "\\" not in path
    ):
        return target
    return _ui(request, "/jobs")


def _page(
    request: Request, template: str, context: dict[str, Any], *, status_code: int = 200
) -> Response:
    return render(request, template, context, status_code=status_code)


async def _respond(request: Request, response: Response) -> Response:
    await sessions.remember_csrf(request, response)
    return response


def job_view(record: JobRecord) -> dict[str, Any]:
    """What the templates show of a job."""
    status = shown_status(record)
    return {
        "record": record,
        "id": str(record.id),
        "status": status,
        "active": status in (JobStatus.ACCEPTED, JobStatus.RUNNING),
        "timeline": timeline(record),
        "wait": duration(record.created, record.started)
        if record.started
        else duration(record.created, record.finished),
        "run": duration(record.started, record.finished),
    }


@router.get("", response_class=RedirectResponse)
async def home(request: Request) -> RedirectResponse:
    return RedirectResponse(_ui(request, "/jobs"), status_code=303)


@router.get("/login")
async def login_form(
    request: Request, next_: Annotated[str | None, Query(alias="next", max_length=2000)] = None
) -> Response:
    csrf = sessions.csrf_token(request)
    context = {"title": "Sign in", "csrf": csrf, "next": _safe_next(request, next_)}
    return await _respond(request, _page(request, "login.html", context))


@router.post("/login")
async def login(
    request: Request,
    runtime: RuntimeDep,
    _: CheckedForm,
    token: Annotated[str, Form(max_length=16384)],
    next_: Annotated[str | None, Form(alias="next", max_length=2000)] = None,
) -> Response:
    """Verify the token as the API would, then keep it in the session cookie."""
    token = token.strip().removeprefix("Bearer ").strip()
    try:
        principal = await runtime.auth.authenticate(f"Bearer {token}")
    except Unauthorized as exc:
        context = {
            "title": "Sign in",
            "csrf": sessions.csrf_token(request),
            "next": _safe_next(request, next_),
            "error": exc.detail,
        }
        return await _respond(request, _page(request, "login.html", context, status_code=401))
    response = RedirectResponse(_safe_next(request, next_), status_code=303)
    await sessions.sign_in(request, response, principal, token)
    return response


@router.post("/logout")
async def logout(request: Request, _: CheckedForm) -> Response:
    response = RedirectResponse(_ui(request, "/login"), status_code=303)
    sessions.sign_out(request, response)
    return response


def _filters(
    principal: Principal, service: str | None, status: str | None, owner: str | None
) -> dict[str, str]:
    shown = {"service": service or "", "status": status or ""}
    if principal.admin:
        shown["owner"] = owner or ""
    return shown


async def _job_list(
    request: Request,
    runtime: RuntimeDep,
    jobs: JobsDep,
    ses: Session,
    filters: dict[str, str],
    cursor: str | None,
) -> dict[str, Any]:
    services = (filters["service"],) if filters["service"] else ()
    if filters["service"] and runtime.catalogue.get(filters["service"]) is None:
        raise InvalidQueryParameter(f"service: no process {filters['service']!r}")
    try:
        statuses = frozenset({JobStatus(filters["status"])}) if filters["status"] else frozenset()
    except ValueError:
        raise InvalidQueryParameter(f"status: {filters['status']!r} is not a status") from None
    query = JobQuery(
        owner=ses.principal.subject,
        services=services,
        statuses=statuses,
        after=decode_cursor(cursor) if cursor else None,
        limit=PAGE_SIZE,
    )
    records = await jobs.page(ses.principal, query, owner=filters.get("owner") or None)
    kept = {k: v for k, v in filters.items() if v}
    following = None
    if len(records) == PAGE_SIZE:
        last = records[-1]
        following = urlencode({**kept, "cursor": encode_cursor(last.created, last.id)})
    return {
        "jobs": [job_view(r) for r in records],
        "filters": filters,
        "statuses": [s.value for s in JobStatus],
        "services": list(runtime.catalogue),
        "next_query": following,
        "first_query": urlencode(kept) if cursor else None,
        # The first page refreshes itself, so that jobs submitted elsewhere appear.
        "refresh_query": None if cursor else urlencode(kept),
    }


FilterParam = Annotated[str | None, Query(max_length=200)]


@router.get("/jobs")
async def job_list(
    request: Request,
    runtime: RuntimeDep,
    jobs: JobsDep,
    ses: SessionDep,
    service: FilterParam = None,
    status: FilterParam = None,
    owner: FilterParam = None,
    cursor: FilterParam = None,
) -> Response:
    """The caller's jobs (an admin: everyone's, or one owner's), newest first, a page at a
    time; active ones update live."""
    filters = _filters(ses.principal, service, status, owner)
    context = await _job_list(request, runtime, jobs, ses, filters, cursor)
    page = {"title": "Jobs", "session": ses, "submit": {"service": "", "inputs": "{}"}}
    return await _respond(request, _page(request, "jobs.html", {**page, **context}))


@router.get("/jobs/table")
async def job_table(
    request: Request,
    runtime: RuntimeDep,
    jobs: JobsDep,
    ses: SessionDep,
    service: FilterParam = None,
    status: FilterParam = None,
    owner: FilterParam = None,
    cursor: FilterParam = None,
) -> Response:
    """The list's table alone (the filter form swaps it in; the first page refreshes it)."""
    filters = _filters(ses.principal, service, status, owner)
    context = await _job_list(request, runtime, jobs, ses, filters, cursor)
    response = _page(request, "_jobs_table.html", {"session": ses, **context})
    if request.headers.get("hx-trigger") == "filters":
        # The filtered list gets its own address in the browser's history.
        kept = urlencode({k: v for k, v in filters.items() if v})
        response.headers["HX-Push-Url"] = _ui(request, f"/jobs?{kept}" if kept else "/jobs")
    return response


@router.post("/jobs")
async def submit(
    request: Request,
    runtime: RuntimeDep,
    jobs: JobsDep,
    ses: SessionDep,
    _: CheckedForm,
    service: Annotated[str, Form(max_length=200)],
    inputs: Annotated[str, Form(max_length=MAX_INPUTS)] = "{}",
) -> Response:
    """Submit a job as the API's execute does (same checks, limits and scopes), then show it."""
    try:
        try:
            values = json.loads(inputs or "{}")
        except (ValueError, RecursionError) as exc:  # too deep, an integer of 5,000 digits
            raise InvalidParameterValue(f"the inputs are not JSON: {exc}") from None
        if not isinstance(values, dict):
            raise InvalidParameterValue("the inputs must be a JSON object")
        spec = jobs.service(service)
        record, _replayed = await jobs.submit(spec, values, principal=ses.principal)
    except GatewayError as exc:
        filters = _filters(ses.principal, None, None, None)
        context = await _job_list(request, runtime, jobs, ses, filters, None)
        page = {
            "title": "Jobs",
            "session": ses,
            "submit": {"service": service, "inputs": inputs, "error": exc.detail},
        }
        return _page(request, "jobs.html", {**page, **context}, status_code=exc.status)
    return RedirectResponse(_ui(request, f"/jobs/{record.id}"), status_code=303)


async def _job(jobs: JobsDep, job_id: UUID, principal: Principal) -> JobRecord | None:
    try:
        return await jobs.get(job_id, principal)
    except (UnknownJob, JobGone):
        return None


async def _webhooks(
    jobs: JobsDep, record: JobRecord, principal: Principal
) -> list[WebhookDelivery]:
    """The job's webhook deliveries, attempt by attempt (none without a subscriber)."""
    if not record.subscriber:
        return []
    try:
        _, deliveries = await jobs.webhooks(record.id, principal)
    except (UnknownJob, JobGone):
        return []
    return deliveries


def _missing(request: Request, ses: Session, job_id: UUID) -> Response:
    context = {"title": "No such job", "session": ses, "message": f"No job {job_id} of yours."}
    return _page(request, "message.html", context, status_code=404)


async def _panel(
    runtime: RuntimeDep, jobs: JobsDep, record: JobRecord, ses: Session
) -> dict[str, Any]:
    """What a job's panel shows beyond the record: its webhook deliveries, and while it is
    accepted, its place in the queue and estimated start (as its status in the API)."""
    try:
        waiting = await runtime.capacity.waiting(record)
    except StoreError:
        waiting = None
    return {
        "session": ses,
        "job": job_view(record),
        "webhooks": await _webhooks(jobs, record, ses.principal),
        "waiting": waiting,
    }


@router.get("/jobs/{job_id}")
async def job_page(
    request: Request, job_id: UUID, runtime: RuntimeDep, jobs: JobsDep, ses: SessionDep
) -> Response:
    """A job: progress, timeline, inputs, result or error, and the dismiss button."""
    record = await _job(jobs, job_id, ses.principal)
    if record is None:
        return _missing(request, ses, job_id)
    context = {"title": f"Job {job_id}", **await _panel(runtime, jobs, record, ses)}
    return await _respond(request, _page(request, "job.html", context))


@router.get("/jobs/{job_id}/panel")
async def job_panel(
    request: Request, job_id: UUID, runtime: RuntimeDep, jobs: JobsDep, ses: SessionDep
) -> Response:
    record = await _job(jobs, job_id, ses.principal)
    if record is None:
        return _missing(request, ses, job_id)
    # Its dismiss form carries the CSRF token: a new one (the cookie expired) is set too.
    panel = _page(request, "_job_panel.html", await _panel(runtime, jobs, record, ses))
    return await _respond(request, panel)


@router.get("/jobs/{job_id}/row")
async def job_row(request: Request, job_id: UUID, jobs: JobsDep, ses: SessionDep) -> Response:
    record = await _job(jobs, job_id, ses.principal)
    if record is None:
        return _missing(request, ses, job_id)
    return _page(request, "_job_row.html", {"session": ses, "job": job_view(record)})


@router.post("/jobs/{job_id}/dismiss")
async def dismiss(
    request: Request, job_id: UUID, jobs: JobsDep, ses: SessionDep, _: CheckedForm
) -> Response:
    """Cancel the job if it is queued or running, else remove its result (the API's DELETE)."""
    if await _job(jobs, job_id, ses.principal) is None:
        return _missing(request, ses, job_id)
    await jobs.dismiss(job_id, ses.principal)
    return RedirectResponse(_ui(request, f"/jobs/{job_id}"), status_code=303)
