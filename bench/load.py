"""HTTP load: wrk when it is installed (``apt-get install wrk``), else an httpx client.

wrk is a C load generator: at the rates measured here an asyncio client in Python would take
a core of its own and cap the figure; the httpx fallback is there so the bench still runs
(and says which tool it used) on a machine without wrk.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.support import BODY, HEADERS, TOKEN, Phase

# Tries of one submit answered 503 or 429 (0.5 s apart).
RETRIES = 60


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk_script(method: str, body: bytes | None = None, stop_after: int | None = None) -> Path:
    """A wrk script sending ``method`` with the bench's token (and ``body``); with
    ``stop_after``, each thread stops after that many responses."""
    script = Path(tempfile.mkstemp(prefix="sg-bench-", suffix=".lua")[1])
    text = f'wrk.method = "{method}"\nwrk.headers["Authorization"] = "Bearer {TOKEN}"\n'
    if body is not None:
        text += f"wrk.body = '{body.decode()}'\n"
        text += 'wrk.headers["Content-Type"] = "application/json"\n'
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


def wrk(url: str, method: str, seconds: float, connections: int) -> tuple[float, int]:
    """Requests/s and the count of non-2xx/3xx answers of ``connections`` wrk connections
    hammering ``url`` for ``seconds``."""
    script = wrk_script(method, BODY if method == "POST" else None)
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        script.unlink()
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"wrk said:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failures = int(bad.group(1)) if bad else 0
    if errors:
        failures += sum(int(n) for n in errors.groups())
    return float(found.group(1)), failures


async def httpx_load(url: str, method: str, seconds: float, connections: int) -> tuple[float, int]:
    """The same measure as :func:`wrk` with an asyncio httpx client."""
    done = 0
    bad = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def loop() -> None:
            nonlocal done, bad
            while time.monotonic() < deadline:
                content = BODY if method == "POST" else None
                r = await client.request(method, url, content=content, headers=HEADERS)
                done += 1
                bad += not r.is_success

        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    return done / elapsed, bad


def hammer(url: str, method: str, seconds: float, connections: int) -> tuple[float, int, str]:
    """Requests/s, failures and the tool used."""
    if have_wrk():
        return (*wrk(url, method, seconds, connections), "wrk")
    return (*asyncio.run(httpx_load(url, method, seconds, connections)), "httpx")


async def submit_count(url: str, total: int, body: bytes, connections: int = 32) -> list[str]:
    """POST ``body`` to ``url`` exactly ``total`` times; the job ids (``jobID``) answered.

    A 503 (the broker did not confirm, as when its connections are closed under us), a 429 or
    a dropped connection is retried after a pause, as a client should; any other refusal stops
    the bench.
    """
    limits = httpx.Limits(max_connections=connections)
    ids: list[str] = []
    remaining = total
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one() -> str:
            failure = "no answer"
            for _ in range(RETRIES):
                try:
                    r = await client.post(url, content=body, headers=HEADERS)
                except httpx.TransportError as exc:  # a gateway process restarted under us
                    failure = repr(exc)
                else:
                    if r.status_code == 201:
                        return str(r.json()["jobID"])
                    failure = f"{r.status_code} {r.text}"
                    if r.status_code not in (429, 503):
                        break
                await asyncio.sleep(0.5)
            raise RuntimeError(f"submit failed: {failure}")

        async def loop() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                ids.append(await one())

        await asyncio.gather(*(loop() for _ in range(connections)))
    return ids


class Flood:
    """Submit about ``total`` jobs as fast as the server takes them, in the background.

    With wrk each of its 2 threads stops after ``total / 2`` answers (requests in flight then
    may still become jobs: count the jobs on the server side); without wrk an httpx client
    submits exactly ``total``.
    """

    def __init__(self, url: str, total: int, connections: int = 32) -> None:
        self.url = url
        self.total = total
        self.connections = connections
        self._wrk: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[list[str]] | None = None
        self._script: Path | None = None
        self.tool = "wrk" if have_wrk() else "httpx"

    async def __aenter__(self) -> Flood:
        if have_wrk():
            self._script = wrk_script("POST", BODY, stop_after=-(-self.total // 2))
            # wrk idles after its threads stop, until -d ends: __aexit__ ends it.
            self._wrk = await asyncio.create_subprocess_exec(
                "wrk",
                "-t2",
                f"-c{self.connections}",
                "-d600s",
                "-s",
                str(self._script),
                self.url,
                stdout=asyncio.subprocess.DEVNULL,
            )
        else:
            self._task = asyncio.create_task(
                submit_count(self.url, self.total, BODY, self.connections)
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._wrk is not None:
            if self._wrk.returncode is None:
                self._wrk.terminate()
            await self._wrk.wait()
        if self._task is not None:
            if not self._task.done():
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._script is not None:
            self._script.unlink()


async def wait_latency(url: str, count: int, warmup: int = 20) -> tuple[list[float], str]:
    """``count`` sequential no-op jobs submitted with ``Prefer: wait=10`` by one client:
    milliseconds from sending the request to the answer holding the finished job, and the
    last job's id. The first answers (workers still starting, ``warmup`` more) are not
    counted, nor (up to ``RETRIES``) requests answered 503, which are sent again."""
    samples: list[float] = []
    headers = {**HEADERS, "Prefer": "wait=10"}
    deadline = time.monotonic() + 60
    job = ""
    async with httpx.AsyncClient(timeout=30) as client:
        while True:  # until the workers answer
            r = await client.post(url, content=BODY, headers=headers)
            if r.status_code == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no job finished within 60 s: {r.status_code} {r.text}")
        refused = 0
        while len(samples) < count:
            start = time.perf_counter()
            r = await client.post(url, content=BODY, headers=headers)
            elapsed = time.perf_counter() - start
            if r.status_code == 503 and refused < RETRIES:
                refused += 1  # the broker's connection was closed under the gateway: again
                await asyncio.sleep(0.5)
                continue
            job = _finished_job(r)
            if warmup:
                warmup -= 1
            else:
                samples.append(elapsed * 1000)
    return samples, job


# The wrk script of :func:`wrk_latency`: one request after another, the run's p50 and p99
# printed in microseconds; waited, with the answers that do not hold a finished job (ours:
# 200 naming the job at Location; the baseline: 200 with the status "successful") counted.
_LATENCY_SCRIPT = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
{prefer}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
unfinished = 0
{check}
function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do bad = bad + thread:get("unfinished") end
  io.write(string.format("latency %d %d %d %d\\n", latency:percentile(50),
    latency:percentile(99), summary.requests, bad))
end
"""
_FINISHED_CHECK = """
function response(status, headers, body)
  local named = headers["location"] or headers["Location"]
  if status ~= 200 or not (named or string.find(body, '"successful"', 1, true)) then
    unfinished = unfinished + 1
  end
end
"""


