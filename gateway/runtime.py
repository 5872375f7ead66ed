"""What the lifespan builds and the routes depend on, typed (no ``app.state`` grab bag)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer
from starlette.responses import Response

from gateway.api.schemas import StatusInfo
from gateway.auth import Authenticator, Principal
from gateway.broker import Broker
from gateway.capacity import Capacity
from gateway.fleet import Fleet, Waiting
from gateway.inputs import InputChecker
from gateway.jobs import JobService
from gateway.metrics import Metrics
from gateway.recovery import Recovery
from gateway.settings import Settings
from gateway.store import JobRecord, JobStore
from gateway.sweeper import Sweeper
from gateway.watch import JobWatch
from worker_sdk.wire.catalogue import Catalogue


class RenderedStatus:
    """The status documents read lately, serialised, one per job (the last read of each), for
    a job read again unchanged: a client polling its job, a monitor polling many.

    A job's document is a function of what its record shows (:meth:`StatusInfo.shown`), the
    gateway's public root and the version the catalogue gives its process: kept under those,
    it is answered again as long as they hold, its record neither presented nor serialised
    again (a third of the application's time in a read). An accepted job's document also
    tells where the job waits, which moves while its record does not: it is never kept. At
    most ``size`` documents are kept, the oldest dropped first.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._bodies: dict[UUID, tuple[tuple[object, ...], bytes]] = {}

    def body(
        self, record: JobRecord, base: str, version: str | None, render: Callable[[], StatusInfo]
    ) -> bytes:
        """The serialised document of ``record``: the one kept, or ``render()``'s, then kept."""
        key = (base, version, *StatusInfo.shown(record))
        known = self._bodies.get(record.id)
        if known is not None and known[0] == key:
            return known[1]
        body = render().model_dump_json(exclude_none=True).encode()
        if known is not None:
            del self._bodies[record.id]  # kept again as the newest
        elif len(self._bodies) >= self._size:
            del self._bodies[next(iter(self._bodies))]  # the oldest
        self._bodies[record.id] = (key, body)
        return body

    def __len__(self) -> int:
        return len(self._bodies)


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    catalogue: Catalogue
    store: JobStore
    broker: Broker
    jobs: JobService
    auth: Authenticator
    sweeper: Sweeper
    metrics: Metrics
    inputs: InputChecker
    recovery: Recovery
    watch: JobWatch
    fleet: Fleet
    capacity: Capacity
    rendered: RenderedStatus = field(default_factory=RenderedStatus)


# Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies on its
# thread pool, a thread hop per request for a field read.
async def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.state.runtime
    return runtime


async def _jobs(request: Request) -> JobService:
    runtime: Runtime = request.state.runtime
    return runtime.jobs


class _Bearer(HTTPBearer):
    """The bearer scheme of the OpenAPI document, authenticating as one dependency."""

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        runtime: Runtime = request.state.runtime
        return await runtime.auth.authenticate(request.headers.get("authorization"))


_bearer = _Bearer(
    scheme_name="bearer",
    description="A JWT as `Authorization: Bearer <token>`; the raw token alone (the old "
    "gateway's form) is accepted too. `sgw token` mints one for development.",
)


async def base_url(request: Request) -> str:
    """The gateway's public root, for links and ``Location`` headers: ``SG_PUBLIC_URL`` when
    set, else the request's own (its ``Host``; forwarded headers count only from the proxies
    ``SG_FORWARDED_ALLOW_IPS`` names, as uvicorn applies them)."""
    runtime: Runtime = request.state.runtime
    public = runtime.settings.public_url
    if public is not None:
        return str(public).rstrip("/")
    # Starlette builds the root from these alone, parsing and joining a URL each time: a
    # twentieth of a submission; they are few and repeat, so each is built once.
    scope = request.scope
    key = (
        scope.get("scheme"),
        scope.get("server"),
        scope.get("root_path"),
        scope.get("app_root_path"),
        request.headers.get("host"),
    )
    found = _ROOTS.get(key)
    if found is None:
        if len(_ROOTS) >= MAX_ROOTS:  # a client inventing Host headers
            _ROOTS.clear()
        found = _ROOTS[key] = str(request.base_url).rstrip("/")
    return found


def public_path(request: Request) -> str:
    """The path the gateway is served under, as browsers see it: ``''`` at the root of a
    host, ``'/gw'`` behind a proxy that forwards ``/gw/...`` with the prefix stripped
    (``SG_PUBLIC_URL=https://host/gw``) or under a server's ``root_path``. The dashboard's and
    the API docs' own links start with it."""
    runtime: Runtime = request.state.runtime
    public = runtime.settings.public_url
    path = public.path if public is not None else request.scope.get("root_path")
    return str(path or "").rstrip("/")


MAX_ROOTS = 256
_ROOTS: dict[tuple[object, ...], str] = {}


class Presenter:
    """Builds a job's status document for the request being answered."""

    def __init__(
        self, base: str, catalogue: Catalogue, rendered: RenderedStatus | None = None
    ) -> None:
        self.base = base
        self._catalogue = catalogue
        self._rendered = rendered

    def __call__(self, record: JobRecord, waiting: Waiting | None = None) -> StatusInfo:
        return StatusInfo.of(record, self.base, self._version(record), waiting)

    def response(self, record: JobRecord, waiting: Waiting | None = None) -> Response:
        """The job's status document as the answer to a read (``waiting``: an accepted job's),
        the same bytes as long as the job is unchanged (see :class:`RenderedStatus`)."""
        if waiting is not None or self._rendered is None:
            return self(record, waiting).response()
        version = self._version(record)
        body = self._rendered.body(
            record, self.base, version, lambda: StatusInfo.of(record, self.base, version)
        )
        return Response(body, media_type="application/json")

    def _version(self, record: JobRecord) -> str | None:
        spec = self._catalogue.get(record.service)
        return spec.version if spec else None


def presenter(base: str, runtime: Runtime) -> Presenter:
    """The presenter of a request answered at ``base``."""
    return Presenter(base, runtime.catalogue, runtime.rendered)


async def _presenter(request: Request) -> Presenter:
    runtime: Runtime = request.state.runtime
    return presenter(await base_url(request), runtime)


@dataclass(frozen=True, slots=True)
class Call:
    """What a hot route needs of its request, solved as one dependency: the runtime, the
    authenticated caller and the presenter of its answer."""

    runtime: Runtime
    principal: Principal
    present: Presenter

    @property
    def jobs(self) -> JobService:
        return self.runtime.jobs


class _Caller(_Bearer):
    """The bearer scheme again (the same name and description, so the same entry of the
    OpenAPI document), resolving to the whole :class:`Call`: FastAPI's dependency solving
    costs per dependency, a fifth of a status read when a route took four."""

    async def __call__(self, request: Request) -> Call:  # type: ignore[override]
        runtime: Runtime = request.scope["state"]["runtime"]
        principal = await runtime.auth.authenticate(request.headers.get("authorization"))
        return Call(runtime, principal, presenter(await base_url(request), runtime))


_caller = _Caller(scheme_name=_bearer.scheme_name, description=_bearer.model.description)

RuntimeDep = Annotated[Runtime, Depends(_runtime)]
CallDep = Annotated[Call, Security(_caller)]
JobsDep = Annotated[JobService, Depends(_jobs)]
BaseUrlDep = Annotated[str, Depends(base_url)]
PrincipalDep = Annotated[Principal, Security(_bearer)]
PresenterDep = Annotated[Presenter, Depends(_presenter)]
