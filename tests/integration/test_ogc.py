"""OGC API – Processes 1.0: every document checked against the standard's schemas
(tests/ogc.py), execution modes, results forms, the job list and dismiss, on the real broker."""

from __future__ import annotations

import asyncio
import base64
import email
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate as validate_openapi

from tests import workers
from tests.conftest import Gateway
from tests.ogc import OGC_EXCEPTION, check
from tests.support import wait_status
from worker_sdk import JobContext, Worker
from worker_sdk.wire.catalogue import Catalogue, parse_catalogue

pytestmark = pytest.mark.integration

RunWorker = Callable[..., asyncio.Task[None]]
CONF = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

CATALOGUE = """
services:
  echo:
    title: Echo
    description: Says it back.
    version: "1.0.0"
    sync_execute: true
    inputs:
      type: object
      required: [text]
      $defs:
        word: {type: string, maxLength: 20}
      properties:
        text: {$ref: "#/$defs/word", title: Text, description: What to say.}
        times: {type: [integer, "null"], exclusiveMinimum: 0, examples: [2]}
        mood: {const: calm}
        delay: {type: number, minimum: 0}
    outputs:
      description: The inputs, less delay.
  pair:
    title: Pair
    version: "1.0.0"
    time_limit: 5
    outputs:
      left: {title: Left, schema: {type: array, items: {type: string}}}
      right: {title: Right, description: The other one., schema: {type: integer}}
  later:
    title: Asynchronous only
    version: "1.0.0"
"""

pair = Worker("pair", version="1.0.0")


@pair.handler
async def pair_handler(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, Any]:
    return {"left": inputs.get("left", ["l"]), "right": inputs.get("right", 1)}


@pytest.fixture
def catalogue() -> Catalogue:
    return parse_catalogue(CATALOGUE, source="tests")


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    check("exception.yaml", body)
    assert body["code"] == code
    return body


async def execute(
    client: httpx.AsyncClient, process: str, body: dict[str, Any], prefer: str | None = None
) -> httpx.Response:
    headers = {"Prefer": prefer} if prefer else {}
    return await client.post(f"/processes/{process}/execution", json=body, headers=headers)


# A cursor of the list's own shape whose time is 0001-01-01T00:00:00+14:00, no UTC time.
_YEAR_ONE_CURSOR = (
    "WyIwMDAxLTAxLTAxVDAwOjAwOjAwKzE0OjAwIiwgIjAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMCJd"
)


def _cursor(*parts: object) -> str:
    """A cursor as a client may forge one: any JSON, base64url without padding."""
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


