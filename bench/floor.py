"""The latency floor of a no-op job on this machine, measured beside our latency.

A job answered through ``Prefer: wait`` crosses three process boundaries that any design with
an HTTP front, a quorum task queue and workers in processes of their own crosses too. Each is
measured here with nothing done at either end, into a process that was idle for
:data:`IDLE` seconds (as each process of a job waits between its turns):

- ``http``: one httpx client's request to a trivial ASGI app under uvicorn (uvloop and
  httptools, the gateway's server), answered at once; sent → answered; and ``http_wrk``, the
  same request from wrk (a C client: the least a client adds), when wrk is installed;
- ``task``: a persistent message published with confirms to a task queue declared as the
  gateway declares one (quorum, its arguments) → received by another process's consumer;
- ``event``: a persistent message published with confirms to the events exchange, which
  routes it to the events queue (quorum, consumed and acked) and to an exclusive classic
  queue bound as the gateway's tap → the tap's copy received by another process.

The sum of their medians is the floor of our p50 (with each client); what our p50 has above
it is the gateway's and the worker's own work (two store commits among it). Run as ``python
-m bench.floor consume NAMESPACE`` it is that other process: it consumes both queues of the
namespace and prints, per message, the message's sequence number and the wall-clock time it arrived.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import aio_pika
import httpx
from aio_pika.abc import AbstractIncomingMessage
from starlette.types import Receive, Scope, Send

from bench.broker import delete_namespace
from bench.load import wrk_latency
from bench.support import AMQP_URL, BODY, HEADERS, ROOT, free_port, wait_ready
from worker_sdk.wire import TaskQueueOptions, Topology, declare_task_queue, declare_topology

# Seconds each receiving process waits idle before the next message or request.
IDLE = 0.002
SERVICE = "floor"
EVENT_KEY = f"{SERVICE}.succeeded"
WARMUP = 30


@dataclass(frozen=True)
class Floor:
    """Median milliseconds of each crossing, and their sum: with the httpx client's HTTP
    crossing, and with wrk's when it was measured."""

    http: float
    task: float
    event: float
    http_wrk: float | None = None

    @property
    def total(self) -> float:
        return self.http + self.task + self.event

    @property
    def total_wrk(self) -> float | None:
        return None if self.http_wrk is None else self.http_wrk + self.task + self.event

    def note(self, http: float | None = None) -> str:
        """The sum's terms, with ``http`` as the HTTP crossing (the httpx client's by
        default)."""
        http = self.http if http is None else http
        return f"HTTP {http:.2f} + task {self.task:.2f} + event {self.event:.2f}"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The trivial ASGI app of the ``http`` crossing: reads the body, answers ``{}``."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


def measure(samples: int) -> Floor:
    """Each crossing ``samples`` times (after a warm-up), sequentially."""
    namespace = f"bench-floor-{uuid.uuid4().hex[:8]}"
    http, http_wrk = http_round_trip(samples)
    return Floor(http=http, http_wrk=http_wrk, **asyncio.run(crossings(namespace, samples)))


