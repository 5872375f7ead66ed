"""Processes: the catalogue's services, and job submission (OGC API – Processes Part 1)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from gateway.api.execution import delivery, execution_mode, prefer_header, results_response
from gateway.api.head import get_and_head
from gateway.api.html import html_response
from gateway.api.listing import query_string, wants_html
from gateway.api.schemas import (
    HTML,
    JSON,
    ExecuteRequest,
    Link,
    ProcessDescription,
    ProcessList,
    ProcessSummary,
    StatusInfo,
)
from gateway.canarie import example_inputs
from gateway.errors import (
    BadRequest,
    BrokerUnavailable,
    Forbidden,
    GatewayError,
    IdempotencyConflict,
    InvalidInput,
    InvalidParameterValue,
    InvalidQueryParameter,
    JobDismissed,
    JobFailed,
    NoSuchOutput,
    QueueFull,
    QuotaExceeded,
    RateLimited,
    ResultPurged,
    StoreUnavailable,
    Unauthorized,
    UnknownProcess,
    responses,
)
from gateway.runtime import BaseUrlDep, Call, CallDep, JobsDep, RuntimeDep

router = APIRouter(tags=["processes"])

ProcessId = Annotated[
    str,
    Path(alias="processID", description="The service id from the catalogue.", max_length=64),
]
AcceptHeader = Annotated[str | None, Header(alias="accept", include_in_schema=False)]
Format = Annotated[
    Literal["json", "html"] | None,
    Query(description="`json` (the default) or `html`; else the `Accept` header decides."),
]
_LISTED: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {"schema": {"type": "string"}}}}
}


@get_and_head(
    router,
    "/processes",
    response_model=ProcessList,
    summary="List the processes",
    operation_id="getProcesses",
    response_model_exclude_none=True,
    responses={**_LISTED, **responses(InvalidQueryParameter)},
)
async def list_processes(
    request: Request,
    runtime: RuntimeDep,
    base: BaseUrlDep,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Page size.")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=64, description="From the `next` link of a page.")
    ] = None,
    f: Format = None,
    accept: AcceptHeader = None,
) -> Response:
    """The catalogue's services, in id order; ``next`` links page on."""
    html = wants_html(accept, f)
    specs = sorted(runtime.catalogue, key=lambda s: s.id)
    if cursor is not None:
        specs = [s for s in specs if s.id > cursor]
    page = specs[:limit]
    max_wait = runtime.settings.max_wait
    links = [
        Link(href=f"{base}/processes", rel="self", type=JSON, title="This list"),
        Link(href=f"{base}/processes?f=html", rel="alternate", type=HTML, title="As HTML"),
    ]
    if len(specs) > limit:
        query = query_string({"limit": limit, "cursor": page[-1].id})
        links.append(Link(href=f"{base}/processes?{query}", rel="next", type=JSON))
    body = ProcessList(processes=[ProcessSummary.of(s, base, max_wait) for s in page], links=links)
    if html:
        return html_response(
            request, "ogc_processes.html", {"title": "Processes", "body": body, "base": base}
        )
    return JSONResponse(body.model_dump(mode="json", exclude_none=True))


@get_and_head(
    router,
    "/processes/{processID}",
    response_model=ProcessDescription,
    summary="Describe a process",
    operation_id="getProcessDescription",
    response_model_exclude_none=True,
    responses={**_LISTED, **responses(UnknownProcess, InvalidQueryParameter)},
)
async def describe_process(
    request: Request,
    process_id: ProcessId,
    jobs: JobsDep,
    runtime: RuntimeDep,
    base: BaseUrlDep,
    f: Format = None,
    accept: AcceptHeader = None,
) -> Response:
    """The process's inputs and outputs (OGC descriptions: title, description, an OpenAPI
    3.0 ``schema``, ``minOccurs``/``maxOccurs``), execution modes and queueing policy."""
    html = wants_html(accept, f)
    spec = jobs.service(process_id)
    body = ProcessDescription.describe(spec, base, runtime.settings.max_wait)
    if html:
        context = {
            "title": spec.title,
            "body": body,
            "base": base,
            "example": json.dumps({"inputs": example_inputs(spec.inputs)}, indent=2),
        }
        return html_response(request, "ogc_process.html", context)
    return JSONResponse(body.model_dump(mode="json", exclude_none=True))


