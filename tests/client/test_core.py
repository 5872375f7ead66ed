"""The client's pieces that need no gateway: back-off, Retry-After, errors from bodies that
are not problem documents, and links that point elsewhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from sgw_client import (
    ApiError,
    Client,
    RetryPolicy,
    ServiceUnavailable,
    UnexpectedResponse,
    WorkerInfo,
)
from sgw_client._core import error_of, retry_after


def test_back_off_doubles_up_to_its_cap_and_honours_retry_after_within_it() -> None:
    policy = RetryPolicy(attempts=10, backoff=0.5, max_backoff=4.0)
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        pauses = [policy.pause(failures) for _ in range(200)]
        assert all(ceiling / 2 <= p <= ceiling for p in pauses)
        assert len(set(pauses)) > 1  # jittered
    assert policy.pause(1, retry_after=3.0) == 3.0
    assert policy.pause(1, retry_after=3600.0) == 4.0
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


def test_retry_after_reads_seconds_and_dates() -> None:
    def answer(value: str) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": value})

    assert retry_after(answer("5")) == 5.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (retry_after(answer(later)) or 0) <= 30
    assert retry_after(answer("soon")) is None
    assert retry_after(httpx.Response(503)) is None


def test_an_answer_that_is_not_a_problem_document_still_raises_by_its_status() -> None:
    request = httpx.Request("GET", "http://gw/jobs")
    page = httpx.Response(503, text="<html>upstream down</html>", request=request)
    error = error_of(page)
    assert isinstance(error, ServiceUnavailable)
    assert "upstream down" in error.detail
    odd = error_of(httpx.Response(418, json={"status": "not a number"}, request=request))
    assert type(odd) is ApiError
    assert odd.status == 418


def test_next_links_are_followed_on_the_clients_own_gateway_only() -> None:
    seen: list[httpx.URL] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        job = {
            "jobID": "6f1c2b5e-0000-4000-8000-000000000001",
            "processID": "echo",
            "status": "accepted",
            "created": "2026-11-30T00:00:00Z",
            "updated": "2026-11-30T00:00:00Z",
        }
        if request.url.params.get("offset"):
            return httpx.Response(200, json={"jobs": [], "links": []})
        link = {"rel": "next", "href": "http://elsewhere.example/jobs?limit=1&offset=1"}
        return httpx.Response(200, json={"jobs": [job], "links": [link]})

    with Client("http://gw.test", "secret", transport=httpx.MockTransport(gateway)) as client:
        assert len(list(client.jobs(page_size=1))) == 1
    assert [(u.host, u.params.get("offset")) for u in seen] == [("gw.test", None), ("gw.test", "1")]


def test_a_success_that_is_not_a_job_is_an_unexpected_response() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="<html></html>"))
    with Client("http://gw.test", transport=transport) as client, pytest.raises(UnexpectedResponse):
        client.status("6f1c2b5e-0000-4000-8000-000000000001")


def test_a_workers_load_is_its_busy_count_else_the_jobs_it_lists() -> None:
    fields = {"id": "w", "service": "echo", "host": "h", "version": "1", "concurrency": 4}
    job = "5d0c4e7e-8f0c-4a51-9d55-2b3f5f0f6c11"
    assert WorkerInfo.model_validate({**fields, "busy": 3, "running": [job]}).load == 3
    assert WorkerInfo.model_validate({**fields, "running": [job]}).load == 1  # an older gateway
