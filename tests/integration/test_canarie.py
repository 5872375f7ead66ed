"""The CANARIE monitoring API: public, HTML by default, JSON on request, HEAD, 503."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from examples.echo import worker as echo_worker
from gateway.store import JobRecord, SQLiteStore, _sqlite_executor
from gateway.store._sqlite_executor import QUIET
from tests.conftest import Gateway
from tests.support import eventually, submit

pytestmark = pytest.mark.integration
JSON = {"Accept": "application/json"}


@pytest.fixture
async def public(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no token: the monitoring routes need none."""
    async with httpx.AsyncClient(transport=gateway.transport, base_url="http://gw.test") as client:
        yield client


async def test_service_info_is_html_by_default_and_json_on_request(
    public: httpx.AsyncClient,
) -> None:
    for path in ("/echo/service/info", "/echo/info"):
        html = await public.get(path)
        assert html.status_code == 200
        assert html.headers["content-type"].startswith("text/html")
        assert "Echo service" in html.text
        info = (await public.get(path, headers=JSON)).json()
        assert info["name"] == "Echo service"
        assert info["version"] == "1.0.0"
        assert info["tags"] == ["test", "echo"]
        assert info["institution"] == "CRIM"
        assert info["activeWorkers"] == 0
        assert set(info) >= {"synopsis", "releaseTime", "researchSubject", "supportEmail"}


async def test_active_workers_come_from_heartbeats(
    public: httpx.AsyncClient, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    run_worker(echo_worker)

    async def counted() -> bool:
        info = (await public.get("/echo/service/info", headers=JSON)).json()
        return bool(info["activeWorkers"] == 1)

    await eventually(counted, what="the worker's heartbeat to count")


async def test_stats_count_submissions(gateway: Gateway, public: httpx.AsyncClient) -> None:
    empty = (await public.get("/echo/service/stats", headers=JSON)).json()
    assert empty["invocations"] == 0
    for _ in range(3):
        await submit(gateway.client, "echo", {})
    await submit(gateway.client, "crunch", {})
    stats = (await public.get("/echo/stats", headers=JSON)).json()
    assert stats["invocations"] == 3
    assert stats["lastReset"].endswith("Z")
    platform = (await public.get("/platform/stats", headers=JSON)).json()
    assert platform["invocations"] == 4
    assert (await public.get("/service/stats", headers=JSON)).json() == platform


async def test_stats_count_each_submission_once_alone_or_among_many(
    gateway: Gateway, public: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone, a submission is counted in its insert's commit; in a flood, by the batched
    tally."""
    store = gateway.runtime.store
    assert isinstance(store, SQLiteStore)
    counted: list[bool] = []
    insert = store.insert

    async def noted(record: JobRecord, *, counter: str | None = None) -> bool:
        counted.append(await insert(record, counter=counter))
        return counted[-1]

    monkeypatch.setattr(store, "insert", noted)
    executor = store._executor

    async def quiet() -> bool:  # nothing in flight, no write for QUIET seconds
        flusher = executor._flusher
        idle = flusher is None or flusher.done()
        return idle and _sqlite_executor._clock() - executor._last_writes[1] >= QUIET

    for _ in range(2):
        await eventually(quiet, what="a quiet store")
        await submit(gateway.client, "echo", {})
    # A flood: every write within QUIET seconds of the last, whatever the machine's pace.
    monkeypatch.setattr(_sqlite_executor, "_clock", lambda: 0.0)
    answers = await asyncio.gather(*(submit(gateway.client, "echo", {}) for _ in range(40)))
    assert {r.status_code for r in answers} == {201}
    stats = (await public.get("/echo/stats", headers=JSON)).json()
    assert stats["invocations"] == 42
    assert counted == [True, True] + [False] * 40


async def test_stats_answer_503_when_the_broker_is_down(
    gateway: Gateway, public: httpx.AsyncClient
) -> None:
    await gateway.runtime.broker.close()
    for path in ("/echo/service/stats", "/platform/stats"):
        response = await public.get(path, headers=JSON)
        assert response.status_code == 503


async def test_head_answers_every_route(public: httpx.AsyncClient) -> None:
    for path in (
        "/echo/service/info",
        "/echo/service/stats",
        "/echo/service/releasenotes",
        "/platform/info",
        "/service/stats",
    ):
        response = await public.head(path)
        assert response.status_code == 200, path
        assert response.content == b""


async def test_pages_follow_the_catalogue(public: httpx.AsyncClient) -> None:
    doc = await public.get("/echo/service/doc")
    assert doc.status_code == 302
    assert doc.headers["location"] == "https://example.org/echo/doc"
    notes = await public.get("/echo/releasenotes")
    assert (notes.status_code, notes.text) == (200, "<p>1.0.0: first release</p>")
    assert (await public.get("/echo/service/provenance")).status_code == 204
    assert (await public.get("/echo/service/source")).status_code == 204  # not public
    support = await public.get("/echo/service/support")  # not configured: generated
    assert support.status_code == 200
    assert support.headers["content-type"].startswith("text/html")
    for path in ("/echo/service/nonsense", "/echo/nonsense", "/platform/nonsense"):
        missing = await public.get(path)  # a path naming no page: as any unknown path
        assert (missing.status_code, missing.json()["code"]) == (404, "not-found")
    for path in ("/nosuch/service/info", "/foo/bar", "/ui/nope"):
        assert (await public.get(path)).status_code == 404
    assert (await public.head("/nosuch/doc")).status_code == 404


async def test_platform_info(public: httpx.AsyncClient) -> None:
    info = (await public.get("/platform/info", headers=JSON)).json()
    assert info["name"] == "Service Gateway"
    assert "echo" in {s["id"] for s in info["services"]}
    assert (await public.get("/service/info")).headers["content-type"].startswith("text/html")
