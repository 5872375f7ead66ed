"""How the gateway serves HTTP: slow clients, public links, streams that outlive their token,
and metrics that add up over several gateway processes."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import TEST_SECRET, GatewayFactory
from tests.live import LiveGateway
from tests.support import TEST_CATALOGUE, eventually, submit
from worker_sdk.wire.catalogue import CatalogueError, parse_catalogue

pytestmark = pytest.mark.integration


def _token(lifetime: float = 600) -> str:
    return jwt.encode(
        {"sub": "alice", "exp": int(time.time() + lifetime)}, TEST_SECRET, algorithm="HS256"
    )


HEADER_LIMIT = 16 * 1024


@pytest.fixture
async def live(namespace: str, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    server = LiveGateway(
        namespace=namespace,
        workdir=tmp_path,
        catalogue=TEST_CATALOGUE,
        header_timeout="0.5",
        body_timeout="0.5",
        max_header_size=str(HEADER_LIMIT),
        public_url="https://jobs.example.org/gw",
        measured=True,  # the HTTP server's guards run only here
    )
    server.start()
    await server.ready()
    yield server
    await server.stop()


async def _closed_after(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), timeout=10)


def _problem(answer: bytes, status: int, code: str) -> None:
    """``answer`` is a whole response: ``status``, a problem document of ``code``, and the
    connection closed."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} ")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    problem = json.loads(body)
    assert (problem["status"], problem["code"]) == (status, code)


