"""The job list at depth: ``GET /jobs?limit=100`` on the first page and on a deep page of a
store of a million jobs (SQLite), filled directly with SQL in one statement."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import statistics
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from bench.support import HEADERS, OWNER, Phase, Sizes
from gateway.store import SQLiteStore

PAGE = 100
WALK = 1000  # page size while walking to a deep page by cursor (the API's largest)

# One statement: SQLite generates the rows itself (a million in about 20 s of CPU, most of it
# spent in the indexes). Ids are version-7 UUIDs, as the gateway makes them (the creation's
# millisecond, then random bits); the jobs were created a millisecond apart and finished
# successfully; times are written as the store writes them (six fraction digits and Z: text
# order is time order).
_FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count),
r(i, h, ms) AS (SELECT i, lower(hex(randomblob(16))),
                       printf('%012x', CAST(round((:start + i / 1000.0) * 1000) AS INTEGER))
                FROM n)
INSERT INTO jobs (id, service, owner, status, progress, inputs, result, attempt,
                  progress_seq, created, started, updated, finished)
SELECT substr(ms, 1, 8) || '-' || substr(ms, 9, 4) || '-7' || substr(h, 14, 3) || '-'
           || substr('89ab', 1 + (i % 4), 1) || substr(h, 18, 3) || '-' || substr(h, 21, 12),
       'echo', :owner, 'successful', 100, '{}', '{}', 1, 0, t, t, t, t
FROM (SELECT i, h, ms, strftime('%Y-%m-%dT%H:%M:%f', :start + i / 1000.0, 'unixepoch')
                       || '000Z' AS t FROM r)
"""


def fill(db: Path, count: int, owner: str = OWNER) -> None:
    """Create the gateway's schema in ``db`` (through the store itself) and insert ``count``
    finished jobs of ``owner``."""

    async def create() -> None:
        store = SQLiteStore(db)
        await store.open()
        await store.close()

    asyncio.run(create())
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-262144")  # 256 MiB: the indexes fit
        # whole seconds: each job's millisecond is exact, in its id as in its times
        start = int(time.time()) - 86400 - math.ceil(count / 1000)
        connection.execute(_FILL, {"count": count, "owner": owner, "start": start})


def with_query(href: str, **changes: int) -> str:
    """``href`` with these query parameters set (others kept, a cursor too)."""
    parts = urlsplit(href)
    query = dict(parse_qsl(parts.query))
    query.update({k: str(v) for k, v in changes.items()})
    return urlunsplit(parts._replace(query=urlencode(query)))


def next_link(page: dict[str, object]) -> str | None:
    links = page.get("links")
    for link in links if isinstance(links, list) else ():
        if isinstance(link, dict) and link.get("rel") == "next":
            return str(link["href"])
    return None


def deep_page_url(client: httpx.Client, first: dict[str, object], depth: int) -> str:
    """The URL of the page of ``PAGE`` jobs that starts ``depth`` jobs in.

    While ``next`` links page by ``offset`` the URL is written directly; once they carry a
    cursor (no offset), the links are followed ``WALK`` jobs at a time to that depth.
    """
    href = next_link(first)
    if href is None:
        raise RuntimeError("the first page has no next link: the store is too small")
    if "offset" in dict(parse_qsl(urlsplit(href).query)):
        return with_query(href, offset=depth, limit=PAGE)
    seen = PAGE
    href = with_query(href, limit=WALK)
    while seen + WALK <= depth:
        r = client.get(href)
        r.raise_for_status()
        found = next_link(r.json())
        if found is None:
            raise RuntimeError(f"the job list ended after {seen} jobs, before {depth}")
        href, seen = found, seen + WALK
    return with_query(href, limit=PAGE)


def _timed(client: httpx.Client, url: str, repeats: int) -> float:
    """Median milliseconds of ``repeats`` GETs of ``url``, each answering a full page."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        r = client.get(url)
        samples.append((time.perf_counter() - start) * 1000)
        r.raise_for_status()
        if len(r.json()["jobs"]) != PAGE:
            raise RuntimeError(f"{url} answered {len(r.json()['jobs'])} jobs, not {PAGE}")
    return statistics.median(samples)


def measure(sizes: Sizes, base: str) -> Phase:
    """First and deep page times against a gateway serving a store filled by :func:`fill`."""
    phase = Phase()
    headers = {"authorization": HEADERS["authorization"]}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        first_url = f"{base}/jobs?limit={PAGE}"
        r = client.get(first_url)
        r.raise_for_status()
        deep_url = deep_page_url(client, r.json(), sizes.deep_offset)
        phase.values["list-first"] = _timed(client, first_url, sizes.page_repeats * 4)
        phase.values["list-deep"] = _timed(client, deep_url, sizes.page_repeats)
    how = "offset" if "offset=" in deep_url else "cursor"
    phase.notes["list"] = f"{sizes.store_jobs:,} jobs, deep page at {sizes.deep_offset:,} by {how}"
    return phase
