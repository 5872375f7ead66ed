"""Fixtures: a RabbitMQ namespace per test, gateways and workers against the real broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from gateway import Settings, create_app
from gateway.auth import mint_token
from gateway.broker import Broker
from gateway.runtime import Runtime
from gateway.store import JobStore
from tests.support import CHILD_COVERAGE, TEST_CATALOGUE
from worker_sdk import Autoscale, UrlPolicy, Worker
from worker_sdk.wire import Topology, delete_topology
from worker_sdk.wire.catalogue import Catalogue, parse_catalogue
from worker_sdk.wire.topology import DEFAULT_WEBHOOK_DELAYS

TEST_SECRET = "a-test-secret-long-enough-for-every-hs-algorithm-of-rfc-7518-0123"
AMQP_URL = os.environ.get("SG_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ROOT = Path(__file__).resolve().parent.parent
# The webhook retry schedule of tests: short, and deleted with each test's namespace.
TEST_WEBHOOK_DELAYS = (1, 2)


@pytest.fixture(scope="session", autouse=True)
def _children_unmeasured() -> None:
    """Child processes are not measured for coverage unless a test asks (``measured``)."""
    for name in ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START"):
        if name in os.environ:
            CHILD_COVERAGE[name] = os.environ.pop(name)


@pytest.fixture
def amqp_url() -> str:
    return AMQP_URL


@pytest.fixture
def catalogue() -> Catalogue:
    return parse_catalogue(TEST_CATALOGUE, source="tests")


@pytest.fixture
async def namespace(catalogue: Catalogue) -> AsyncIterator[str]:
    """A fresh namespace; every queue and exchange it made is deleted afterwards."""
    ns = f"test-{uuid.uuid4().hex[:12]}"
    yield ns
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        await delete_topology(
            await connection.channel(),
            Topology(ns),
            [s.id for s in catalogue],
            webhook_delays=(*DEFAULT_WEBHOOK_DELAYS, *TEST_WEBHOOK_DELAYS),
        )


@pytest.fixture
def settings_for(namespace: str, tmp_path: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "amqp_url": AMQP_URL,
            "namespace": namespace,
            "store_url": f"sqlite:///{tmp_path / 'jobs.db'}",
            "catalogue": ROOT / "services.yaml",
            "jwt_secret": TEST_SECRET,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build


@dataclass(frozen=True)
class Gateway:
    """A started gateway; ``client`` calls it as ``alice``, ``as_user`` as anyone."""

    app: FastAPI
    client: httpx.AsyncClient
    runtime: Runtime
    transport: httpx.ASGITransport
    stop: Callable[[], Awaitable[None]]

    def token(self, sub: str | None, *scopes: str, **claims: Any) -> str:
        return mint_token(self.runtime.settings, subject=sub, scopes=scopes, **claims)

    def as_user(self, sub: str | None, *scopes: str) -> httpx.AsyncClient:
        """A client (closed by the caller) with a token for ``sub``."""
        return httpx.AsyncClient(
            transport=self.transport,
            base_url="http://gw.test",
            headers={"Authorization": f"Bearer {self.token(sub, *scopes)}"},
        )


GatewayFactory = Callable[..., Awaitable[Gateway]]


async def waiting_and_applying(
    factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> tuple[Gateway, Gateway]:
    """Two gateway replicas on one store and namespace: the first never consumes the shared
    events queue (it hears ends only on its tap), the second applies them."""
    real_consume = Broker.consume

    async def leave_events_to_the_other(
        self: Broker, queue: str, callback: Any, *, prefetch: int, **options: Any
    ) -> None:
        if queue != self.topology.events_queue:
            await real_consume(self, queue, callback, prefetch=prefetch, **options)

    monkeypatch.setattr(Broker, "consume", leave_events_to_the_other)
    waiting = await factory()
    monkeypatch.undo()
    return waiting, await factory()


@pytest.fixture
async def gateway_factory(
    settings_for: Callable[..., Settings], catalogue: Catalogue
) -> AsyncIterator[GatewayFactory]:
    """Start gateways (lifespan included) with an HTTP client each; all stop at teardown."""
    async with AsyncExitStack() as stack:

        async def start(store: JobStore | None = None, **overrides: Any) -> Gateway:
            app = create_app(settings_for(**overrides), catalogue=catalogue, store=store)
            own = AsyncExitStack()  # this gateway's, so that a test can stop it early
            stack.push_async_callback(own.aclose)
            state = await own.enter_async_context(app.router.lifespan_context(app))
            assert state is not None

            async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
                # What an ASGI server does with the lifespan's state.
                await app({**scope, "state": dict(state)}, receive, send)

            transport = httpx.ASGITransport(app=with_state)
            runtime: Runtime = state["runtime"]
            settings = runtime.settings
            hmac = settings.jwt_algorithms[0].startswith("HS") and not settings.auth_disabled
            token = mint_token(settings, subject="alice") if hmac else ""
            client = await own.enter_async_context(
                httpx.AsyncClient(
                    transport=transport,
                    base_url="http://gw.test",
                    headers={"Authorization": f"Bearer {token}"} if token else {},
                )
            )
            return Gateway(
                app=app, client=client, runtime=runtime, transport=transport, stop=own.aclose
            )

        yield start


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory()


@pytest.fixture
def client(gateway: Gateway) -> httpx.AsyncClient:
    return gateway.client


@pytest.fixture
async def run_worker(
    namespace: str, catalogue: Catalogue
) -> AsyncIterator[Callable[..., asyncio.Task[None]]]:
    """Run SDK workers in this process as tasks; each is stopped and awaited at teardown."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(
        worker: Worker,
        *,
        concurrency: int = 1,
        url_policy: UrlPolicy | None = None,
        autoscale: Autoscale | None = None,
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(
            worker.run(
                amqp_url=AMQP_URL,
                catalogue=catalogue,
                namespace=namespace,
                concurrency=concurrency,
                url_policy=url_policy,
                autoscale=autoscale,
            )
        )
        running.append((worker, task))
        return task

    yield start
    for worker, _ in running:
        worker.stop()
    for _, task in running:
        await asyncio.wait_for(task, timeout=30)


@pytest.fixture
def spawn_worker(
    namespace: str, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Run ``sgw worker`` in child processes (on the tests' catalogue); any still alive at
    teardown is killed."""
    processes: list[subprocess.Popen[bytes]] = []
    catalogue_file = tmp_path / "workers-catalogue.yaml"
    catalogue_file.write_text(TEST_CATALOGUE)

    def start(
        reference: str, *, concurrency: int = 1, extra: tuple[str, ...] = ()
    ) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "SG_AMQP_URL": AMQP_URL,
            "SG_NAMESPACE": namespace,
            "SG_CATALOGUE": str(catalogue_file),
        }
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "worker",
                reference,
                "--concurrency",
                str(concurrency),
                *extra,
            ],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
