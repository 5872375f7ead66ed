"""Landing page, conformance and the operations probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.schemas import Health, Link
from gateway.broker import BrokerDown
from gateway.runtime import BaseUrlDep, RuntimeDep
from gateway.store import StoreError

router = APIRouter(tags=["operations"])

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/json",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/job-list",
]


@router.get("/", summary="Landing page")
async def landing(base: BaseUrlDep) -> dict[str, Any]:
    """Links to the API description, the conformance classes and the processes."""
    links = [
        Link(
            href=f"{base}/openapi.json",
            rel="service-desc",
            type="application/vnd.oai.openapi+json;version=3.0",
        ),
        Link(href=f"{base}/docs", rel="service-doc", type="text/html"),
        Link(href=f"{base}/conformance", rel="http://www.opengis.net/def/rel/ogc/1.0/conformance"),
        Link(href=f"{base}/processes", rel="http://www.opengis.net/def/rel/ogc/1.0/processes"),
    ]
    return {
        "title": "Service Gateway",
        "links": [link.model_dump(exclude_none=True) for link in links],
    }


@router.get("/conformance", summary="Conformance classes")
async def conformance() -> dict[str, list[str]]:
    """The OGC API – Processes conformance classes this gateway implements."""
    return {"conformsTo": CONFORMANCE}


@router.get("/healthz", summary="Liveness", response_model=Health)
async def healthz() -> Health:
    """The process is alive and serving HTTP; says nothing about its dependencies."""
    return Health(status="ok")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Jobs submitted and finished (by service, status and reason), queue wait and run time
    histograms and version mismatches of this process; queue depth and consumers per service,
    read from RabbitMQ now."""
    instruments = runtime.metrics
    for spec in runtime.catalogue:
        try:
            messages, consumers = await runtime.broker.queue_stats(
                runtime.broker.topology.task_queue(spec.id)
            )
        except BrokerDown:
            continue
        instruments.queue_messages.labels(spec.id).set(messages)
        instruments.queue_consumers.labels(spec.id).set(consumers)
    return Response(generate_latest(instruments.registry), media_type=CONTENT_TYPE_LATEST)


@router.get(
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
