"""The FastAPI application factory and the lifespan that owns every connection."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TypedDict

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig

from gateway.api import canarie, docs, jobs, legacy, openapi, ops, processes, workers
from gateway.api import capacity as capacity_api
from gateway.api.fast import FastLanes
from gateway.applier import EventApplier
from gateway.auth import Authenticator
from gateway.body_limit import GatewayApp
from gateway.broker import Broker
from gateway.capacity import Capacity
from gateway.changes import Changes
from gateway.dead_letters import HANDED_ON_HEADER, DeathOrder
from gateway.errors import COMMON_RESPONSES, install_error_handlers
from gateway.fleet import Fleet
from gateway.inputs import InputChecker
from gateway.jobs import JobService
from gateway.limits import SubmitLimiter
from gateway.metrics import Metrics
from gateway.recovery import Recovery
from gateway.runtime import Runtime
from gateway.server import GuardedHttpProtocol
from gateway.settings import Settings, load_settings
from gateway.store import JobStore, open_store
from gateway.sweeper import Sweeper
from gateway.ui import STATIC_DIR, STATIC_PATH
from gateway.ui import routes as ui_routes
from gateway.watch import JobWatch
from gateway.webhook_delivery import WebhookDeliverer
from gateway.webhook_outbox import WebhookOutbox
from gateway.webhook_secret import webhook_signer
from gateway.webhooks import Subscriptions
from worker_sdk.wire import Topology
from worker_sdk.wire.catalogue import Catalogue, CatalogueError, load_catalogue, size_problems

log = logging.getLogger("gateway")

# FastAPI's native OpenTelemetry switched off (SG_OPENTELEMETRY unset).
_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}

# What the tap copies while a request of this process waits on or streams a job.
WATCHED_KEYS = (
    "*.started",
    "*.progress",
    "*.retrying",
    "*.succeeded",
    "*.failed",
    "*.cancelled",
    "*.outcomes",
    "*.barrier",
)


class State(TypedDict):
    runtime: Runtime


def create_app(
    settings: Settings, *, catalogue: Catalogue | None = None, store: JobStore | None = None
) -> FastAPI:
    """Build the gateway. The catalogue is read now (a broken one fails here); the store and
    the broker are opened by the lifespan and closed in reverse order, even after a failed
    start. ``catalogue`` and ``store`` replace the ones the settings name (tests)."""
    services = catalogue if catalogue is not None else load_catalogue(settings.catalogue)
    oversized = size_problems(
        services,
        broker_max_bytes=settings.broker_max_message_bytes,
        store_max_bytes=settings.store_max_bytes,
    )
    if oversized:
        raise CatalogueError(str(settings.catalogue), oversized)
    auth = Authenticator(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        async with AsyncExitStack() as stack:
            if settings.auth_disabled:
                log.warning(
                    "AUTHENTICATION IS DISABLED (SG_AUTH_DISABLED=true): every caller is an "
                    "anonymous admin who sees and cancels every job. Never run this in production."
                )
            hooks = settings.webhooks_enabled
            jobs_store = store if store is not None else open_store(settings.store_url)
            stack.push_async_callback(jobs_store.close)
            await jobs_store.open()
            broker = Broker(
                url=settings.amqp_url,
                topology=Topology(settings.namespace),
                catalogue=services,
                publish_timeout=settings.publish_timeout,
                connect_timeout=settings.broker_connect_timeout,
                name=f"{settings.namespace}/gateway@{socket.gethostname()}:{os.getpid()}",
                webhook_delays=settings.webhook_retry_delays if hooks else None,
            )
            metrics = Metrics(settings.prometheus_multiproc_dir)
            deliverer = _deliverer(settings, jobs_store, broker, metrics) if hooks else None
            if deliverer is not None:  # closed after the broker: its consumer is gone by then
                stack.push_async_callback(deliverer.close)
            stack.push_async_callback(broker.close)
            await broker.connect()
            watch = JobWatch()
            stack.push_async_callback(watch.close)
            outbox = (
                WebhookOutbox(
                    jobs_store,
                    broker,
                    public_url=str(settings.public_url) if settings.public_url else None,
                    interval=settings.recovery_interval,
                    older_than=settings.publish_timeout + 2.0,
                )
                if hooks
                else None
            )
            changes = Changes(
                watch,
                metrics,
                webhooks=outbox.owe if outbox is not None else None,
            )
            recovery = Recovery(
                jobs_store,
                broker,
                services,
                watch,
                interval=settings.recovery_interval,
                older_than=settings.publish_timeout + 2.0,
                grace=settings.recovery_grace,
            )
            inputs = InputChecker(
                services,
                settings.url_policy(),
                max_depth=settings.max_input_depth,
                max_urls=settings.max_urls_per_request,
                url_deadline=settings.url_check_deadline,
            )
            jobs_service = JobService(
                store=jobs_store,
                broker=broker,
                catalogue=services,
                changes=changes,
                inputs=inputs,
                limiter=SubmitLimiter(settings.submit_rate, settings.submit_burst),
                recovery=recovery,
                subscriptions=Subscriptions(
                    settings.webhook_policy() if hooks else None,
                    deadline=settings.url_check_deadline,
                ),
                max_active_jobs=settings.max_active_jobs,
                idempotency_window=settings.idempotency_window,
            )
            applier = EventApplier(
                jobs_store,
                changes,
                catalogue=services,
                stop_run=jobs_service.stop_workers,
                reject_other_versions=settings.version_mismatch == "reject",
                max_result_depth=settings.max_input_depth,
                death_order=DeathOrder(
                    lambda: _ready(broker, broker.topology.events_queue),
                    grace=settings.recovery_grace,
                    limit=max(settings.reaper_grace, 60.0),
                ),
                requeue=lambda task, spec, count: broker.publish_task(
                    task, spec, headers={HANDED_ON_HEADER: count}
                ),
            )
            applier.on_barrier(recovery.barrier_passed)
            topology = broker.topology
            watch.use_tap(
                await broker.tap(
                    WATCHED_KEYS, applier.on_watched_event, prefetch=settings.events_prefetch
                )
            )
            await broker.consume(
                topology.events_queue,
                applier.on_event,
                prefetch=settings.events_prefetch,
                coalesce_acks=True,  # events applied in one store transaction, acked in one
            )
            # Deaths wait together for the events before them (DeathOrder): take many at once.
            await broker.consume(topology.dead_letter_queue, applier.on_dead_letter, prefetch=256)
            if deliverer is not None:
                await broker.consume(
                    topology.webhooks_queue,
                    deliverer.on_message,
                    prefetch=settings.webhook_concurrency,
                )
            broker.start_watchdog(settings.broker_reconnect_after)
            sweeper = Sweeper(
                jobs_store,
                services,
                changes,
                grace=settings.reaper_grace,
                silence=settings.heartbeat_silence,
            )
            loops = [sweeper.run(settings.sweep_interval), recovery.run()]
            if outbox is not None:
                loops.append(outbox.run())
            for loop in loops:
                stack.push_async_callback(_cancel, asyncio.create_task(loop))
            fleet = Fleet(jobs_store, silence=settings.heartbeat_silence)
            capacity = Capacity(
                jobs_store, broker, services, fleet, refresh=settings.capacity_refresh
            )
            log.info(
                "gateway ready: %d service(s), namespace %r, store %s",
                len(services),
                settings.namespace,
                settings.store_url,
            )
            yield {
                "runtime": Runtime(
                    settings=settings,
                    catalogue=services,
                    store=jobs_store,
                    broker=broker,
                    jobs=jobs_service,
                    auth=auth,
                    sweeper=sweeper,
                    metrics=changes.metrics,
                    inputs=inputs,
                    recovery=recovery,
                    watch=watch,
                    fleet=fleet,
                    capacity=capacity,
                )
            }

    app = GatewayApp(
        title="Service Gateway",
        version="0.1.0",
        summary="Queue CPU-heavy research jobs on RabbitMQ workers and follow them over HTTP.",
        description=(
            "An OGC API – Processes style job API in front of RabbitMQ workers. Every error is "
            "an RFC 9457 problem document with a stable `code`."
        ),
        lifespan=lifespan,
        # Off, FastAPI's per-request look for OpenTelemetry providers is three dict reads.
        telemetry=None if settings.opentelemetry else _NO_TELEMETRY,
        responses=COMMON_RESPONSES,
        # FastAPI's own limit: bodies past it are answered 413 before any parsing (a problem
        # document: gateway.body_limit).
        max_body_size=settings.max_body_size,
        generate_unique_id_function=openapi.operation_id,
        # Served by gateway.api.docs from the gateway's own files, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.outermost = FastLanes  # the hot requests pay for no middleware
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(docs.router)
    ui_routes.install(app)
    # The CANARIE routes last: their /{service}/... paths must not shadow the others.
    for router in (
        ops.router,
        processes.router,
        workers.router,
        capacity_api.router,
        jobs.router,
        legacy.router,
        canarie.router,
    ):
        app.include_router(router)
    openapi.install(app, services, routes=list(app.routes))
    _hot_first(app, (jobs.router, processes.router))
    return app


def _hot_first(app: FastAPI, routers: tuple[APIRouter, ...]) -> None:
    """Match the routers of the hot routes (status reads, submissions) before the others.

    Routing tries the routes in order, and the job routes came after some thirty others: a
    tenth of a status read. No path of these routers is matched by any route before them
    (their paths start ``/jobs`` and ``/processes``; those before are ``/ui``, ``/docs``,
    ``/redoc``, ``/openapi.json`` and the landing page's, ``/workers``, ``/capacity``), so
    every request is answered as before; the OpenAPI document keeps the declared order."""
    hot = [r for r in app.router.routes if getattr(r, "original_router", None) in routers]
    if len(hot) != len(routers):
        raise RuntimeError("a hot router is not included")
    rest = [r for r in app.router.routes if r not in hot]
    app.router.routes[:] = [*hot, *rest]


def _deliverer(
    settings: Settings, store: JobStore, broker: Broker, metrics: Metrics
) -> WebhookDeliverer:
    secrets = [settings.webhook_secret, *settings.webhook_old_secrets]
    return WebhookDeliverer(
        store,
        broker,
        signers=[webhook_signer(s.get_secret_value()) for s in secrets if s is not None],
        policy=settings.webhook_policy(),
        delays=settings.webhook_retry_delays,
        timeout=settings.webhook_timeout,
        host_concurrency=settings.webhook_host_concurrency,
        host_wait=settings.webhook_host_wait,
        metrics=metrics,
    )


async def _ready(broker: Broker, queue: str) -> int:
    ready, _ = await broker.queue_stats(queue)
    return ready


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def app_factory() -> FastAPI:
    """Entry point for ``uvicorn --factory gateway.app:app_factory`` (reads ``SG_*``)."""
    settings = load_settings()
    GuardedHttpProtocol.configure(
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_header_size=settings.max_header_size,
    )
    return create_app(settings)