@router.post(
    "/processes/{processID}/execution",
    response_model=StatusInfo,
    status_code=201,
    summary="Execute a process (create a job)",
    operation_id="execute",
    response_model_exclude_none=True,
    responses={
        200: {
            "description": "Synchronous execution: the results (`response: raw`: the output's "
            "value, or `multipart/related` for several; `document`: the results document). "
            "`Location` and `Link: rel=monitor` name the job. A replayed `Idempotency-Key` "
            "(`Idempotent-Replayed: true`) is answered as its first submission would be, "
            "waiting as asked (the results, or the exception of a failed or dismissed job), "
            "but with 200 and the job's status while it is queued or running.",
            "content": {
                "application/json": {"schema": {}},
                "multipart/related": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        201: {
            "description": "Asynchronous execution: the job's status; `Location` names it.",
        },
        **responses(
            BadRequest,
            NoSuchOutput,
            InvalidParameterValue,
            Unauthorized,
            Forbidden,
            UnknownProcess,
            JobDismissed,
            ResultPurged,
            IdempotencyConflict,
            InvalidInput,
            JobFailed,
            QueueFull,
            RateLimited,
            QuotaExceeded,
            BrokerUnavailable,
            StoreUnavailable,
        ),
    },
)
async def execute(
    request: Request,
    process_id: ProcessId,
    body: ExecuteRequest,
    call: CallDep,
    prefer: Annotated[
        str | None,
        Header(
            description="`respond-async`: answer 201 at once. None: processes offering "
            "`sync-execute` answer with their results (200) within `SG_MAX_WAIT`, others "
            "201. `wait=N` (an extension): wait up to N seconds for the results, for any "
            "process; `Preference-Applied` says what was honoured."
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Retry safely: the same key (per caller) answers with the first job "
            "(`Idempotent-Replayed: true`) and never queues twice; reused with another "
            "request body, 409.",
        ),
    ] = None,
) -> Response:
    """Validate the inputs, record the job and queue it; then answer as the negotiated
    execution mode says: 201 with ``Location`` and the job's status, or (synchronous) its
    results once it ends.

    A ``subscriber`` is called back with signed webhooks (docs/webhooks.md); a URI the
    webhooks' URL policy refuses is 422 (400 when the gateway has no webhook secret).

    The job exists before its task: a task the broker does not confirm leaves the job
    ``failed``/``publish_failed`` and the answer is 503 (or 429 when the service's queue is
    full) — never 201 for a job that is not durably queued.
    """
    prefer = prefer_header(request.headers)  # every line of it, not the first alone
    if len(request.headers.getlist("idempotency-key")) > 1:  # the framework reads one alone
        raise BadRequest("Idempotency-Key is given more than once: send one key")
    return await execute_job(call, process_id, body, prefer, idempotency_key)


async def execute_job(
    call: Call,
    process_id: str,
    body: ExecuteRequest,
    prefer: str | None,
    idempotency_key: str | None,
) -> Response:
    """The execute route's work, once its request is parsed (the route's and the lane's)."""
    jobs, present = call.jobs, call.present
    spec = jobs.service(process_id)
    form = delivery(body, spec)
    max_wait = call.runtime.settings.max_wait
    mode = execution_mode(prefer, sync_capable=spec.sync_capable(max_wait), max_wait=max_wait)
    record, replayed = await jobs.submit(
        spec,
        body.inputs,
        principal=call.principal,
        wait=mode.wait,
        idempotency_key=idempotency_key,
        delivery=form,
        subscriber=body.subscriber.model_dump(exclude_none=True) if body.subscriber else None,
    )
    location = f"{present.base}/jobs/{record.id}"
    headers = {"Location": location}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if mode.applied is not None:
        headers["Preference-Applied"] = mode.applied
    if mode.wait is not None and record.status.terminal:
        headers["Link"] = f'<{location}>; rel="monitor"'
        try:
            return results_response(record, spec, headers)
        except GatewayError as exc:  # a failed or dismissed job: its exception, and where it is
            exc.headers.update(headers)
            raise
    return present(record).response(status_code=200 if replayed else 201, headers=headers)
