"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from aio_pika import DeliveryMode, Message
from aio_pika.abc import HeadersType

from gateway.store import JobRecord, SQLiteStore, StoreError

T = TypeVar("T")

# Under `make test`, coverage measures the processes pytest runs the tests in; a child process
# a test starts is measured only when its environment comes through `measured` (the session
# fixture `_children_unmeasured` moves coverage's variables here). Tracing every child cost
# 15 % more CPU, a minute and a half of the suite on 2 cores, for a tenth of a point of
# coverage (94.7 against 94.6 %): the children still measured run what only a child process
# can, the HTTP server's guards, `sgw serve`'s shutdown, `sgw worker`'s start-up checks.
CHILD_COVERAGE: dict[str, str] = {}


def measured(env: dict[str, str]) -> dict[str, str]:
    """``env`` with what makes coverage measure the child process started with it."""
    return {**env, **CHILD_COVERAGE}


TEST_CATALOGUE = """
services:
  echo:
    title: Echo
    version: "1.0.0"
    canarie:
      name: Echo service
      synopsis: Says it back.
      institution: CRIM
      tags: "test, echo"
      pages:
        doc: https://example.org/echo/doc
        releasenotes: "<p>1.0.0: first release</p>,200"
        provenance: ",204"
    inputs:  # as in services.yaml, whose generated model examples/echo.py takes
      type: object
      properties:
        delay: {type: number, minimum: 0, maximum: 3600}
        fail: {type: string}
        text: {type: string, maxLength: 100}
  crunch:
    title: Crunch
    version: "2.0.0"
    inputs:
      type: object
      properties:
        gate: {type: string}
        progress: {type: integer, minimum: 0, maximum: 100}
        spin: {type: number}
  spin:
    title: Spin
    version: "1.0.0"
  slow:
    title: Slow
    version: "1.0.0"
  suicide:
    title: Suicide
    version: "1.0.0"
    delivery_limit: 1
  ephemeral:
    title: Expires fast
    version: "1.0.0"
    queue_ttl: 0.3
  bounded:
    title: Bounded queue
    version: "1.0.0"
    max_queued: 1
  chaos:
    title: Chaos
    version: "1.0.0"
  limited:
    title: Time-limited
    version: "1.0.0"
    time_limit: 0.5
  elastic:
    title: Behind an autoscaled worker
    version: "1.0.0"
    inputs:
      type: object
      properties:
        gate: {type: string}
  hungry:
    title: Allocates what it is asked to, under a memory limit
    version: "1.0.0"
    memory_limit: 256MiB
  legacyann:
    title: Ported annotator
    version: "1.0.0"
  flaky:
    title: Flaky
    version: "1.0.0"
    max_attempts: 3
  shortlived:
    title: Kept briefly
    version: "1.0.0"
    retention: 60
  counted:
    title: Counts its completions
    version: "1.0.0"
  fetcher:
    title: Takes a URL
    version: "1.0.0"
    inputs:
      type: object
      properties:
        url: {type: string, format: uri}
  bigresult:
    title: Returns what it is asked to
    version: "1.0.0"
    max_result_bytes: 1000
"""


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 15.0, what: str = "condition"
) -> T:
    """Await ``probe()`` until it returns a value other than None/False, or fail after timeout.

    The probe reads real state (an HTTP status, a store record); the short pause between
    probes only paces the polling. It grows from 10 to 50 ms: a probe costs a millisecond or
    two of CPU under coverage, and polling every 10 ms through long waits cost the pipeline,
    lifecycle, guarantees and webhooks tests 81 s of CPU against 68 s, taken from the broker
    and the processes under test, for no shorter a run.
    """
    deadline = time.monotonic() + within
    pause = 0.01
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, 0.05)


async def job_state(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_status(
    client: httpx.AsyncClient, job_id: str, *statuses: str, within: float = 15.0
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body = await job_state(client, job_id)
        return body if body["status"] in statuses else None

    return await eventually(probe, within=within, what=f"job {job_id} to be {statuses}")


async def submit(
    client: httpx.AsyncClient, service: str, inputs: dict[str, Any], **kwargs: Any
) -> httpx.Response:
    return await client.post(f"/processes/{service}/execution", json={"inputs": inputs}, **kwargs)


class OutageStore(SQLiteStore):
    """A SQLite store whose ``insert`` or ``finish`` fails (as a store that is down does)
    while its name is in ``down``; ``failures`` counts the refused calls."""

    def __init__(self, path: Path, *down: str) -> None:
        super().__init__(str(path))
        self.down = set(down)
        self.failures: dict[str, int] = {}

    def _outage(self, what: str) -> None:
        if what in self.down:
            self.failures[what] = self.failures.get(what, 0) + 1
            raise StoreError(f"{what}: the store is down")

    async def insert(self, record: JobRecord, *, counter: str | None = None) -> bool:
        self._outage("insert")
        return await super().insert(record, counter=counter)

    async def finish(self, job_id: uuid.UUID, **fields: Any) -> JobRecord | None:
        self._outage("finish")
        return await super().finish(job_id, **fields)


class BrokerRelay:
    """A TCP relay to the test broker: clients connect to ``url``; :meth:`cut` closes every
    connection through it and refuses new ones, so the broker is out of reach for them, until
    :meth:`resume`."""

    def __init__(self, amqp_url: str) -> None:
        self._target = urlsplit(amqp_url)
        self._amqp_url = amqp_url
        self._links: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._port = 0
        self.url = ""

    async def __aenter__(self) -> BrokerRelay:
        await self.resume()
        host = f"@{self._target.hostname}:{self._target.port}"
        self.url = self._amqp_url.replace(host, f"@127.0.0.1:{self._port}")
        return self

    async def resume(self) -> None:
        """Take connections again, on the same port."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        self.cut()

    def cut(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self._links:
            link.transport.abort()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = self._target
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port)
        self._links.update({writer, up_writer})
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


def message(
    body: bytes,
    *,
    type: str,
    correlation_id: str | None = None,
    expiration: float | None = None,
    priority: int | None = None,
    persistent: bool = True,
    headers: HeadersType | None = None,
) -> Message:
    """A message as the gateway and the workers publish it
    (:func:`worker_sdk.wire.publish.outgoing`), as aio-pika's ``Message``: for a test that
    publishes through aio-pika itself, and for the proof that both are the same bytes."""
    return Message(
        body,
        content_type="application/json",
        delivery_mode=DeliveryMode.PERSISTENT if persistent else DeliveryMode.NOT_PERSISTENT,
        message_id=uuid.uuid4().hex,
        correlation_id=correlation_id,
        type=type,
        expiration=expiration,
        priority=priority,
        headers=headers,
    )
