"""What every part of the bench shares: the broker URL, the bench's token, ports, processes."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import jwt
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = Path(__file__).resolve().parent / "services.yaml"
AMQP_URL = os.environ.get("SG_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
BODY = b'{"inputs": {"text": "x"}}'
OWNER = "bench"
# Authentication is on, as in production: the servers get this secret, clients this token.
SECRET = uuid.uuid4().hex * 2
TOKEN = jwt.encode({"sub": OWNER, "exp": int(time.time()) + 86400}, SECRET, algorithm="HS256")
HEADERS = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}
console = Console(width=150)


@dataclass
class Row:
    """One line of the table: our figure, the baseline's when it has one, and how it was
    measured (printed as a numbered footnote)."""

    name: str
    unit: str
    ours: float | None
    baseline: float | None = None
    note: str = ""
    how: str = ""
    versus_raw: bool = False  # a rate shown as a fraction of the raw publish ceiling
    decimals: int = 1


@dataclass
class Phase:
    """Figures one part of the bench measured, by key, with a note per key when it has one."""

    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def outcome(tool: str, failed: int, jobs: int | None = None) -> str:
    """A row's note: the jobs counted, and what went wrong or differs from the usual."""
    parts = [f"{jobs:,} jobs"] if jobs is not None else []
    if failed:
        parts.append(f"{failed:,} failed")
    if tool != "wrk":
        parts.append(f"{tool} (no wrk)")
    return ", ".join(parts)


def step(text: str) -> None:
    """Say what the bench measures now."""
    console.log(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def processes(
    commands: list[list[str]], env: dict[str, str], log: IO[bytes], *, cwd: Path = ROOT
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``commands`` in ``cwd`` (each in its own session, output to ``log``); a
    ``python -m`` command there runs the code of that tree. On exit each gets
    SIGTERM (its own shutdown stops its children), then its whole process group SIGKILL after
    30 s or once it has exited, so that nothing it started outlives the bench."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for command in commands:
            started.append(
                subprocess.Popen(
                    command,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        yield started
    finally:
        for p in started:
            if p.poll() is None:
                p.terminate()
        for p in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def wait_ready(url: str, within: float = 300) -> None:
    """Wait until ``url`` answers 200 (minutes on a loaded machine, where uvicorn restarts
    gateway processes slow to answer its health check)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {within:g} s")


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples`` by the nearest-rank method."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Sizes:
    """How much each measure runs: the full run, or ``--quick`` for a smoke check."""

    seconds: float = 10  # each wrk run
    connections: int = 32
    raw_messages: int = 10_000
    latency_samples: int = 500
    latency_seconds: float = 5  # the wrk latency run
    sustained_jobs: int = 5_000
    sse_streams: int = 10_000
    window: float = 10  # each process-handler and scale-out measure
    noop_process_jobs: int = 2_000  # queued ahead of a window (more than it can take)
    cpu_jobs: int = 400
    store_jobs: int = 1_000_000
    deep_offset: int = 900_000
    page_repeats: int = 5

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            seconds=3,
            raw_messages=2_000,
            latency_samples=100,
            latency_seconds=2,
            sustained_jobs=1_000,
            sse_streams=1_000,
            window=3,
            noop_process_jobs=500,
            cpu_jobs=100,
            store_jobs=100_000,
            deep_offset=90_000,
            page_repeats=2,
        )