class TestDiscovery:
    async def test_landing_page_and_conformance(self, gateway: Gateway) -> None:
        landing = await gateway.client.get("/")
        check("landingPage.yaml", landing.json())
        rels = {link["rel"]: link for link in landing.json()["links"]}
        assert rels["service-desc"]["type"] == "application/vnd.oai.openapi+json;version=3.0"
        for rel in ("conformance", "processes", "job-list"):
            assert f"http://www.opengis.net/def/rel/ogc/1.0/{rel}" in rels
        conformance = (await gateway.client.get("/conformance")).json()
        check("confClasses.yaml", conformance)
        assert sorted(conformance["conformsTo"]) == sorted(
            CONF + c
            for c in ("core", "ogc-process-description", "json", "oas30", "job-list", "dismiss")
        )

    async def test_the_api_definition_is_openapi_30_and_names_its_operations(
        self, gateway: Gateway
    ) -> None:
        api = await gateway.client.get("/api")
        assert api.headers["content-type"] == "application/vnd.oai.openapi+json;version=3.0"
        document = api.json()
        assert document == (await gateway.client.get("/openapi.json")).json()
        assert document["openapi"] == "3.0.3"
        validate_openapi(document)  # raises on anything OpenAPI 3.0 does not allow
        operations = [
            op for item in document["paths"].values() for op in item.values() if "responses" in op
        ]
        ids = [op["operationId"] for op in operations]
        assert len(ids) == len(set(ids))
        assert {
            "getLandingPage",
            "getConformance",
            "getAPI",
            "getProcesses",
            "getProcessDescription",
            "execute",
            "getJobs",
            "getStatus",
            "getResult",
            "dismiss",
            "legacyProcess",
            "legacyStatus",
        } <= set(ids)
        assert all(re.fullmatch(r"[a-z][A-Za-z]+", i) for i in ids)
        # Each process's execute body is its own schema, inputs included.
        body = document["paths"]["/processes/{processID}/execution"]["post"]["requestBody"]
        refs = {ref["$ref"] for ref in body["content"]["application/json"]["schema"]["anyOf"]}
        assert refs == {f"#/components/schemas/Execute_{p}" for p in ("echo", "pair", "later")}
        echo = document["components"]["schemas"]["Execute_echo"]["properties"]["inputs"]
        assert echo["required"] == ["text"]
        assert echo["properties"]["text"]["maxLength"] == 20  # $defs inlined
        assert echo["properties"]["times"] == {
            "type": "integer",
            "nullable": True,
            "minimum": 0,
            "exclusiveMinimum": True,
            "example": 2,
        }
        # The old routes declare their security: status optional, the others a bearer.
        status = document["paths"]["/{service}/status"]["get"]
        assert status["security"] == [{}, {"bearer": []}]
        for path in ("/{service}/process", "/{service}/annotate"):
            assert document["paths"][path]["post"]["security"] == [{"bearer": []}]

    async def test_process_list_and_descriptions_follow_the_standard(
        self, gateway: Gateway
    ) -> None:
        listing = (await gateway.client.get("/processes")).json()
        check("processList.yaml", listing)
        options = {p["id"]: p["jobControlOptions"] for p in listing["processes"]}
        assert options == {
            "echo": ["sync-execute", "async-execute", "dismiss"],  # its sync_execute flag
            "pair": ["sync-execute", "async-execute", "dismiss"],  # time_limit <= SG_MAX_WAIT
            "later": ["async-execute", "dismiss"],  # no time limit: never held open
        }
        for process in ("echo", "pair", "later"):
            description = (await gateway.client.get(f"/processes/{process}")).json()
            check("process.yaml", description)
        echo = (await gateway.client.get("/processes/echo")).json()
        assert echo["inputs"]["text"] == {
            "title": "Text",
            "description": "What to say.",
            "schema": {
                "type": "string",
                "maxLength": 20,
                "title": "Text",
                "description": "What to say.",
            },
            "minOccurs": 1,
            "maxOccurs": 1,
        }
        assert echo["inputs"]["mood"]["schema"] == {"enum": ["calm"]}
        assert echo["inputs"]["delay"]["minOccurs"] == 0
        assert echo["outputs"] == {
            "result": {"title": "Echo", "description": "The inputs, less delay.", "schema": {}}
        }
        pair_outputs = (await gateway.client.get("/processes/pair")).json()["outputs"]
        assert pair_outputs["right"] == {
            "title": "Right",
            "description": "The other one.",
            "schema": {"type": "integer"},
        }

    async def test_the_process_list_pages(self, gateway: Gateway) -> None:
        first = (await gateway.client.get("/processes", params={"limit": 2})).json()
        check("processList.yaml", first)
        assert [p["id"] for p in first["processes"]] == ["echo", "later"]
        (following,) = [link["href"] for link in first["links"] if link["rel"] == "next"]
        second = (await gateway.client.get(following)).json()
        assert [p["id"] for p in second["processes"]] == ["pair"]
        assert not [link for link in second["links"] if link["rel"] == "next"]

    async def test_unknown_process_and_job_are_ogc_exceptions(self, gateway: Gateway) -> None:
        client = gateway.client
        for response in (
            await client.get("/processes/nope"),
            await execute(client, "nope", {"inputs": {}}),
        ):
            body = _problem(response, 404, "no-such-process")
            assert body["type"] == OGC_EXCEPTION + "no-such-process"
        for path in (f"/jobs/{uuid.uuid4()}", f"/jobs/{uuid.uuid4()}/results"):
            body = _problem(await client.get(path), 404, "no-such-job")
            assert body["type"] == OGC_EXCEPTION + "no-such-job"


