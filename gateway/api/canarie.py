"""The CANARIE Research Service / Platform monitoring API.

Every route is public, answers HEAD, and answers HTML unless the client prefers JSON (CANARIE
requires HTML by default). ``info`` and ``stats`` come from the catalogue and the store;
``stats`` answers 503 when the broker or the store is down, as the CANARIE specification asks
(the old gateway never did). The doc pages come from each service's ``canarie.pages``: a URL
is a redirect, ``"text,status"`` that response; ``source`` is 204 when not given.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from gateway.broker import BrokerDown
from gateway.catalogue import ServiceSpec
from gateway.errors import ServiceUnavailable, UnknownProcess, responses
from gateway.jobs import SUBMISSIONS
from gateway.runtime import RuntimeDep
from gateway.store import StoreError

router = APIRouter(tags=["CANARIE monitoring"])
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")

Page = Literal[
    "doc", "releasenotes", "support", "source", "tryme", "licence", "provenance", "factsheet"
]
AcceptHeader = Annotated[str | None, Header(alias="accept", include_in_schema=False)]
PLATFORM_NAME = "Service Gateway"
API_VERSION = "0.1.0"


def wants_json(accept: str | None) -> bool:
    """JSON only when asked for above HTML (CANARIE: HTML is the default)."""
    if not accept:
        return False
    quality: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        quality[media.lower()] = max(q, quality.get(media.lower(), 0.0))
    json_q = quality.get("application/json", 0.0)
    html_q = max(quality.get("text/html", 0.0), quality.get("text/*", 0.0))
    return json_q > 0 and json_q > html_q


def _render(request: Request, accept: str | None, title: str, body: dict[str, Any]) -> Response:
    if wants_json(accept):
        return JSONResponse(body)
    response: Response = templates.TemplateResponse(
        request, "canarie.html", {"title": title, "fields": body}
    )
    return response


def _service(runtime: RuntimeDep, service: str) -> ServiceSpec:
    spec = runtime.catalogue.get(service)
    if spec is None:
        raise UnknownProcess(f"no service {service!r}")
    return spec


async def _info(runtime: RuntimeDep, spec: ServiceSpec) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(seconds=runtime.settings.heartbeat_silence)
    try:
        workers = await runtime.store.active_workers(spec.id, since=since)
    except StoreError as exc:
        raise ServiceUnavailable(f"the job store does not answer: {exc}") from exc
    meta = spec.canarie
    return {
        "name": meta.name or spec.title,
        "synopsis": meta.synopsis or spec.description,
        "version": spec.version,
        "institution": meta.institution,
        "releaseTime": meta.release_time,
        "researchSubject": meta.research_subject,
        "supportEmail": meta.support_email,
        "category": meta.category,
        "tags": list(meta.tags),
        "activeWorkers": workers,
    }


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


def _page(spec: ServiceSpec | None, page: Page) -> Response:
    source = spec.canarie.pages.get(page) if spec is not None else None
    if source is None:
        if page == "source":
            return Response(status_code=204)
        raise UnknownProcess(f"no {page} page for {spec.id if spec else 'the platform'}")
    if source.startswith(("http://", "https://")):
        return RedirectResponse(source, status_code=302)
    text, _, status = source.rpartition(",")
    if status.isdigit():
        return (
            HTMLResponse(text, status_code=int(status))
            if text
            else Response(status_code=int(status))
        )
    return HTMLResponse(source)


HTML_OR_JSON: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "HTML unless the client prefers JSON.",
        "content": {"text/html": {"schema": {"type": "string"}}, "application/json": {}},
    },
    **responses(UnknownProcess),
}
STATS = {**HTML_OR_JSON, **responses(ServiceUnavailable)}
PAGES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}},
    204: {"description": "Not public (source) or empty."},
    302: {"description": "The page lives elsewhere."},
    **responses(UnknownProcess),
}


def _route(path: str, endpoint: Any, summary: str, documented: dict[int | str, Any]) -> None:
    """GET in the OpenAPI document, and HEAD beside it (CANARIE asks for HEAD everywhere)."""
    router.add_api_route(path, endpoint, methods=["GET"], summary=summary, responses=documented)
    router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)


def _service_routes(prefix: str) -> None:
    async def service_info(
        service: str, request: Request, runtime: RuntimeDep, accept: AcceptHeader = None
    ) -> Response:
        spec = _service(runtime, service)
        return _render(request, accept, f"{spec.title}: info", await _info(runtime, spec))

    async def service_stats(
        service: str, request: Request, runtime: RuntimeDep, accept: AcceptHeader = None
    ) -> Response:
        spec = _service(runtime, service)
        return _render(request, accept, f"{spec.title}: stats", await _stats(runtime, [spec]))

    async def service_page(service: str, page: Page, runtime: RuntimeDep) -> Response:
        return _page(_service(runtime, service), page)

    _route(f"{prefix}/info", service_info, "CANARIE service info", HTML_OR_JSON)
    _route(f"{prefix}/stats", service_stats, "CANARIE service stats", STATS)
    _route(f"{prefix}/{{page}}", service_page, "CANARIE service page", PAGES)


def _platform_routes(prefix: str) -> None:
    async def platform_info(
        request: Request, runtime: RuntimeDep, accept: AcceptHeader = None
    ) -> Response:
        body = {
            "name": PLATFORM_NAME,
            "synopsis": "A job gateway for CPU-heavy research services.",
            "version": API_VERSION,
            "services": [s.id for s in runtime.catalogue],
        }
        return _render(request, accept, f"{PLATFORM_NAME}: info", body)

    async def platform_stats(
        request: Request, runtime: RuntimeDep, accept: AcceptHeader = None
    ) -> Response:
        body = await _stats(runtime, list(runtime.catalogue))
        return _render(request, accept, f"{PLATFORM_NAME}: stats", body)

    async def platform_page(page: Page) -> Response:
        return _page(None, page)

    _route(f"{prefix}/info", platform_info, "CANARIE platform info", HTML_OR_JSON)
    _route(f"{prefix}/stats", platform_stats, "CANARIE platform stats", STATS)
    _route(f"{prefix}/{{page}}", platform_page, "CANARIE platform page", PAGES)


for _prefix in ("/platform", "/service"):
    _platform_routes(_prefix)
for _prefix in ("/{service}/service", "/{service}"):
    _service_routes(_prefix)
