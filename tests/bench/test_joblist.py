"""The job-list row: a store filled with SQL reads back through the gateway's own store, and
the deep page is reached by offset today and by following cursor links tomorrow."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx

from bench.joblist import PAGE, WALK, deep_page_url, fill, with_query
from gateway.store import JobQuery, JobStatus, SQLiteStore


async def test_the_filled_store_reads_back_as_valid_jobs_newest_first(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    await asyncio.to_thread(fill, db, 2500, owner="alice")  # fill runs its own event loop
    store = SQLiteStore(db)
    await store.open()
    try:
        first = await store.page_jobs(JobQuery(owner="alice", limit=1000))
        second = await store.page_jobs(
            JobQuery(owner="alice", limit=1000, after=(first[-1].created, first[-1].id))
        )
        deep = await store.page_jobs(
            JobQuery(owner="alice", limit=1000, after=(second[-1].created, second[-1].id))
        )
        assert await store.page_jobs(JobQuery(owner="bob")) == []
        by_id = await store.get(first[0].id)
    finally:
        await store.close()
    assert len(first) == 1000
    assert len(deep) == 500
    assert by_id == first[0]
    assert all(j.status is JobStatus.SUCCESSFUL and j.id.version == 7 for j in first)
    # as the gateway makes them: the id begins with its job's creation millisecond
    assert all(j.id.int >> 80 == round(j.created.timestamp() * 1000) for j in first + deep)
    created = [j.created for j in first + deep]
    assert created == sorted(created, reverse=True)
    assert len(set(created)) == len(created)
    assert len({j.id for j in first + deep}) == 1500


def test_an_offset_link_is_rewritten_to_the_depth() -> None:
    first = {"links": [{"rel": "next", "href": "http://gw/jobs?limit=100&offset=100"}]}
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500))) as client:
        url = deep_page_url(client, first, 900_000)
    assert dict(parse_qsl(urlsplit(url).query)) == {"limit": "100", "offset": "900000"}


def test_cursor_links_are_followed_to_the_depth() -> None:
    """An API that pages by opaque cursor: the walk asks for the largest pages and returns the
    page at the depth, at the row's page size."""
    asked: list[dict[str, str]] = []

    def server(request: httpx.Request) -> httpx.Response:
        query = dict(parse_qsl(request.url.query.decode()))
        asked.append(query)
        position = int(query["cursor"]) + int(query["limit"])
        href = with_query(f"http://gw/jobs?cursor={position}", limit=int(query["limit"]))
        body = {"jobs": [], "links": [{"rel": "next", "href": href}]}
        return httpx.Response(200, content=json.dumps(body))

    first = {"links": [{"rel": "next", "href": f"http://gw/jobs?limit={PAGE}&cursor={PAGE}"}]}
    with httpx.Client(transport=httpx.MockTransport(server)) as client:
        url = deep_page_url(client, first, 5_100)
    assert all(q["limit"] == str(WALK) for q in asked)
    assert dict(parse_qsl(urlsplit(url).query)) == {"cursor": "5100", "limit": str(PAGE)}