class TestExecution:
    async def test_sync_execution_answers_the_raw_result_with_the_jobs_location(
        self, gateway: Gateway, run_worker: RunWorker
    ) -> None:
        run_worker(workers.echo_any)
        response = await execute(gateway.client, "echo", {"inputs": {"text": "hi"}})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"text": "hi"}
        location = response.headers["location"]
        assert response.headers["link"] == f'<{location}>; rel="monitor"'
        assert "preference-applied" not in response.headers
        status = (await gateway.client.get(location)).json()
        check("statusInfo.yaml", status)
        assert status["status"] == "successful"

    async def test_sync_execution_as_a_results_document(
        self, gateway: Gateway, run_worker: RunWorker
    ) -> None:
        run_worker(workers.echo_any)
        body = {"inputs": {"text": "doc"}, "response": "document"}
        response = await execute(gateway.client, "echo", body)
        assert response.status_code == 200, response.text
        check("results.yaml", response.json())
        assert response.json() == {
            "result": {"value": {"text": "doc"}, "mediaType": "application/json"}
        }

    async def test_several_outputs_raw_are_multipart_related(
        self, gateway: Gateway, run_worker: RunWorker
    ) -> None:
        run_worker(pair)
        response = await execute(gateway.client, "pair", {"inputs": {"left": ["a"], "right": 7}})
        assert response.status_code == 200, response.text
        kind = response.headers["content-type"]
        assert kind.startswith("multipart/related")
        message = email.message_from_bytes(
            f"Content-Type: {kind}\r\n\r\n".encode() + response.content
        )
        parts = {p["Content-ID"]: p.get_payload() for p in message.get_payload()}
        assert parts == {"<left>": '["a"]', "<right>": "7"}
        one = await execute(
            gateway.client, "pair", {"inputs": {"right": 3}, "outputs": {"right": {}}}
        )
        assert one.json() == 3
        document = await execute(
            gateway.client,
            "pair",
            {"inputs": {"left": ["b"]}, "response": "document", "outputs": {"left": {}}},
        )
        # (1.0's results.yaml admits no string or integer value: its oneOf matches them twice.)
        check("results.yaml", document.json())
        assert document.json() == {"left": {"value": ["b"], "mediaType": "application/json"}}

    async def test_respond_async_is_201_with_status_and_results_follow_the_request(
        self, gateway: Gateway, run_worker: RunWorker
    ) -> None:
        client = gateway.client
        body = {"inputs": {"text": "later"}, "response": "document"}
        response = await execute(client, "echo", body, prefer="respond-async")
        assert response.status_code == 201, response.text
        assert response.headers["preference-applied"] == "respond-async"
        status = response.json()
        check("statusInfo.yaml", status)
        assert response.headers["location"].endswith(f"/jobs/{status['jobID']}")
        not_ready = await client.get(f"/jobs/{status['jobID']}/results")
        assert _problem(not_ready, 404, "result-not-ready")["type"] == (
            OGC_EXCEPTION + "result-not-ready"
        )
        run_worker(workers.echo_any)
        await wait_status(client, status["jobID"], "successful")
        results = (await client.get(f"/jobs/{status['jobID']}/results")).json()
        check("results.yaml", results)
        assert results["result"]["value"] == {"text": "later"}

    async def test_a_process_without_sync_execute_answers_201_unless_asked_to_wait(
        self, gateway: Gateway
    ) -> None:
        response = await execute(gateway.client, "later", {"inputs": {}})
        assert response.status_code == 201
        check("statusInfo.yaml", response.json())
        waited = await execute(gateway.client, "later", {"inputs": {}}, prefer="wait=1")
        assert waited.status_code == 201  # no worker: the wait ends first
        assert waited.headers["preference-applied"] == "wait=1"

    async def test_a_failed_sync_job_answers_its_exception(
        self, gateway: Gateway, run_worker: RunWorker
    ) -> None:
        run_worker(workers.echo_any)
        response = await execute(gateway.client, "echo", {"inputs": {"text": "x", "fail": "no"}})
        body = _problem(response, 422, "job-failed")
        assert body["job_error"]["message"] == "no"
        assert response.headers["link"].endswith('rel="monitor"')

    @pytest.mark.parametrize(
        ("body", "status", "code"),
        [
            ({"inputs": {"text": "x"}, "outputs": {"nope": {}}}, 400, "no-such-output"),
            (
                {"inputs": {"text": "x"}, "outputs": {"result": {"transmissionMode": "reference"}}},
                400,
                "invalid-parameter-value",
            ),
            (
                {"inputs": {"text": "x"}, "outputs": {"result": {"format": {"mediaType": "a/b"}}}},
                400,
                "invalid-parameter-value",
            ),
            ({"inputs": {"text": "x"}, "response": "both"}, 400, "invalid-request"),
            ({"inputs": {"text": "x"}, "mode": "sync"}, 400, "invalid-request"),
            (
                {"inputs": {"text": "x"}, "subscriber": {"successUri": "https://x.org/"}},
                400,
                "invalid-request",
            ),
        ],
    )
    async def test_what_cannot_be_honoured_is_refused_before_anything_is_queued(
        self, gateway: Gateway, body: dict[str, Any], status: int, code: str
    ) -> None:
        problem = _problem(await execute(gateway.client, "echo", body), status, code)
        if code == "no-such-output":
            assert problem["type"] == OGC_EXCEPTION + "no-such-output"
        assert await gateway.runtime.store.counters("submissions:") == {}


