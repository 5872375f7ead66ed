"""Jobs: the caller's list, status and results."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.sse import _SSE_EVENT_SCHEMA as _SSE_EVENT_SCHEMA  # FastAPI's own event schema
from fastapi.sse import KEEPALIVE_COMMENT, format_sse_event

from gateway.api import listing
from gateway.api.execution import results_response
from gateway.api.fast import status_of
from gateway.api.head import get_and_head
from gateway.api.html import html_response
from gateway.api.schemas import (
    HTML,
    JSON,
    JobList,
    Link,
    StatusInfo,
    Subscriber,
    WebhookDeliveryInfo,
    WebhookList,
)
from gateway.auth import Principal
from gateway.errors import (
    InvalidQueryParameter,
    JobDismissed,
    JobFailed,
    ResultNotReady,
    ResultPurged,
    StoreUnavailable,
    Unauthorized,
    UnknownJob,
    responses,
)
from gateway.jobs import JobService
from gateway.runtime import CallDep, JobsDep, Presenter, PresenterDep, PrincipalDep, RuntimeDep
from gateway.store import JobQuery, JobRecord

router = APIRouter(tags=["jobs"])

_EVENT_ID = re.compile(r"[0-9]{1,18}", re.ASCII)


AcceptHeader = Annotated[str | None, Header(alias="accept", include_in_schema=False)]
Format = Annotated[
    Literal["json", "html"] | None,
    Query(description="`json` (the default) or `html`; else the `Accept` header decides."),
]
JobId = Annotated[UUID, Path(alias="jobID", description="The job's id.")]
_HTML: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {"schema": {"type": "string"}}}}
}
MAX_LIMIT = 1000


@get_and_head(
    router,
    "/jobs",
    response_model=JobList,
    summary="List your jobs",
    operation_id="getJobs",
    response_model_exclude_none=True,
    responses={**_HTML, **responses(InvalidQueryParameter, Unauthorized, StoreUnavailable)},
)
async def list_jobs(
    request: Request,
    jobs: JobsDep,
    principal: PrincipalDep,
    present: PresenterDep,
    process_id: Annotated[
        list[str] | None,
        Query(alias="processID", description="Only these processes (repeat, or comma-separate)."),
    ] = None,
    status: Annotated[
        list[str] | None,
        Query(description="Only these statuses (repeat, or comma-separate)."),
    ] = None,
    type_: Annotated[
        list[str] | None,
        Query(alias="type", description="`process`: every job here is a process job."),
    ] = None,
    datetime_: Annotated[
        str | None,
        Query(
            alias="datetime",
            max_length=100,
            description="Jobs created at this instant or within this interval (RFC 3339; "
            "`start/end`, either end open with `..`).",
        ),
    ] = None,
    min_duration: Annotated[
        int | None,
        Query(
            alias="minDuration",
            ge=0,
            le=listing.MAX_DURATION,
            description="Only jobs that ran at least this many seconds (running jobs: so far).",
        ),
    ] = None,
    max_duration: Annotated[
        int | None,
        Query(
            alias="maxDuration",
            ge=0,
            le=listing.MAX_DURATION,
            description="Only jobs that ran at most this many seconds.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")] = 100,
    cursor: Annotated[
        str | None,
        Query(max_length=listing.MAX_CURSOR, description="From the `next` link of a page."),
    ] = None,
    f: Format = None,
    accept: AcceptHeader = None,
) -> Response:
    """The caller's jobs (an admin sees everyone's), newest first, a page at a time: the
    ``next`` link carries an opaque cursor (the position after the page's last job), so any
    page costs the same however deep. Filters are OGC's job-list parameters."""
    html = listing.wants_html(accept, f)
    created_from, created_to = listing.parse_datetime(datetime_)
    processes = listing.split(process_id, "processID")
    shown = listing.statuses(status)
    types = listing.split(type_, "type")
    query = JobQuery(
        owner=principal.subject,
        services=processes,
        statuses=shown,
        created_from=created_from,
        created_to=created_to,
        min_duration=min_duration,
        max_duration=max_duration,
        after=listing.decode_cursor(cursor) if cursor is not None else None,
        limit=limit,
    )
    # Every job of this gateway runs a process: any other type lists nothing.
    records = await jobs.page(principal, query) if not types or "process" in types else []
    base = present.base
    params: dict[str, str | int | float | tuple[str, ...] | None] = {
        "processID": processes or None,
        "status": tuple(sorted(shown)) or None,
        "type": types or None,
        "datetime": datetime_,
        "minDuration": min_duration,
        "maxDuration": max_duration,
        "limit": limit,
    }
    here = listing.query_string({**params, "cursor": cursor})
    links = [
        Link(href=f"{base}/jobs?{here}", rel="self", type=JSON, title="This page"),
        Link(href=f"{base}/jobs?{here}&f=html", rel="alternate", type=HTML, title="As HTML"),
    ]
    if len(records) == limit:
        last = records[-1]
        following = listing.query_string(
            {**params, "cursor": listing.encode_cursor(last.created, last.id)}
        )
        links.append(Link(href=f"{base}/jobs?{following}", rel="next", type=JSON, title="Next"))
    body = JobList(jobs=[present(r) for r in records], links=links)
    if html:
        context = {"title": "Jobs", "body": body, "base": base}
        return html_response(request, "ogc_jobs.html", context)
    return Response(body.model_dump_json(exclude_none=True), media_type=JSON)


@get_and_head(
    router,
    "/jobs/{jobID}",
    response_model=StatusInfo,
    summary="Job status",
    operation_id="getStatus",
    response_model_exclude_none=True,
    responses={
        **_HTML,
        **responses(InvalidQueryParameter, Unauthorized, UnknownJob, StoreUnavailable),
    },
)
async def job_status(request: Request, job_id: JobId, call: CallDep, f: Format = None) -> Response:
    """Status, progress and timestamps of one of the caller's jobs. While it is ``accepted``:
    its ``queuePosition`` and ``estimatedStart``, and a ``message`` when no worker of its
    process is live."""
    # ``Accept`` is read here rather than declared: it is not in the OpenAPI document, and a
    # declared header costs a parameter to solve on every read.
    html = listing.wants_html(request.headers.get("accept"), f)
    record, waiting = await status_of(call.runtime, call.principal, job_id)
    if html:
        context = {"title": f"Job {job_id}", "job": call.present(record, waiting)}
        context["base"] = call.present.base
        return html_response(request, "ogc_job.html", context)
    return call.present.response(record, waiting)


@router.delete(
    "/jobs/{jobID}",
    response_model=StatusInfo,
    summary="Dismiss a job",
    operation_id="dismiss",
    response_model_exclude_none=True,
    responses=responses(Unauthorized, UnknownJob, StoreUnavailable),
)
async def dismiss_job(
    job_id: JobId, jobs: JobsDep, principal: PrincipalDep, present: PresenterDep
) -> Response:
    """Cancel a queued or running job, or purge a finished job's result; either way the job
    then shows ``dismissed``.

    A queued or running job ends ``dismissed`` (reason ``cancelled``) at once and its workers
    are told to stop: cooperatively first, then, past their grace, by killing that job's
    process. A finished job loses its result (``GET .../results`` then answers 410) and
    keeps the status it ended with as ``outcome``. Repeating the call is harmless.
    """
    return present(await jobs.dismiss(job_id, principal)).response()


@get_and_head(
    router,
    "/jobs/{jobID}/results",
    summary="Job results",
    operation_id="getResult",
    responses={
        200: {
            "description": "The results, in the form the execute request asked for (`raw`: "
            "the output's value, `multipart/related` for several; `document`: the results "
            "document).",
            "content": {
                "application/json": {"schema": {}},
                "multipart/related": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **responses(
            Unauthorized,
            UnknownJob,
            ResultNotReady,
            JobDismissed,
            ResultPurged,
            JobFailed,
            StoreUnavailable,
        ),
    },
)
async def job_results(
    job_id: JobId, jobs: JobsDep, principal: PrincipalDep, runtime: RuntimeDep
) -> Response:
    """The results of a successful job; 404 ``result-not-ready`` while it is queued or
    running, 422 ``job-failed`` with the job's error when it failed."""
    job = await jobs.get(job_id, principal)
    return results_response(job, runtime.catalogue.get(job.service))


@get_and_head(
    router,
    "/jobs/{jobID}/webhooks",
    response_model=WebhookList,
    summary="Job webhooks",
    operation_id="getWebhooks",
    response_model_exclude_none=True,
    responses=responses(Unauthorized, UnknownJob, StoreUnavailable),
)
async def job_webhooks(
    job_id: JobId, jobs: JobsDep, principal: PrincipalDep, present: PresenterDep
) -> Response:
    """The job's ``subscriber`` and each webhook event attempted so far: attempts, the last
    one's HTTP status or error, the next one's time, when it was delivered. See
    docs/webhooks.md for the headers, the signature and the retry schedule."""
    record, deliveries = await jobs.webhooks(job_id, principal)
    href = f"{present.base}/jobs/{job_id}"
    body = WebhookList(
        jobID=job_id,
        subscriber=Subscriber.model_validate(record.subscriber) if record.subscriber else None,
        webhooks=[WebhookDeliveryInfo.of(d) for d in deliveries],
        links=[
            Link(href=f"{href}/webhooks", rel="self", type=JSON, title="This list"),
            Link(href=href, rel="up", type=JSON, title="The job"),
        ],
    )
    return Response(body.model_dump_json(exclude_none=True), media_type=JSON)


class _EventStream(StreamingResponse):
    """A stream of server-sent events encoded by the endpoint (FastAPI's
    ``EventSourceResponse`` as a response class would route the endpoint through its
    generator support, see :func:`job_events`)."""

    media_type = "text/event-stream"


def _event(record: JobRecord, present: Presenter) -> bytes:
    # The id is the job's change counter, assigned by the store: it rises with every change
    # whatever the workers' clocks say, so a client resumes after the last one it saw.
    return format_sse_event(
        event="status",
        id=str(record.seq),
        data_str=present(record).model_dump_json(exclude_none=True),
    )


def _last_seen(last_event_id: str | None) -> int:
    """The ``Last-Event-ID`` a client resumes from: a change counter, else from the start."""
    if last_event_id is None or not _EVENT_ID.fullmatch(last_event_id):
        return 0
    return int(last_event_id)


@router.get(
    "/jobs/{jobID}/events",
    operation_id="getEvents",
    response_class=_EventStream,
    summary="Follow a job (server-sent events)",
    responses={
        200: {"content": {"text/event-stream": {"itemSchema": _SSE_EVENT_SCHEMA}}},
        204: {"description": "The job had ended at the `Last-Event-ID` given: nothing to send."},
        **responses(Unauthorized, UnknownJob, StoreUnavailable),
    },
)
async def job_events(
    job_id: JobId,
    jobs: JobsDep,
    principal: PrincipalDep,
    present: PresenterDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Response:
    """A `status` event with the job's statusInfo now and at every change (progress included);
    the stream ends after the terminal state, or when the caller's token expires. Reconnect
    with `Last-Event-ID` to resume after the last event received: a job that has ended since
    sends its terminal state, one whose terminal state was that event answers 204 (which
    tells an `EventSource` to stop reconnecting). An id the job never had (above its last)
    is ignored: the stream starts from the job as it stands."""
    record = await jobs.get(job_id, principal)  # ownership, before the stream starts
    seen = _last_seen(last_event_id)
    if seen > record.seq:
        seen = 0
    if record.status.terminal and seen == record.seq:
        return Response(status_code=204, headers=_SSE_HEADERS)
    # The events are encoded here rather than yielded to FastAPI's generator support: that
    # runs two more tasks, two memory streams and a task group per stream (about 24 KiB of
    # an idle stream's 60), where one generator that waits with a timeout sends the same
    # events and keep-alive comments.
    stream = _job_stream(jobs, job_id, principal, present, seen)
    return _EventStream(stream, headers=_SSE_HEADERS)


# The headers and keep-alive period of FastAPI's own event streams.
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_PING_SECONDS = 15.0


async def _job_stream(
    jobs: JobService, job_id: UUID, principal: Principal, present: Presenter, seen: int
) -> AsyncIterator[bytes]:
    async with jobs.changes(job_id, principal) as (record, changes):
        while True:
            if record.seq > seen:
                seen = record.seq
                yield _event(record, present)
            if record.status.terminal:
                return
            del record  # an idle stream holds no record while it waits for the next change
            while True:
                remaining = principal.remaining()
                if remaining is not None and remaining <= 0:
                    return  # the token expired: the client reconnects with a fresh one
                wait = _PING_SECONDS if remaining is None else min(remaining, _PING_SECONDS)
                try:
                    async with asyncio.timeout(wait):
                        record = await changes.get()
                    break
                except TimeoutError:
                    remaining = principal.remaining()
                    if remaining is None or remaining > 0:
                        yield KEEPALIVE_COMMENT
