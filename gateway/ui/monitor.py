"""The dashboard's live parts: the stream of changes of the jobs a page shows, and the workers
and queues page (a table refreshed every few seconds, charts of the last hour)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from gateway.auth import Principal
from gateway.broker import BrokerDown
from gateway.runtime import JobsDep, Runtime, RuntimeDep
from gateway.store import JobRecord, StoreError
from gateway.ui import figures
from gateway.ui import session as sessions
from gateway.ui.session import SessionDep
from gateway.ui.views import HEADERS, render, shown_status

router = APIRouter(prefix="/ui", include_in_schema=False)

MAX_FOLLOWED = 100
# What the workers table lists at most: the workers, and the jobs of each (a worker says
# what it runs; one that claims thousands must not make every refresh megabytes long).
SHOWN_WORKERS = 500
SHOWN_RUNNING = 25

SessionPrincipal = Annotated[Principal, Depends(sessions.principal_of)]


def _change(record: JobRecord) -> ServerSentEvent:
    status = shown_status(record)
    body = {
        "id": str(record.id),
        "seq": record.seq,
        "status": status,
        "progress": record.progress,
        "message": record.message,
        "terminal": record.status.terminal,
    }
    return ServerSentEvent(event="job", id=str(record.seq), raw_data=json.dumps(body))


@router.get("/events", response_class=EventSourceResponse)
async def job_changes(
    jobs: JobsDep,
    principal: SessionPrincipal,
    job: Annotated[list[UUID], Query(max_length=MAX_FOLLOWED)],
) -> AsyncIterator[ServerSentEvent]:
    """A ``job`` event for each of these jobs now (those the caller may see) and at every
    change after, until none is active or the caller's token expires: the same changes as
    ``GET /jobs/{id}/events``, for the several jobs of one page in one connection."""
    async with jobs.following(job, principal) as (current, changes):
        active = set()
        for record in current:
            yield _change(record)
            if not record.status.terminal:
                active.add(record.id)
        while active:
            remaining = principal.remaining()
            if remaining is not None and remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    record = await changes.get()
            except TimeoutError:
                return  # the token expired: the page signs in again
            yield _change(record)
            if record.status.terminal:
                active.discard(record.id)


async def _queue(runtime: Runtime, service: str) -> tuple[int | None, int | None]:
    try:
        return await runtime.broker.queue_stats(runtime.broker.topology.task_queue(service))
    except BrokerDown:
        return None, None


async def _monitor(runtime: Runtime, jobs: JobsDep, principal: Principal) -> dict[str, Any]:
    """Everything the workers page shows: the live workers (the workers API's), each queue's
    row, and for an admin each service's capacity figures (the capacity API's)."""
    now = datetime.now(UTC)
    records = await jobs.recent(principal, now - figures.WINDOW)
    titles = {spec.id: spec.title for spec in runtime.catalogue}
    rows = figures.tally(records, titles, now)
    try:
        live = await runtime.fleet.live()
        seen = await runtime.fleet.visible(principal, live)
    except StoreError:
        live = None
    # The running jobs the caller may open, per worker; the others are only counted.
    shown = {w.id: [job for job in w.running if seen(job)] for w in live or ()}
    for row in rows.values():
        row.ready, row.consumers = await _queue(runtime, row.service)
        if live is not None:
            row.workers = sum(1 for worker in live if worker.service == row.service)
    capacity = []
    if principal.admin:
        for spec in runtime.catalogue:
            try:
                capacity.append(await runtime.capacity.measure(spec, now=now))
            except StoreError:
                continue
    return {
        "rows": list(rows.values()),
        "live": live,
        "shown": shown,
        "capacity": capacity,
        "everyone": principal.admin,
        "now": now,
        "shown_workers": SHOWN_WORKERS,
        "shown_running": SHOWN_RUNNING,
    }


@router.get("/workers")
async def workers_page(
    request: Request, runtime: RuntimeDep, jobs: JobsDep, ses: SessionDep
) -> Response:
    """Each service's queue (depth, consumers), live workers, rates, wait and run-time
    percentiles; the live workers one by one; for an admin, the capacity figures; and charts
    of the last hour."""
    context = {"title": "Workers and queues", "session": ses}
    response = render(
        request, "workers.html", {**context, **await _monitor(runtime, jobs, ses.principal)}
    )
    await sessions.remember_csrf(request, response)
    return response


@router.get("/workers/table")
async def workers_table(
    request: Request, runtime: RuntimeDep, jobs: JobsDep, ses: SessionDep
) -> Response:
    """The tables alone, as the page refreshes them."""
    context = {"session": ses, **await _monitor(runtime, jobs, ses.principal)}
    return render(request, "_workers_table.html", context)


@router.get("/workers/series")
async def workers_series(
    runtime: RuntimeDep, jobs: JobsDep, principal: SessionPrincipal
) -> Response:
    """The charts' data: per minute of the last hour, jobs finished and median wait and run
    time, per service."""
    now = datetime.now(UTC)
    records = await jobs.recent(principal, now - figures.WINDOW)
    seen = {record.service for record in records}
    services = [spec.id for spec in runtime.catalogue if spec.id in seen]
    body = figures.series(records, services, now)
    return JSONResponse(body, headers=HEADERS)