class TestJobs:
    async def _submit(self, gateway: Gateway, process: str, n: int) -> list[str]:
        ids = []
        for i in range(n):
            response = await execute(
                gateway.client, process, {"inputs": {"text": str(i)}}, prefer="respond-async"
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["jobID"])
        return ids

    async def test_the_job_list_pages_by_cursor_to_the_end(self, gateway: Gateway) -> None:
        submitted = await self._submit(gateway, "echo", 7)
        async with gateway.as_user("bob") as bob:
            await execute(bob, "echo", {"inputs": {"text": "bob's"}}, prefer="respond-async")
        seen: list[str] = []
        url: str | None = "/jobs?limit=3"
        pages = 0
        while url is not None:
            page = (await gateway.client.get(url)).json()
            check("jobList.yaml", page)
            assert all(job["processID"] for job in page["jobs"])  # job-list makes it required
            rels = {link["rel"] for link in page["links"]}
            assert {"self", "alternate"} <= rels
            seen += [job["jobID"] for job in page["jobs"]]
            url = next((x["href"] for x in page["links"] if x["rel"] == "next"), None)
            pages += 1
        assert seen == list(reversed(submitted))  # newest first, each once, only alice's
        assert pages == 3

    async def test_the_job_list_filters(self, gateway: Gateway, run_worker: RunWorker) -> None:
        client = gateway.client
        before = datetime.now(UTC) - timedelta(seconds=1)
        echo_ids = await self._submit(gateway, "echo", 2)
        later = (await execute(client, "later", {"inputs": {}})).json()["jobID"]
        run_worker(workers.echo_any)
        for job_id in echo_ids:
            await wait_status(client, job_id, "successful")

        async def ids(**params: Any) -> list[str]:
            page = (await client.get("/jobs", params=params)).json()
            check("jobList.yaml", page)
            return [job["jobID"] for job in page["jobs"]]

        assert await ids(processID="later") == [later]
        assert await ids(processID="echo,later") == [later, *reversed(echo_ids)]
        assert await ids(status="successful") == list(reversed(echo_ids))
        assert await ids(status=["accepted", "running"]) == [later]
        assert await ids(type="process", processID="later") == [later]
        assert await ids(type="wps") == []
        after = datetime.now(UTC).isoformat()
        assert set(await ids(datetime=f"{before.isoformat()}/..")) == {*echo_ids, later}
        assert await ids(datetime=f"../{before.isoformat()}") == []
        assert await ids(datetime=f"{after}/..") == []
        lower = before.astimezone(UTC).strftime("%Y-%m-%dt%H:%M:%S.%fz")  # RFC 3339 §5.6
        assert set(await ids(datetime=f"{lower}/..")) == {*echo_ids, later}
        assert set(await ids(minDuration=0)) == set(echo_ids)  # never a job not started
        assert await ids(maxDuration=0, minDuration=3600) == []

    @pytest.mark.parametrize(
        "query",
        [
            "cursor=bm90LWEtY3Vyc29y",
            "cursor=%%%",
            "cursor=" + "A" * 300,
            "status=finished",
            "datetime=yesterday",
            "datetime=2026-11-30T12:00:00",  # no offset: not RFC 3339
            "datetime=../..",
            "datetime=2026-12-01T00:00:00Z/2026-11-30T00:00:00Z",
            "limit=0",
            "limit=100000",
            "minDuration=-1",
            "minDuration=99999999999999999999999",
            "maxDuration=9223372036854775808",
            "datetime=0001-01-01T00:00:00%2B14:00",  # no UTC time: before year 1
            "datetime=9999-12-31T23:59:59-14:00/..",
            "cursor=" + _YEAR_ONE_CURSOR,  # a cursor of that time
            *(
                "cursor=" + _cursor("2026-01-01T00:00:00+00:00", job)
                for job in (5, 1.5, True, None, [], {})
            ),
            "cursor=" + _cursor(20260101, "00000000-0000-0000-0000-000000000000"),
            "f=xml",
        ],
    )
    async def test_a_malformed_filter_or_cursor_is_an_ogc_400(
        self, gateway: Gateway, query: str
    ) -> None:
        body = _problem(
            await gateway.client.get(f"/jobs?{query}"), 400, "invalid-query-parameter-value"
        )
        assert body["type"] == OGC_EXCEPTION + "invalid-query-parameter-value"

    async def test_dismiss_answers_dismissed_for_a_queued_and_a_finished_job(
        self, gateway: Gateway, run_worker: RunWorker
    ) -> None:
        client = gateway.client
        (queued,) = await self._submit(gateway, "later", 1)
        dismissed = await client.delete(f"/jobs/{queued}")
        assert dismissed.status_code == 200
        check("statusInfo.yaml", dismissed.json())
        assert dismissed.json()["status"] == "dismissed"
        run_worker(workers.echo_any)
        done = await execute(client, "echo", {"inputs": {"text": "x"}})
        finished = done.headers["location"]
        purged = (await client.delete(finished)).json()
        check("statusInfo.yaml", purged)
        assert (purged["status"], purged["outcome"]) == ("dismissed", "successful")
        assert (await client.get(finished)).json()["status"] == "dismissed"
        listed = (await client.get("/jobs", params={"status": "dismissed"})).json()["jobs"]
        assert {job["jobID"] for job in listed} == {queued, finished.rsplit("/", 1)[1]}
        assert (await client.get("/jobs", params={"status": "successful"})).json()["jobs"] == []


class TestHtml:
    @pytest.mark.parametrize("path", ["/", "/processes", "/processes/echo", "/jobs", "/jobs/{job}"])
    async def test_browsers_get_html_and_api_clients_json(
        self, gateway: Gateway, path: str
    ) -> None:
        job = (await execute(gateway.client, "later", {"inputs": {}})).json()["jobID"]
        url = path.format(job=job)
        for headers, params in (({"Accept": BROWSER}, {}), ({}, {"f": "html"})):
            page = await gateway.client.get(url, headers=headers, params=params)
            assert page.status_code == 200, page.text
            assert page.headers["content-type"].startswith("text/html")
            assert page.headers["x-content-type-options"] == "nosniff"
            assert "nonce-" in page.headers["content-security-policy"]
            assert "<a href=" in page.text
        for accept in ("*/*", "application/json", None, "text/html;q=0.5, application/json"):
            headers = {"Accept": accept} if accept else {}
            answer = await gateway.client.get(url, headers=headers)
            assert answer.headers["content-type"] == "application/json", accept
        assert (
            await gateway.client.get(url, params={"f": "json"}, headers={"Accept": BROWSER})
        ).json()
