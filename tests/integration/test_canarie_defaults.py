"""CANARIE with zero configuration: a catalogue with no ``canarie`` and no ``platform`` block
answers every route of the CANARIE API, and what it shows is escaped."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.conftest import Gateway
from worker_sdk.wire.catalogue import Catalogue, parse_catalogue

pytestmark = pytest.mark.integration

HOSTILE = '<script>alert("x")</script>'
BARE_CATALOGUE = f"""
services:
  plain:
    title: Plain
    version: "3.1.4"
  hostile:
    title: '{HOSTILE}'
    description: '<img src=x onerror=alert(1)> and {HOSTILE}'
    version: '1.0<script>'
    inputs:
      type: object
      required: ['<b>name</b>']
      properties:
        '<b>name</b>':
          type: string
          description: '</td>{HOSTILE}'
          default: '</textarea>{HOSTILE}'
    outputs:
      description: '{HOSTILE}'
"""
SERVICE_PAGES = ("doc", "releasenotes", "support", "source", "tryme", "licence", "provenance")
PLATFORM_PAGES = (*SERVICE_PAGES, "factsheet")
ACCEPTS: tuple[dict[str, str], ...] = (
    {},
    {"Accept": "*/*"},
    {"Accept": "text/html"},
    {"Accept": "application/json"},
)
CANARIE_TIME = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"


def _info_schema(*, service: bool) -> dict[str, Any]:
    """The ``info`` document as the CANARIE specification lists it: every field a string,
    ``releaseTime`` in its UTC form, ``tags`` a non-empty list of strings; services also have
    ``category``."""
    text = {"type": "string"}
    fields: dict[str, Any] = {
        "name": {"type": "string", "minLength": 1},
        "synopsis": {"type": "string", "minLength": 1},
        "version": {"type": "string", "minLength": 1},
        "institution": {"type": "string", "minLength": 1},
        "releaseTime": {"type": "string", "pattern": CANARIE_TIME},
        "researchSubject": {"type": "string", "minLength": 1},
        "supportEmail": text,
        "tags": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
    }
    if service:
        fields["category"] = {"type": "string", "minLength": 1}
    return {"type": "object", "required": list(fields), "properties": fields}


@pytest.fixture
def catalogue() -> Catalogue:
    return parse_catalogue(BARE_CATALOGUE, source="tests")


@pytest.fixture
async def public(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=gateway.transport, base_url="http://gw.test") as client:
        yield client


def _routes() -> list[tuple[str, str]]:
    """(path, what) for every CANARIE route of the bare catalogue, in every spelling."""
    routes = []
    for prefix in ("/platform", "/service"):
        routes += [(f"{prefix}/{what}", what) for what in ("info", "stats", *PLATFORM_PAGES)]
    for service in ("plain", "hostile"):
        for prefix in (f"/{service}/service", f"/{service}"):
            routes += [(f"{prefix}/{what}", what) for what in ("info", "stats", *SERVICE_PAGES)]
    return routes


async def test_every_route_answers_with_no_canarie_configuration(
    public: httpx.AsyncClient,
) -> None:
    walked = 0
    for path, what in _routes():
        for method in ("GET", "HEAD"):
            for accept in ACCEPTS:
                response = await public.request(method, path, headers=accept)
                walked += 1
                expected = 204 if what == "source" else 200
                assert response.status_code == expected, (method, path, accept, response.text)
                if method == "HEAD":
                    assert response.content == b"", (path, accept)
                if what == "source":
                    continue
                kind = response.headers["content-type"]
                json_asked = accept.get("Accept") == "application/json"
                if what in ("info", "stats") and json_asked:
                    assert kind.startswith("application/json"), (path, accept)
                else:
                    assert kind.startswith("text/html"), (path, accept)
                    policy = response.headers["content-security-policy"]
                    assert "default-src 'none'" in policy
                    assert "script-src 'nonce-" in policy
                assert response.headers["x-content-type-options"] == "nosniff"
    assert walked == len(_routes()) * 2 * len(ACCEPTS) == 448


async def test_info_has_every_field_of_the_specification_with_its_type(
    public: httpx.AsyncClient,
) -> None:
    JSON = {"Accept": "application/json"}
    service_schema = Draft202012Validator(_info_schema(service=True))
    platform_schema = Draft202012Validator(_info_schema(service=False))

    platform = (await public.get("/platform/info", headers=JSON)).json()
    assert list(platform_schema.iter_errors(platform)) == []
    assert platform["name"] == "Service Gateway"
    assert platform["researchSubject"] == "Multi-discipline"

    plain = (await public.get("/plain/service/info", headers=JSON)).json()
    assert list(service_schema.iter_errors(plain)) == []
    # what the service itself says, and the platform's defaults for the rest
    assert (plain["name"], plain["synopsis"], plain["version"]) == ("Plain", "Plain", "3.1.4")
    for field in ("institution", "releaseTime", "researchSubject", "supportEmail", "tags"):
        assert plain[field] == platform[field], field
    assert plain["category"] == "Other"
    assert plain["activeWorkers"] == 0
    assert (await public.get("/plain/info", headers=JSON)).json() == plain

    # the platform lists its services, each with links that answer
    listed = {s["id"]: s for s in platform["services"]}
    assert set(listed) == {"plain", "hostile"}
    assert listed["plain"]["name"] == "Plain"
    assert listed["plain"]["version"] == "3.1.4"
    for link in listed["plain"]["links"].values():
        assert (await public.get(link)).status_code == 200, link

    stats = (await public.get("/plain/service/stats", headers=JSON)).json()
    assert stats["invocations"] == 0
    assert re.match(CANARIE_TIME, stats["lastReset"])


async def test_generated_doc_lists_the_inputs_and_links_the_swagger_operation(
    public: httpx.AsyncClient,
) -> None:
    page = (await public.get("/hostile/service/doc")).text
    assert "&lt;b&gt;name&lt;/b&gt;" in page  # the input's row
    anchor = re.search(r'href="http://gw\.test/docs#/([^/"]+)/([^/"]+)"', page)
    assert anchor is not None
    tag, operation_id = (part.replace("%20", " ") for part in anchor.groups())
    openapi = (await public.get("/openapi.json")).json()
    execute = [
        op["post"]
        for path, op in openapi["paths"].items()
        if path.startswith("/processes/") and path.endswith("/execution")
    ]
    assert execute[0]["operationId"] == operation_id
    assert tag in execute[0]["tags"]
    # the anchor works only when Swagger UI deep-links, which FastAPI turns on
    assert '"deepLinking": true' in (await public.get("/docs")).text


async def test_the_tryme_form_submits_what_the_service_accepts(
    gateway: Gateway, public: httpx.AsyncClient
) -> None:
    response = await public.get("/plain/service/tryme")
    page = response.text
    execute = re.search(r'<form id="tryme" data-execute="([^"]+)"', page)
    assert execute is not None
    nonce = re.search(r"<script nonce=\"([^\"]+)\">", page)
    assert nonce is not None
    assert f"script-src 'nonce-{nonce.group(1)}'" in response.headers["content-security-policy"]
    assert '<input id="token" name="token" type="password"' in page
    # what the page's script sends: the inputs as JSON, the token as a bearer token
    submitted = await public.post(
        html.unescape(execute.group(1)),
        json={"inputs": {}},
        headers={"Authorization": f"Bearer {gateway.token('tryme-user')}"},
    )
    assert submitted.status_code == 201, submitted.text
    assert submitted.headers["location"].startswith("http://gw.test/jobs/")


async def test_hostile_catalogue_values_are_escaped_in_every_page(
    public: httpx.AsyncClient,
) -> None:
    paths = [f"/hostile/service/{p}" for p in ("info", "stats", *SERVICE_PAGES) if p != "source"]
    paths += [f"/platform/{p}" for p in ("info", "doc", "tryme", "factsheet", "releasenotes")]
    for path in paths:
        page = (await public.get(path)).text
        assert "<script>alert" not in page, path
        assert "<img src=x" not in page, path
        assert "</textarea><script" not in page, path
        assert "&lt;script&gt;alert" in page, path
    doc = (await public.get("/hostile/service/doc")).text
    assert "&lt;img src=x onerror=alert(1)&gt;" in doc