@dataclass(frozen=True)
class Latency:
    """What :func:`wrk_latency` measured: p50 and p99 in ms, the answers counted, and those
    that did not hold a finished job."""

    p50: float
    p99: float
    answers: int
    unfinished: int


def wrk_latency(
    url: str, seconds: float, *, waited: bool = True, idle_ms: float = 0
) -> Latency | None:
    """Sequential requests on one wrk connection for ``seconds``: waited no-op submissions
    (``waited``: with ``Prefer: wait=10``, each answer checked for a finished job), each sent
    once the last is answered, or ``idle_ms`` after; ``None`` without wrk.

    A client's own time is part of every latency it measures: wrk, a C client, adds the
    least. An httpx client's POST to a trivial app takes about 0.8 ms on this kind of
    machine, wrk's 0.1 ms.
    """
    if not have_wrk():
        return None
    text = _LATENCY_SCRIPT.format(
        body=BODY.decode(),
        token=TOKEN,
        prefer='wrk.headers["Prefer"] = "wait=10"' if waited else "",
        check=_FINISHED_CHECK if waited else "",
    )
    if idle_ms:
        text += f"function delay() return {idle_ms:g} end\n"
    script = Path(tempfile.mkstemp(prefix="sg-bench-", suffix=".lua")[1])
    script.write_text(text)
    try:
        out = subprocess.run(
            # wrk takes whole seconds
            ["wrk", "-t1", "-c1", f"-d{max(1, round(seconds))}s", "-s", str(script), url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        script.unlink()
    found = re.search(r"^latency (\d+) (\d+) (\d+) (\d+)$", out, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"wrk said:\n{out}")
    p50, p99, answers, unfinished = (int(n) for n in found.groups())
    return Latency(p50 / 1000, p99 / 1000, answers, unfinished)


def record_latency(phase: Phase, measured: Latency | None, floor: float | None = None) -> None:
    """wrk's latency rows (``p50-wrk``, ``p99-wrk``), their note the answers counted, those
    that did not hold a finished job, and the p50 against ``floor``."""
    if measured is None:
        return
    phase.values["p50-wrk"] = measured.p50
    phase.values["p99-wrk"] = measured.p99
    parts = [f"{measured.answers:,} jobs"]
    if measured.unfinished:
        parts.append(f"{measured.unfinished:,} failed")
    if floor:
        parts.append(f"{measured.p50 / floor:.2f} × the floor")
    phase.notes["p50-wrk"] = ", ".join(parts)


def _finished_job(r: httpx.Response) -> str:
    """The id of the job a waited submission finished. Ours answers a synchronous execution
    with the job's results (200) and names the job at ``Location``; the baseline answers
    with the job's status. A job still running or failed answers otherwise."""
    location = r.headers.get("location")
    if r.status_code == 200 and location is not None:
        return str(location.rstrip("/").rsplit("/", 1)[-1])
    if r.status_code == 200 and r.json().get("status") == "successful":
        return str(r.json()["jobID"])
    raise RuntimeError(f"a no-op job did not finish: {r.status_code} {r.text}")
