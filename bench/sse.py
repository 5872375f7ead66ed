"""Memory of server-sent event streams: the gateway's RSS growth per open stream.

The client side is plain asyncio streams rather than httpx: ten thousand idle httpx streams
would cost the bench itself hundreds of megabytes and a core to open, on the machine being
measured; a stream here needs one request written and its first event read.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sqlite3

from bench.procfs import rss_bytes
from bench.support import TOKEN, Phase

# Streams being opened at once (the gateway's listen backlog is 2048).
OPENING = 200
# File descriptors the bench keeps for itself besides its streams.
RESERVED_FDS = 500


def raise_fd_limit() -> None:
    """Raise this process's file-descriptor limit to its hard maximum, before the gateway is
    started (it inherits the limit) and before the streams are opened."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def stream_budget(wanted: int) -> int:
    """How many streams this process may open: ``wanted``, or fewer when the file-descriptor
    limit is lower."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(0, min(wanted, soft - RESERVED_FDS))


async def _open(host: str, port: int, path: str) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        writer.close()
        raise RuntimeError(f"{path}: {head.decode(errors='replace').splitlines()[0]}")
    received = b""
    while b"data:" not in received:  # the first event: the stream is fully set up
        chunk = await reader.read(65536)
        if not chunk:
            raise RuntimeError(f"{path}: the stream ended before its first event")
        received += chunk
    return writer


async def hold_streams(
    host: str, port: int, paths: list[str], gateway_pids: list[int]
) -> tuple[int, int]:
    """Open a stream on each path, then read the gateway's RSS; returns (RSS before, RSS with
    every stream open)."""
    before = rss_bytes(gateway_pids)
    slots = asyncio.Semaphore(OPENING)
    writers: list[asyncio.StreamWriter] = []

    async def one(path: str) -> None:
        async with slots:
            writers.append(await asyncio.wait_for(_open(host, port, path), 60))

    try:
        await asyncio.gather(*(one(p) for p in paths))
        await asyncio.sleep(1)  # let the gateway settle (its allocator, pending tasks)
        during = rss_bytes(gateway_pids)
    finally:
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return before, during


def measure(
    wanted: int, host: str, port: int, store: sqlite3.Connection, gateway_pids: list[int]
) -> Phase:
    """RSS growth per stream over as many accepted jobs as ``wanted`` (one stream each)."""
    phase = Phase()
    count = stream_budget(wanted)
    ids = [
        row[0]
        for row in store.execute(
            "SELECT id FROM jobs WHERE status = 'accepted' LIMIT ?", (count,)
        ).fetchall()
    ]
    if len(ids) < count:
        raise RuntimeError(f"only {len(ids)} accepted jobs to follow, {count} wanted")
    before, during = asyncio.run(
        hold_streams(host, port, [f"/jobs/{i}/events" for i in ids], gateway_pids)
    )
    phase.values["sse-streams"] = count
    phase.values["sse-kib"] = (during - before) / count / 1024
    phase.values["sse-rss-mib"] = during / 2**20
    if count < wanted:
        phase.notes["sse"] = f"{count} streams, not {wanted}: file-descriptor limit"
    return phase