def http_round_trip(samples: int) -> tuple[float, float | None]:
    """The ``http`` crossing (median ms): the trivial app served by uvicorn in a process of
    its own, stopped after; from an httpx client, then from wrk for as long as the httpx
    client took (``None`` without wrk)."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bench.floor:app", "--port", str(port)]
    command += ["--loop", "uvloop", "--http", "httptools", "--lifespan", "off"]
    command += ["--log-level", "warning"]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_ready(url, within=60)
        start = time.perf_counter()
        by_httpx = asyncio.run(_requests(url, samples))
        seconds = max(1.0, time.perf_counter() - start)
        by_wrk = wrk_latency(url, seconds, waited=False, idle_ms=IDLE * 1000)
        return by_httpx, None if by_wrk is None else by_wrk.p50
    finally:
        server.terminate()
        server.wait()


async def _requests(url: str, samples: int) -> float:
    times: list[float] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(WARMUP + samples):
            await asyncio.sleep(IDLE)  # the server idles, as between a job's turns
            start = time.perf_counter()
            r = await client.post(url, content=BODY, headers=HEADERS)
            times.append((time.perf_counter() - start) * 1000)
            r.raise_for_status()
    return statistics.median(times[WARMUP:])


async def crossings(namespace: str, samples: int) -> dict[str, float]:
    """The ``task`` and ``event`` crossings (median ms) through queues of ``namespace``,
    which is deleted after."""
    topology = Topology(namespace)
    try:
        async with _consumer(namespace) as arrivals:
            connection = await aio_pika.connect(AMQP_URL)
            async with connection:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                exchanges = await declare_topology(channel, topology)
                return {
                    "task": await _crossings(exchanges.tasks, SERVICE, arrivals, samples, base=0),
                    "event": await _crossings(
                        exchanges.events, EVENT_KEY, arrivals, samples, base=10**9
                    ),
                }
    finally:
        await delete_namespace(namespace, [SERVICE])


async def _crossings(
    exchange: aio_pika.abc.AbstractExchange,
    key: str,
    arrivals: asyncio.Queue[tuple[int, float]],
    samples: int,
    *,
    base: int,
) -> float:
    """Median milliseconds from publishing to the other process's receipt."""
    times: list[float] = []
    for seq in range(base, base + WARMUP + samples):
        await asyncio.sleep(IDLE)  # the consumer idles, as between a job's turns
        message = aio_pika.Message(
            BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=str(seq)
        )
        sent = time.time()
        await exchange.publish(message, key, mandatory=True, timeout=30)
        got, arrived = await asyncio.wait_for(arrivals.get(), timeout=30)
        if got != seq:
            raise RuntimeError(f"message {got} arrived where {seq} was awaited")
        times.append((arrived - sent) * 1000)
    return statistics.median(times[WARMUP:])


@asynccontextmanager
async def _consumer(namespace: str) -> AsyncIterator[asyncio.Queue[tuple[int, float]]]:
    """The consuming process, started and ready; its arrivals, in a queue."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.floor",
        "consume",
        namespace,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    stdout = process.stdout
    arrivals: asyncio.Queue[tuple[int, float]] = asyncio.Queue()

    async def read() -> None:
        while line := await stdout.readline():
            seq, arrived = line.split()
            arrivals.put_nowait((int(seq), float(arrived)))

    try:
        ready = await asyncio.wait_for(stdout.readline(), timeout=60)
        if ready.strip() != b"ready":
            raise RuntimeError(f"the floor's consumer did not start: {ready!r}")
        reader = asyncio.create_task(read())
        try:
            yield arrivals
        finally:
            reader.cancel()
            with suppress(asyncio.CancelledError):
                await reader
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def consume(namespace: str) -> None:
    """The other process: receive the task queue's and the tap's messages, and say when."""
    topology = Topology(namespace)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=32)
        exchanges = await declare_topology(channel, topology)
        tasks = await declare_task_queue(channel, topology, SERVICE, TaskQueueOptions())
        events = await channel.get_queue(topology.events_queue)
        tap = await channel.declare_queue(f"{namespace}.watch", exclusive=True, auto_delete=True)
        await tap.bind(exchanges.events, routing_key=EVENT_KEY)

        def arrived(message: AbstractIncomingMessage) -> None:
            sys.stdout.write(f"{message.message_id} {time.time()}\n")
            sys.stdout.flush()

        async def on_task(message: AbstractIncomingMessage) -> None:
            arrived(message)
            await message.ack()

        async def on_event(message: AbstractIncomingMessage) -> None:
            await message.ack()

        async def on_tap(message: AbstractIncomingMessage) -> None:
            arrived(message)

        await tasks.consume(on_task)
        await events.consume(on_event)
        await tap.consume(on_tap, no_ack=True)
        print("ready", flush=True)
        await asyncio.Future()  # until terminated


if __name__ == "__main__":
    if sys.argv[1:2] != ["consume"] or len(sys.argv) != 3:
        sys.exit("usage: python -m bench.floor consume NAMESPACE")
    asyncio.run(consume(sys.argv[2]))
