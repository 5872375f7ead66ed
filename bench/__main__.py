"""Measure the gateway against the raw broker ceiling, in one run on one machine.

Rows:
  raw publish     aio-pika confirmed publishes to a quorum queue, 64 in flight (the ceiling)
  submit          POST /processes/echo/execution, 2 gateway processes, 64 connections
  e2e latency     no-op job, submit → terminal state seen by the client (Prefer: wait), 1 client
  e2e throughput  2,000 no-op jobs through 2 worker processes, until all are successful
                  in the store

The load tool is wrk when it is installed (``apt-get install wrk``), else an httpx client.
Usage: python -m bench [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aio_pika
import httpx
import jwt
from rich.console import Console
from rich.table import Table

from worker_sdk.wire import (
    TaskQueueOptions,
    Topology,
    declare_task_queue,
    declare_topology,
    delete_topology,
)

ROOT = Path(__file__).resolve().parent.parent
AMQP_URL = os.environ.get("SG_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
BODY = b'{"inputs": {"text": "x"}}'
# Authentication is on, as in production: the gateway gets this secret, clients this token.
SECRET = uuid.uuid4().hex * 2
TOKEN = jwt.encode({"sub": "bench", "exp": int(time.time()) + 86400}, SECRET, algorithm="HS256")
HEADERS = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}
console = Console(width=130)


@dataclass
class Row:
    name: str
    value: float
    unit: str
    note: str = ""
    ratio: float | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def raw_publish_rate(namespace: str, total: int, window: int = 64) -> float:
    """Confirmed, persistent, mandatory publishes to a quorum queue with ``window`` in flight."""
    topology = Topology(namespace)
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_topology(channel, topology)
        await declare_task_queue(channel, topology, "rawbench", TaskQueueOptions())
        exchange = await channel.get_exchange(topology.tasks_exchange)
        slots = asyncio.Semaphore(window)

        async def one() -> None:
            async with slots:
                message = aio_pika.Message(
                    BODY,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=uuid.uuid4().hex,
                )
                await exchange.publish(message, "rawbench", mandatory=True, timeout=30)

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        elapsed = time.perf_counter() - start
        await channel.queue_delete(topology.task_queue("rawbench"), if_unused=False, if_empty=False)
    return total / elapsed


@contextmanager
def processes(
    commands: list[list[str]], env: dict[str, str], log: IO[bytes]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``commands`` (output to ``log``); stop them with SIGTERM on exit."""
    started = [
        subprocess.Popen(
            c, cwd=ROOT, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
        )
        for c in commands
    ]
    try:
        yield started
    finally:
        for p in started:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in started:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def wait_ready(base: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the gateway at {base} did not become ready")


def _wrk_script(stop_after: int | None) -> Path:
    """A wrk script that POSTs the no-op job; with ``stop_after``, each thread stops after that
    many responses."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    text = (
        'wrk.method = "POST"\n'
        f"wrk.body = '{BODY.decode()}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n'
    )
    if stop_after is not None:
        text += (
            "local done = 0\n"
            "function response(status, headers, body)\n"
            "  done = done + 1\n"
            f"  if done >= {stop_after} then wrk.thread:stop() end\n"
            "end\n"
        )
    script.write_text(text)
    return script


def wrk(
    base: str, seconds: int, connections: int, stop_after: int | None = None
) -> tuple[float, int]:
    script = _wrk_script(stop_after)
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{connections}",
                f"-d{seconds}s",
                "-s",
                str(script),
                f"{base}/processes/echo/execution",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        script.unlink()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rate, int(bad.group(1)) if bad else 0


async def submit_with_httpx(base: str, seconds: int, connections: int) -> tuple[float, int]:
    done = 0
    bad = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def loop() -> None:
            nonlocal done, bad
            while time.monotonic() < deadline:
                r = await client.post(
                    "/processes/echo/execution",
                    content=BODY,
                    headers=HEADERS,
                )
                done += 1
                bad += r.status_code != 201

        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    return done / elapsed, bad


async def e2e_latency(base: str, count: int) -> tuple[float, float]:
    samples = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for i in range(count + 20):
            start = time.perf_counter()
            r = await client.post(
                "/processes/echo/execution",
                content=BODY,
                headers={**HEADERS, "Prefer": "wait=10"},
            )
            elapsed = time.perf_counter() - start
            if r.status_code != 200 or r.json()["status"] != "successful":
                raise RuntimeError(f"no-op job did not finish: {r.status_code} {r.text}")
            if i >= 20:  # warm-up excluded
                samples.append(elapsed * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


async def e2e_throughput(
    base: str, db: Path, total: int, connections: int = 64
) -> tuple[float, int]:
    """Submit ``total`` no-op jobs (wrk when installed) and time them until all are successful
    in the store. Returns (jobs/s, jobs)."""
    store = sqlite3.connect(f"file:{db}?mode=ro", uri=True)

    first = int(store.execute("SELECT coalesce(max(rowid), 0) FROM jobs").fetchone()[0])

    def count(where: str) -> int:
        sql = f"SELECT count(*) FROM jobs WHERE rowid > ? AND {where}"
        return int(store.execute(sql, (first,)).fetchone()[0])

    start = time.perf_counter()
    load: asyncio.subprocess.Process | None = None
    script = _wrk_script(stop_after=total // 2)
    try:
        if shutil.which("wrk"):
            # Each wrk thread stops sending after its share; wrk itself idles until -d ends.
            load = await asyncio.create_subprocess_exec(
                "wrk",
                "-t2",
                f"-c{connections}",
                "-d300s",
                "-s",
                str(script),
                f"{base}/processes/echo/execution",
                stdout=asyncio.subprocess.DEVNULL,
            )
        else:
            await _submit_count_with_httpx(base, total, connections)
        while count("1") < total or count("status NOT IN ('successful', 'failed', 'dismissed')"):
            if time.perf_counter() - start > 300:
                raise RuntimeError("the jobs did not all finish within 300 s")
            await asyncio.sleep(0.005)  # polling the store
    finally:
        if load is not None:
            load.terminate()
            await load.wait()
        script.unlink()
    elapsed = time.perf_counter() - start
    jobs = count("1")
    failed = count("status != 'successful'")
    store.close()
    if failed:
        raise RuntimeError(f"{failed} jobs did not succeed")
    return jobs / elapsed, jobs


async def _submit_count_with_httpx(base: str, total: int, connections: int) -> None:
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        remaining = [total]

        async def loop() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                r = await client.post(
                    "/processes/echo/execution",
                    content=BODY,
                    headers=HEADERS,
                )
                if r.status_code != 201:
                    raise RuntimeError(f"submit failed: {r.status_code} {r.text}")

        await asyncio.gather(*(loop() for _ in range(connections)))


async def purge(namespace: str) -> None:
    topology = Topology(namespace)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.task_queue("echo"), ensure=True)
        await queue.purge()


async def cleanup(namespace: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        services = ["echo", "textstats", "rawbench"]
        await delete_topology(await connection.channel(), Topology(namespace), services)


def run(quick: bool) -> list[Row]:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="sg-bench-"))
    db = workdir / "jobs.db"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SG_JWT_SECRET": SECRET,
        "SG_AMQP_URL": AMQP_URL,
        "SG_NAMESPACE": namespace,
        "SG_STORE_URL": f"sqlite:///{db}",
        "SG_PORT": str(port),
        "SG_LOG_LEVEL": "WARNING",
    }
    sgw = [sys.executable, "-m", "gateway.cli"]
    rows: list[Row] = []
    seconds = 3 if quick else 10
    log = (workdir / "processes.log").open("wb")
    try:
        raw = asyncio.run(raw_publish_rate(namespace, 2000 if quick else 10000))
        rows.append(
            Row("raw confirmed publish (ceiling)", raw, "msg/s", "aio-pika, 64 in flight", 1.0)
        )
        with processes([[*sgw, "serve", "--workers", "2"]], env, log):
            wait_ready(base)
            if shutil.which("wrk"):
                rate, bad = wrk(base, seconds, 64)
                tool = "wrk"
            else:
                rate, bad = asyncio.run(submit_with_httpx(base, seconds, 64))
                tool = "httpx"
            rows.append(
                Row(
                    "submit (2 gateway processes, 64 conns)",
                    rate,
                    "jobs/s",
                    f"{tool}, {bad} non-201",
                    rate / raw,
                )
            )
            asyncio.run(purge(namespace))
            workers = [[*sgw, "worker", "examples.echo:worker", "--concurrency", "32"]] * 2
            with processes(workers, env, log):
                p50, p99 = asyncio.run(e2e_latency(base, 100 if quick else 500))
                rows.append(
                    Row("no-op end-to-end latency p50", p50, "ms", "submit → terminal, 1 client")
                )
                rows.append(Row("no-op end-to-end latency p99", p99, "ms"))
                e2e, jobs = asyncio.run(e2e_throughput(base, db, 500 if quick else 2000))
                rows.append(
                    Row(
                        f"end-to-end throughput ({jobs} jobs, 2 workers)",
                        e2e,
                        "jobs/s",
                        "submit → all successful in the store",
                        e2e / raw,
                    )
                )
    except Exception:
        log.close()
        tail = (workdir / "processes.log").read_text(errors="replace")[-3000:]
        console.print(f"[red]the benchmark failed; the processes said:[/red]\n{tail}")
        raise
    finally:
        log.close()
        asyncio.run(cleanup(namespace))
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke check")
    args = parser.parse_args()
    rows = run(args.quick)
    table = Table(title=f"Service Gateway benchmark ({os.cpu_count()} CPUs)")
    for column in ("measure", "value", "unit", "× raw publish", "notes"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.name,
            f"{row.value:,.1f}",
            row.unit,
            f"{row.ratio:.2f}" if row.ratio is not None else "",
            row.note,
        )
    console.print(table)


if __name__ == "__main__":
    main()
