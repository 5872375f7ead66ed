"""HEAD on every GET resource of the API answers as the GET would, without the body: link
checkers, monitors and caches send it, and the CANARIE routes' catch-all answered 404 for the
OGC resources (``HEAD /processes/echo`` read as service ``processes``, page ``echo``)."""

from __future__ import annotations

import re

import pytest

from examples.echo import worker as echo_worker
from tests.conftest import Gateway
from tests.support import submit, wait_status

pytestmark = pytest.mark.integration

# A stream, whose GET never ends; the old cancel, a GET that is not safe (405, docs/legacy.md).
NOT_AS_GET = {"/jobs/{jobID}/events", "/{service}/cancel"}
# Headers that differ between two answers to the same request.
VARYING = {"date", "content-length", "etag", "x-request-id", "content-security-policy"}


async def test_head_answers_each_get_resource_as_its_get(
    gateway: Gateway, run_worker: object
) -> None:
    run_worker(echo_worker)  # type: ignore[operator]
    async with gateway.as_user("alice", "admin") as alice:
        job = (await submit(alice, "echo", {"text": "hi"})).json()["jobID"]
        await wait_status(alice, job, "successful")
        document = (await alice.get("/openapi.json")).json()
        paths = [p for p, item in document["paths"].items() if "get" in item]
        assert "/processes/{processID}" in paths
        for template in paths:
            if template in NOT_AS_GET:
                continue  # both answer 405 (below)
            path = template.replace("{processID}", "echo").replace("{jobID}", job)
            path = re.sub(r"\{[^}]+\}", "echo", path)
            got = await alice.get(path)
            head = await alice.head(path)
            assert head.status_code == got.status_code, path
            assert head.content == b"", path
            assert head.headers.get("content-type") == got.headers.get("content-type"), path
            shown = {k: v for k, v in head.headers.items() if k not in VARYING}
            assert shown == {k: v for k, v in got.headers.items() if k not in VARYING}, path
        for path in (f"/jobs/{job}/events", f"/echo/cancel?uuid={job}"):
            refused = await alice.head(path)
            assert refused.status_code == 405, path
            assert "GET" in refused.headers["allow"], path
