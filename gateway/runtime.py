"""What the lifespan builds and the routes depend on, typed (no ``app.state`` grab bag)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from gateway.broker import Broker
from gateway.catalogue import Catalogue
from gateway.jobs import JobService
from gateway.settings import Settings
from gateway.store import JobStore


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    catalogue: Catalogue
    store: JobStore
    broker: Broker
    jobs: JobService


# Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies on its
# thread pool, a thread hop per request for a field read.
async def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.state.runtime
    return runtime


async def _jobs(request: Request) -> JobService:
    runtime: Runtime = request.state.runtime
    return runtime.jobs


async def base_url(request: Request) -> str:
    """The gateway's public root, for links and ``Location`` headers."""
    return str(request.base_url).rstrip("/")


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
JobsDep = Annotated[JobService, Depends(_jobs)]
BaseUrlDep = Annotated[str, Depends(base_url)]
