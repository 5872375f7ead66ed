"""The CANARIE Research Service / Platform monitoring API.

Every route is public, answers HEAD, and answers HTML unless the client prefers JSON (CANARIE
requires HTML by default). ``info`` and ``stats`` come from the catalogue and the store;
``stats`` answers 503 when the broker or the store is down, as the CANARIE specification asks
(the old gateway never did). Each page is the operator's (``canarie.pages`` of a service,
``platform.pages``: a URL redirects, a template name is rendered in a sandbox, ``"text,status"``
is sent as is) or else generated from the catalogue; ``source`` is 204 unless configured.

Service routes answer under ``/{service}/service/`` and the old short form ``/{service}/``;
platform routes under ``/platform/`` and ``/service/``. Only the first of each is in the
OpenAPI document; HEAD is never listed there.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from gateway.api.docs import DOCS_PATH
from gateway.api.html import html_response, new_nonce, security_headers
from gateway.broker import BrokerDown
from gateway.canarie import (
    Links,
    configured_page,
    platform_context,
    platform_info,
    platform_services,
    service_context,
    service_info,
)
from gateway.errors import NotFound, ServiceUnavailable, UnknownProcess, responses
from gateway.jobs import SUBMISSIONS
from gateway.negotiation import best_match
from gateway.pages import page_templates
from gateway.runtime import RuntimeDep
from gateway.store import StoreError
from worker_sdk.wire.canarie import PAGE_NAMES, PageName, PageSource
from worker_sdk.wire.catalogue import ServiceSpec

log = logging.getLogger("gateway.canarie")
router = APIRouter(tags=["CANARIE monitoring"])

AcceptHeader = Annotated[str | None, Header(alias="accept", include_in_schema=False)]
PAGE_TITLES = {
    "doc": "documentation",
    "releasenotes": "release notes",
    "support": "support",
    "source": "source",
    "tryme": "try me",
    "licence": "licence",
    "provenance": "provenance",
    "factsheet": "factsheet",
}
_NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def wants_json(accept: str | None) -> bool:
    """Whether ``Accept`` prefers JSON to HTML. HTML is offered first, so it wins a tie, and
    no header, ``*/*`` or an unreadable one gives HTML, as CANARIE requires."""
    return best_match(accept, ["text/html", "application/json"]) == "application/json"


def _links(request: Request) -> Links:
    base = str(request.base_url).rstrip("/")
    return Links(
        base=base,
        swagger_execute=_swagger_execute(request, base),
        docs=f"{base}{DOCS_PATH}",
    )


def _swagger_execute(request: Request, base: str) -> str | None:
    """Swagger UI's deep link to the execute operation: ``#/{tag}/{operationId}``, read from
    this application's OpenAPI document (FastAPI turns Swagger UI's ``deepLinking`` on)."""
    app = request.app
    paths: dict[str, Any] = app.openapi().get("paths", {})
    for path, operations in paths.items():
        post = operations.get("post")
        if path.startswith("/processes/") and path.endswith("/execution") and post:
            tag = (post.get("tags") or ["default"])[0]
            # Swagger UI's createDeepLinkPath: trimmed, whitespace as %20.
            anchor = "/".join("%20".join(str(part).split()) for part in (tag, post["operationId"]))
            return f"{base}{DOCS_PATH}#/{anchor}"
    return None


def _fields(
    request: Request, accept: str | None, title: str, body: dict[str, Any], service: str | None
) -> Response:
    """``info`` and ``stats``: JSON when preferred, else a table in the layout."""
    if wants_json(accept):
        return JSONResponse(body, headers=_NOSNIFF)
    links = _links(request)
    context = {
        "title": title,
        "fields": body,
        "service": service,
        "links": links.service(service) if service else links.platform(),
        "platform_links": links.platform(),
    }
    return html_response(request, "canarie_fields.html", context)


# A page's name in a path: a string, so that a path naming no page (``/foo/bar``, which the
# service pages' route matches) is 404 as any unknown path, not a 400 of the parameter's type.
PagePath = Annotated[
    str, Path(description="A CANARIE page.", json_schema_extra={"enum": list(PAGE_NAMES)})
]


def _page_name(page: str) -> PageName:
    if page not in PAGE_NAMES:
        raise NotFound(f"no page {page!r}; the pages: {', '.join(PAGE_NAMES)}")
    return page


def _service(runtime: RuntimeDep, service: str) -> ServiceSpec:
    spec = runtime.catalogue.get(service)
    if spec is None:
        raise UnknownProcess(f"no service {service!r}")
    return spec


async def _active_workers(runtime: RuntimeDep, spec: ServiceSpec) -> int:
    since = datetime.now(UTC) - timedelta(seconds=runtime.settings.heartbeat_silence)
    try:
        return await runtime.store.active_workers(spec.id, since=since)
    except StoreError as exc:
        raise ServiceUnavailable(f"the job store does not answer: {exc}") from exc


async def _stats(runtime: RuntimeDep, services: list[ServiceSpec]) -> dict[str, Any]:
    try:
        await runtime.broker.check()
        await runtime.store.ping()
        counts = await runtime.store.counters(SUBMISSIONS)
        starts = [await runtime.store.counter_since(SUBMISSIONS + s.id) for s in services]
    except (BrokerDown, StoreError) as exc:
        raise ServiceUnavailable(f"a dependency is down: {exc}") from exc
    resets = [s for s in starts if s is not None]
    return {
        "lastReset": (min(resets) if resets else datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "invocations": sum(counts.get(SUBMISSIONS + s.id, 0) for s in services),
    }


def _page(
    request: Request,
    runtime: RuntimeDep,
    page: PageName,
    source: PageSource | None,
    context: dict[str, Any],
    title: str,
) -> Response:
    context = {**context, "page": page, "title": f"{title}: {PAGE_TITLES[page]}"}
    if source is None:
        if page == "source":
            return Response(status_code=204, headers=_NOSNIFF)
        return html_response(request, f"canarie_{page}.html", context)
    if source.kind == "redirect":
        return RedirectResponse(source.value, status_code=302, headers=_NOSNIFF)
    nonce = new_nonce()
    if source.kind == "text":
        if not source.value or source.status in (204, 304):
            return Response(status_code=source.status, headers=_NOSNIFF)
        return HTMLResponse(
            source.value, status_code=source.status, headers=security_headers(nonce)
        )
    directory = runtime.settings.canarie_templates
    if directory is None:
        log.error(
            "the %s page names template %r but SG_CANARIE_TEMPLATES is not set", page, source.value
        )
        raise ServiceUnavailable(f"the {page} page cannot be rendered (see the gateway's log)")
    try:
        text = page_templates(directory).render(source.value, {**context, "csp_nonce": nonce})
    except Exception:  # the sandbox's refusals, and whatever a template's expressions raise
        log.exception("the %s page template %r cannot be rendered", page, source.value)
        raise ServiceUnavailable(
            f"the {page} page cannot be rendered (see the gateway's log)"
        ) from None
    return HTMLResponse(text, headers=security_headers(nonce))


HTML_OR_JSON: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "HTML unless the client prefers JSON.",
        "content": {"text/html": {"schema": {"type": "string"}}, "application/json": {}},
    },
}
SERVICE_INFO = {**HTML_OR_JSON, **responses(UnknownProcess, ServiceUnavailable)}
STATS = {**HTML_OR_JSON, **responses(UnknownProcess, ServiceUnavailable)}
PLATFORM_STATS = {**HTML_OR_JSON, **responses(ServiceUnavailable)}
PAGES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}},
    204: {"description": "Not public (source) or empty."},
    302: {"description": "The page lives elsewhere."},
    **responses(NotFound, ServiceUnavailable),
}
SERVICE_PAGES = {**PAGES, **responses(UnknownProcess, NotFound, ServiceUnavailable)}


# The platform routes come first: /platform/... and /service/... must not be read as a
# service called "platform" or "service". Within each family, info and stats come before
# the {page} route that would otherwise answer their paths with 422.


@router.get("/platform/info", summary="CANARIE platform info", responses=HTML_OR_JSON)
@router.get("/service/info", include_in_schema=False)
@router.head("/platform/info", include_in_schema=False)
@router.head("/service/info", include_in_schema=False)
async def platform_info_route(
    request: Request, runtime: RuntimeDep, accept: AcceptHeader = None
) -> Response:
    """The platform: name, synopsis, version, institution, releaseTime, researchSubject,
    supportEmail, tags, and its services with links."""
    links = _links(request)
    body = platform_info(runtime.catalogue)
    body["services"] = platform_services(runtime.catalogue, links)
    return _fields(request, accept, f"{body['name']}: info", body, None)


@router.get("/platform/stats", summary="CANARIE platform stats", responses=PLATFORM_STATS)
@router.get("/service/stats", include_in_schema=False)
@router.head("/platform/stats", include_in_schema=False)
@router.head("/service/stats", include_in_schema=False)
async def platform_stats_route(
    request: Request, runtime: RuntimeDep, accept: AcceptHeader = None
) -> Response:
    """Submissions to every service since ``lastReset``; 503 when a dependency is down."""
    body = await _stats(runtime, list(runtime.catalogue))
    name = platform_info(runtime.catalogue)["name"]
    return _fields(request, accept, f"{name}: stats", body, None)


@router.get("/platform/{page}", summary="CANARIE platform page", responses=PAGES)
@router.get("/service/{page}", include_in_schema=False)
@router.head("/platform/{page}", include_in_schema=False)
@router.head("/service/{page}", include_in_schema=False)
async def platform_page_route(page: PagePath, request: Request, runtime: RuntimeDep) -> Response:
    """The platform's page: configured in ``platform.pages``, else generated."""
    page = _page_name(page)
    catalogue = runtime.catalogue
    context = platform_context(catalogue, _links(request))
    source = configured_page(None, page, catalogue.platform)
    return _page(request, runtime, page, source, context, context["platform"]["name"])


@router.get("/{service}/service/info", summary="CANARIE service info", responses=SERVICE_INFO)
@router.get("/{service}/info", include_in_schema=False)
@router.head("/{service}/service/info", include_in_schema=False)
@router.head("/{service}/info", include_in_schema=False)
async def service_info_route(
    service: str, request: Request, runtime: RuntimeDep, accept: AcceptHeader = None
) -> Response:
    """The service: name, synopsis, version, institution, releaseTime, researchSubject,
    supportEmail, category, tags, and ``activeWorkers`` (workers heard from lately)."""
    spec = _service(runtime, service)
    body = service_info(spec, runtime.catalogue)
    body["activeWorkers"] = await _active_workers(runtime, spec)
    return _fields(request, accept, f"{body['name']}: info", body, spec.id)


@router.get("/{service}/service/stats", summary="CANARIE service stats", responses=STATS)
@router.get("/{service}/stats", include_in_schema=False)
@router.head("/{service}/service/stats", include_in_schema=False)
@router.head("/{service}/stats", include_in_schema=False)
async def service_stats_route(
    service: str, request: Request, runtime: RuntimeDep, accept: AcceptHeader = None
) -> Response:
    """Submissions to the service since ``lastReset``; 503 when a dependency is down."""
    spec = _service(runtime, service)
    body = await _stats(runtime, [spec])
    name = service_info(spec, runtime.catalogue)["name"]
    return _fields(request, accept, f"{name}: stats", body, spec.id)


@router.get("/{service}/service/{page}", summary="CANARIE service page", responses=SERVICE_PAGES)
@router.get("/{service}/{page}", include_in_schema=False)
@router.head("/{service}/service/{page}", include_in_schema=False)
@router.head("/{service}/{page}", include_in_schema=False)
async def service_page_route(
    service: str, page: PagePath, request: Request, runtime: RuntimeDep
) -> Response:
    """The service's page: configured in its ``canarie.pages`` (licence and provenance also
    in ``platform.pages``), else generated from the catalogue."""
    spec = _service(runtime, service)
    page = _page_name(page)
    catalogue = runtime.catalogue
    context = service_context(spec, catalogue, _links(request))
    source = configured_page(spec, page, catalogue.platform)
    return _page(request, runtime, page, source, context, context["service"]["info"]["name"])
