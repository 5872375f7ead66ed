"""Landing page, conformance and the operations probes."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from gateway.api.head import get_and_head
from gateway.api.html import html_response
from gateway.api.listing import wants_html
from gateway.api.schemas import HTML, JSON, OGC_REL, Health, Link
from gateway.broker import BrokerDown
from gateway.errors import InvalidQueryParameter, responses
from gateway.runtime import BaseUrlDep, RuntimeDep
from gateway.store import StoreError

router = APIRouter(tags=["operations"])

CONFORMANCE_ROOT = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
# Each class is here because a test shows it (docs/ogc.md names the tests).
CONFORMANCE = [
    CONFORMANCE_ROOT + name
    for name in ("core", "ogc-process-description", "json", "oas30", "job-list", "dismiss")
]
OPENAPI_30 = "application/vnd.oai.openapi+json;version=3.0"
AcceptHeader = Annotated[str | None, Header(alias="accept", include_in_schema=False)]
Format = Annotated[
    Literal["json", "html"] | None,
    Query(description="`json` (the default) or `html`; else the `Accept` header decides."),
]


class LandingPage(BaseModel):
    """OGC ``landingPage``."""

    title: str
    description: str
    links: list[Link]


class Conformance(BaseModel):
    """OGC ``confClasses``."""

    conformsTo: list[str]


@get_and_head(
    router,
    "/",
    summary="Landing page",
    operation_id="getLandingPage",
    response_model=LandingPage,
    response_model_exclude_none=True,
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}},
        **responses(InvalidQueryParameter),
    },
)
async def landing(
    request: Request, base: BaseUrlDep, f: Format = None, accept: AcceptHeader = None
) -> Response:
    """Links to the API definition, the conformance classes, the processes and the jobs."""
    html = wants_html(accept, f)
    links = [
        Link(href=f"{base}/", rel="self", type=JSON, title="This document"),
        Link(href=f"{base}/?f=html", rel="alternate", type=HTML, title="As HTML"),
        Link(href=f"{base}/api", rel="service-desc", type=OPENAPI_30, title="OpenAPI 3.0"),
        Link(href=f"{base}/docs", rel="service-doc", type=HTML, title="Swagger UI"),
        Link(href=f"{base}/conformance", rel=f"{OGC_REL}conformance", type=JSON),
        Link(href=f"{base}/processes", rel=f"{OGC_REL}processes", type=JSON, title="Processes"),
        Link(href=f"{base}/jobs", rel=f"{OGC_REL}job-list", type=JSON, title="Your jobs"),
    ]
    body = LandingPage(
        title="Service Gateway",
        description="Research services as OGC API – Processes: execute a process, follow its "
        "job, fetch its results.",
        links=links,
    )
    if html:
        return html_response(request, "ogc_landing.html", {"title": body.title, "body": body})
    return JSONResponse(body.model_dump(mode="json", exclude_none=True))


@get_and_head(
    router,
    "/conformance",
    summary="Conformance classes",
    operation_id="getConformance",
    response_model=Conformance,
)
async def conformance() -> Conformance:
    """The OGC API – Processes 1.0 conformance classes this gateway implements."""
    return Conformance(conformsTo=CONFORMANCE)


@get_and_head(
    router,
    "/api",
    summary="The API definition",
    operation_id="getAPI",
    responses={
        200: {
            "description": "The OpenAPI 3.0 document; with `f=html` or a browser's `Accept`, "
            "a redirect to Swagger UI.",
            "content": {OPENAPI_30: {"schema": {"type": "object"}}},
        },
        303: {"description": "To Swagger UI."},
        **responses(InvalidQueryParameter),
    },
)
async def api_definition(
    request: Request, base: BaseUrlDep, f: Format = None, accept: AcceptHeader = None
) -> Response:
    """This API's OpenAPI 3.0 document (the same as ``/openapi.json``), as OGC's ``oas30``
    class asks: media type ``application/vnd.oai.openapi+json;version=3.0``."""
    if wants_html(accept, f):
        return RedirectResponse(f"{base}/docs", status_code=303)
    document = json.dumps(request.app.openapi(), separators=(",", ":"))
    return Response(document, media_type=OPENAPI_30)


@get_and_head(router, "/healthz", summary="Liveness", response_model=Health)
async def healthz() -> Health:
    """The process is alive and serving HTTP; says nothing about its dependencies."""
    return Health(status="ok")


@get_and_head(
    router,
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Jobs submitted and finished (by service, status and reason), queue wait and run time
    histograms and version mismatches of this process; per service, read now: queue depth
    and consumers from RabbitMQ, and the capacity figures (``sg_capacity_*``, as
    ``GET /capacity`` gives them) from the store."""
    instruments = runtime.metrics
    for spec in runtime.catalogue:
        try:
            instruments.show_capacity(await runtime.capacity.measure(spec))
            continue
        except StoreError:
            pass  # the queue figures still come from the broker
        try:
            messages, consumers = await runtime.broker.queue_stats(
                runtime.broker.topology.task_queue(spec.id)
            )
        except BrokerDown:
            continue
        instruments.queue_messages.labels(spec.id).set(messages)
        instruments.queue_consumers.labels(spec.id).set(consumers)
    return Response(generate_latest(instruments.registry), media_type=CONTENT_TYPE_LATEST)


@get_and_head(
    router,
    "/readyz",
    summary="Readiness",
    response_model=Health,
    responses={503: {"model": Health, "description": "The broker or the store is unreachable."}},
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Ready when both RabbitMQ and the job store answer; 503 names what is down."""
    checks: dict[str, str] = {}
    try:
        await runtime.broker.check()
        checks["broker"] = "ok"
    except BrokerDown as exc:
        checks["broker"] = str(exc)
    try:
        await runtime.store.ping()
        checks["store"] = "ok"
    except StoreError as exc:
        checks["store"] = str(exc)
    ready = all(v == "ok" for v in checks.values())
    warnings = []
    if runtime.auth.disabled:
        warnings.append("authentication is disabled (SG_AUTH_DISABLED): every caller is admin")
    body = Health(status="ok" if ready else "unavailable", checks=checks, warnings=warnings)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
