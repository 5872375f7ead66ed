"""Schemathesis over the live OpenAPI document of a running gateway: no 5xx, and every
response matches what the document declares."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import AMQP_URL, ROOT, TEST_SECRET

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``sgw serve`` in a child process, in a namespace of its own."""
    port = _free_port()
    namespace = f"test-fuzz-{os.getpid()}-{port}"
    env = {
        **os.environ,
        "SG_AMQP_URL": AMQP_URL,
        "SG_NAMESPACE": namespace,
        "SG_STORE_URL": f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'jobs.db'}",
        "SG_JWT_SECRET": TEST_SECRET,
        "SG_PORT": str(port),
        "SG_LOG_LEVEL": "WARNING",
        "SG_CATALOGUE": str(ROOT / "services.yaml"),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"], cwd=ROOT, env=env, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
        _delete_namespace(namespace)


def _delete_namespace(namespace: str) -> None:
    import asyncio

    import aio_pika

    from worker_sdk.wire import Topology, delete_topology

    async def delete() -> None:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            services = ["echo", "textstats"]
            await delete_topology(await connection.channel(), Topology(namespace), services)

    asyncio.run(delete())


TOKEN = jwt.encode(
    {"sub": "fuzzer", "exp": int(time.time()) + 86400}, TEST_SECRET, algorithm="HS256"
)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _operations(base: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", headers=AUTH)
    return [result.ok() for result in schema.get_all_operations()]


def _is_legacy(path: str) -> bool:
    parts = path.split("/")
    return len(parts) > 2 and parts[1] == "{service}" and parts[2] in LEGACY_ACTIONS


LEGACY_ACTIONS = {"process", "annotate", "status", "cancel"}


def _free_text_values(case: Case) -> bool:
    query = case.query or {}
    return case.operation.path == "/jobs" and any(
        name in query for name in ("cursor", "datetime", "status")
    )


def _runner(
    operation: Any, mode: GenerationMode, base: str, calls: dict[str, int]
) -> Callable[[], None]:
    """A Hypothesis test over one operation's generated requests."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Case) -> None:
        label = f"{case.operation.label} ({mode.value})"
        calls[label] = calls.get(label, 0) + 1
        if mode is GenerationMode.POSITIVE and _free_text_values(case):
            # The job list's cursor is opaque and its datetime an RFC 3339 instant or
            # interval: strings the schema admits but that are neither are 400
            # invalid-query-parameter-value, as OGC asks; every other check holds.
            case.call_and_validate(
                base_url=base, headers=AUTH, excluded_checks=[positive_data_acceptance]
            )
        elif mode is GenerationMode.POSITIVE and _is_legacy(case.operation.path):
            # The old routes answer an unknown service with 400 (code 202), as the old gateway
            # did; every other check holds.
            case.call_and_validate(
                base_url=base, headers=AUTH, excluded_checks=[positive_data_acceptance]
            )
        elif mode is GenerationMode.POSITIVE:
            case.call_and_validate(base_url=base, headers=AUTH)
        else:
            # Invalid data (including unknown query parameters, which the API ignores, and a
            # stripped Authorization header, which AUTH puts back): never a 5xx.
            case.call_and_validate(base_url=base, headers=AUTH, checks=[not_a_server_error])

    runner: Callable[[], None] = run
    return runner


@pytest.mark.timeout(300)  # a fixed number of calls: about a minute on a slow 2-core machine
def test_the_api_answers_as_documented(live_gateway: str) -> None:
    """Every operation, with bounded generated examples: no 5xx, responses as declared."""
    operations = _operations(live_gateway)
    assert len(operations) >= 8
    failures: list[str] = []
    calls: dict[str, int] = {}
    for operation, mode in itertools.product(operations, GenerationMode):
        try:
            _runner(operation, mode, live_gateway, calls)()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # no parameters: nothing to make invalid
        except Exception as exc:
            failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
    print(calls)  # noqa: T201 - shown with -s
    assert sum(calls.values()) >= 10 * len(operations), calls


def test_the_document_is_served(live_gateway: str) -> None:
    """The document the fuzzing reads is the live one: OpenAPI 3.0, every route family."""
    document = httpx.get(f"{live_gateway}/openapi.json").json()
    assert document["openapi"].startswith("3.0")
    assert {
        "/processes/{processID}/execution",
        "/jobs",
        "/jobs/{jobID}/events",
        "/{service}/process",
        "/{service}/status",
        "/{service}/service/info",
        "/readyz",
    } <= set(document["paths"])