class TestSlowClients:
    async def test_trickled_headers_get_408_and_a_closed_connection(
        self, live: LiveGateway
    ) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        await writer.drain()
        answer = await _closed_after(reader)
        writer.close()
        _problem(answer, 408, "request-timeout")

    async def test_a_silent_connection_is_closed(self, live: LiveGateway) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        answer = await _closed_after(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408")

    async def test_a_trickled_body_gets_408(self, live: LiveGateway) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(
            b"POST /processes/echo/execution HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {_token()}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(b" " * (1 << 20))  # the body, too late, and more: read and dropped
        await writer.drain()
        answer = head + await _closed_after(reader)
        writer.close()
        _problem(answer, 408, "request-timeout")

    async def test_normal_requests_are_unaffected(self, live: LiveGateway) -> None:
        async with httpx.AsyncClient(base_url=live.base) as client:
            for _ in range(3):
                assert (await client.get("/healthz")).status_code == 200


class TestHeaderSize:
    @pytest.mark.parametrize("shape", ["one-long-header", "many-headers"])
    async def test_headers_past_the_limit_get_431_and_a_closed_connection(
        self, live: LiveGateway, shape: str
    ) -> None:
        """Sent as fast as the socket takes them, and never ended: the server stops holding
        them once past the limit, whether in one header or in many."""
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        if shape == "one-long-header":
            writer.write(b"X-Long: " + b"a" * (4 * HEADER_LIMIT))
        else:
            writer.write(b"".join(b"X-%d: v\r\n" % i for i in range(HEADER_LIMIT // 4)))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        # Still sending once answered: the server reads and drops it (a socket closed with
        # unread bytes is reset, and a reset can discard the answer before it is read).
        writer.write(b"a" * (1 << 20))
        await writer.drain()
        answer = head + await _closed_after(reader)
        writer.close()
        _problem(answer, 431, "headers-too-large")

    @pytest.mark.parametrize("shape", ["one-header", "long-url"])
    async def test_headers_past_the_limit_that_end_in_one_read_get_431(
        self, live: LiveGateway, shape: str
    ) -> None:
        """A whole request sent at once: its headers end in the chunk they began in."""
        over = b"a" * (HEADER_LIMIT + 100)
        if shape == "one-header":
            request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + over + b"\r\n\r\n"
        else:
            request = b"GET /healthz?" + over + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(request)
        await writer.drain()
        answer = await _closed_after(reader)
        writer.close()
        _problem(answer, 431, "headers-too-large")

    async def test_a_request_the_parser_refuses_gets_a_problem_document(
        self, live: LiveGateway
    ) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\x00: v\r\n\r\n")
        await writer.drain()
        answer = await _closed_after(reader)
        writer.close()
        _problem(answer, 400, "invalid-request")

    async def test_headers_within_the_limit_and_a_large_body_are_served(
        self, live: LiveGateway
    ) -> None:
        """Headers near the limit, then a body much larger than it on the same connection
        (the body is no header), then a second request on that connection."""
        headers = {
            "Authorization": f"Bearer {_token()}",
            **{f"X-Pad-{i}": "p" * 100 for i in range((HEADER_LIMIT - 2048) // 110)},
        }
        async with httpx.AsyncClient(base_url=live.base, headers=headers) as client:
            big = {"text": "t", "fail": "f" * (8 * HEADER_LIMIT)}
            assert (await submit(client, "echo", big)).status_code == 201
            assert (await client.get("/healthz")).status_code == 200


class TestLinks:
    async def test_links_use_the_public_url_not_the_host_header(self, live: LiveGateway) -> None:
        headers = {"Authorization": f"Bearer {_token()}", "Host": "evil.example.com"}
        async with httpx.AsyncClient(base_url=live.base, headers=headers) as client:
            response = await submit(client, "echo", {})
            assert response.status_code == 201
            job = response.json()
            assert (
                response.headers["location"] == f"https://jobs.example.org/gw/jobs/{job['jobID']}"
            )
            assert all(
                link["href"].startswith("https://jobs.example.org/gw/") for link in job["links"]
            )
            forwarded = await client.get(
                "/", headers={"X-Forwarded-Host": "evil.example.com", "X-Forwarded-Proto": "gopher"}
            )
            assert "evil" not in forwarded.text
            assert "gopher" not in forwarded.text


async def test_a_stream_ends_when_its_token_expires(gateway_factory: GatewayFactory) -> None:
    gateway = await gateway_factory(jwt_leeway=0)
    job = (await submit(gateway.client, "echo", {})).json()["jobID"]
    short = gateway.token("alice", lifetime=2)
    started = time.monotonic()
    response = await gateway.client.get(
        f"/jobs/{job}/events", headers={"Authorization": f"Bearer {short}"}
    )
    assert response.status_code == 200
    assert response.text.count("event: status") == 1  # the job as it was, then the end
    assert time.monotonic() - started < 30


def test_a_result_limit_past_the_brokers_is_refused_at_start() -> None:
    catalogue = parse_catalogue(
        TEST_CATALOGUE + "  huge:\n    title: H\n    version: '1'\n    max_result_bytes: 20000000\n"
    )
    settings = Settings(_env_file=None, jwt_secret=TEST_SECRET)  # type: ignore[call-arg]
    with pytest.raises(CatalogueError, match=r"huge.*does not fit the broker's message limit"):
        create_app(settings, catalogue=catalogue)
    mongo = Settings(  # type: ignore[call-arg]
        _env_file=None,
        jwt_secret=TEST_SECRET,
        broker_max_message_bytes=128 * 1024 * 1024,
        store_url="mongodb://localhost/sg",
    )
    with pytest.raises(CatalogueError, match="does not fit a stored job limit"):
        create_app(mongo, catalogue=catalogue)


async def test_metrics_add_up_over_gateway_processes(namespace: str, tmp_path: Path) -> None:
    server = LiveGateway(
        namespace=namespace,
        workdir=tmp_path,
        catalogue=TEST_CATALOGUE,
        workers="2",
        measured=True,  # `sgw serve --workers` and the metrics of several processes
    )
    server.start()
    try:
        await server.ready()
        auth = {"Authorization": f"Bearer {_token()}"}
        for _ in range(20):  # a connection each, so both processes take some
            async with httpx.AsyncClient(base_url=server.base, headers=auth) as client:
                assert (await submit(client, "echo", {})).status_code == 201

        async def submitted() -> float:
            async with httpx.AsyncClient(base_url=server.base) as client:
                text = (await client.get("/metrics")).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "sg_jobs_submitted_total" and sample.labels == {
                        "service": "echo"
                    }:
                        return sample.value
            return 0.0

        for _ in range(10):  # whichever process answers, the sum is the same
            assert await submitted() == 20.0
    finally:
        await server.stop()


async def test_every_gateway_process_logs_one_line_per_record(
    namespace: str, tmp_path: Path
) -> None:
    server = LiveGateway(
        namespace=namespace,
        workdir=tmp_path,
        catalogue=TEST_CATALOGUE,
        workers="2",
        log_level="INFO",
    )
    log = tmp_path / "gateway.log"
    server.start(log=log)
    try:
        await server.ready()

        def readies() -> list[str]:
            return [line for line in log.read_text().splitlines() if "gateway ready" in line]

        async def both() -> list[str] | None:
            return found if len(found := readies()) == 2 else None

        # Each process's records, with their time, level and logger (uvicorn's processes
        # dropped them below WARNING).
        for line in await eventually(both, what="both processes' ready records"):
            assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO gateway: ", line), line
    finally:
        await server.stop()


class TestResponseWrites:
    """The server sends a response's head with its body; what writes first still arrives."""

    async def test_an_expect_100_continue_request_gets_its_go_ahead_then_its_answer(
        self, live: LiveGateway
    ) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        body = b'{"inputs": {"text": "x"}}'
        writer.write(
            b"POST /processes/echo/execution HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            + f"Authorization: Bearer {_token()}\r\n".encode()
            + b"Prefer: respond-async\r\nConnection: close\r\n"
            + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        await writer.drain()
        go_ahead = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert go_ahead == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        await writer.drain()
        answer = await _closed_after(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 201 ")
        assert b'"status":"accepted"' in answer

    async def test_pipelined_and_head_requests_are_answered_in_order(
        self, live: LiveGateway
    ) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        answer = await _closed_after(reader)
        writer.close()
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
        assert statuses == [b"200", b"200", b"404"]  # HEAD as the GET, its body not sent
