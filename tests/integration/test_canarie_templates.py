"""CANARIE pages naming a template: rendered in a sandbox, from the templates directory only;
the platform block's values reach the services that leave them out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Gateway, GatewayFactory
from worker_sdk.wire.catalogue import Catalogue, parse_catalogue

pytestmark = pytest.mark.integration

SECRET = "the-secret-next-to-the-templates"
CATALOGUE = """
platform:
  name: Research platform
  institution: CRIM
  supportEmail: help@example.org
  releaseTime: 2026-01-15
  researchSubject: Computer science
  category: Data Analysis
  tags: [audio, video]
  pages:
    licence: licence.html
    factsheet: https://example.org/factsheet
services:
  tmpl:
    title: Templated
    description: '<script>alert(1)</script>'
    version: "2.0.0"
    canarie:
      releaseTime: "2026-02-01T12:00:00+02:00"
      pages:
        doc: doc.html
        releasenotes: escape.html
        support: include.html
        tryme: link.html
        provenance: bomb.html
        licence: globals.html
        source: "https://example.org/source"
        factsheet: "gone for now,404"
  inherits:
    title: Inherits
    version: "1.0.0"
    canarie:
      pages:
        doc: missing.html
"""
TEMPLATES = {
    "doc.html": (
        '{% extends "gateway/base.html" %}{% block content %}'
        "<p id=name>{{ service.info.name }} {{ service.version }} for {{ platform.institution }}"
        "</p><p id=desc>{{ service.description }}</p>"
        "<p id=inputs>{{ links.execute }}</p>{% endblock %}"
    ),
    "escape.html": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "include.html": "{% include '../secret.txt' %}",
    "link.html": "{% include 'outside.html' %}",
    "bomb.html": "{{ 'x' * 10 ** 8 }}",
    "globals.html": "{{ self._TemplateReference__context.environment.loader.searchpath }}",
    "licence.html": "<p>Licensed by {{ platform.institution }}: {{ service.id }}</p>",
}


@pytest.fixture
def catalogue() -> Catalogue:
    return parse_catalogue(CATALOGUE, source="tests")


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    (tmp_path / "secret.txt").write_text(SECRET)
    (tmp_path / "outside.html").write_text(SECRET)
    directory = tmp_path / "templates"
    directory.mkdir()
    for name, text in TEMPLATES.items():
        (directory / name).write_text(text)
    (directory / "outside.html").symlink_to(tmp_path / "outside.html")
    return directory


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory, templates: Path) -> Gateway:
    return await gateway_factory(canarie_templates=templates)


@pytest.fixture
async def public(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=gateway.transport, base_url="http://gw.test") as client:
        yield client


async def test_a_page_naming_a_template_is_rendered(public: httpx.AsyncClient) -> None:
    for path in ("/tmpl/service/doc", "/tmpl/doc"):
        response = await public.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        page = response.text
        assert "doc.html" not in page
        assert "{{" not in page
        assert "<p id=name>Templated 2.0.0 for CRIM</p>" in page
        assert "<p id=inputs>http://gw.test/processes/tmpl/execution</p>" in page
        # autoescaped like the generated pages
        assert "<p id=desc>&lt;script&gt;alert(1)&lt;/script&gt;</p>" in page
        # the shared layout, its style allowed by this response's nonce
        policy = response.headers["content-security-policy"]
        nonce = policy.split("style-src 'nonce-")[1].split("'")[0]
        assert f'<style nonce="{nonce}">' in page
        assert response.headers["x-content-type-options"] == "nosniff"
        assert (await public.head(path)).status_code == 200


async def test_templates_cannot_escape_the_sandbox(public: httpx.AsyncClient) -> None:
    for page in ("releasenotes", "support", "tryme", "licence"):
        response = await public.get(f"/tmpl/service/{page}")
        assert response.status_code == 503, (page, response.text)
        assert response.json()["code"] == "service-unavailable"
        for leak in (SECRET, "subclasses", "searchpath", "<class", str(Path.cwd())):
            assert leak not in response.text, (page, leak)


async def test_a_template_cannot_exhaust_the_process(public: httpx.AsyncClient) -> None:
    # 'x' * 10 ** 8 would be a 100 MB page; the sandbox refuses to build it
    response = await public.get("/tmpl/service/provenance")
    assert response.status_code == 503
    assert len(response.content) < 1000


async def test_urls_redirect_and_text_keeps_its_status(public: httpx.AsyncClient) -> None:
    source = await public.get("/tmpl/service/source")
    assert (source.status_code, source.headers["location"]) == (302, "https://example.org/source")
    gone = await public.get("/tmpl/service/factsheet")
    assert (gone.status_code, gone.text) == (404, "gone for now")
    factsheet = await public.get("/platform/factsheet")
    assert factsheet.headers["location"] == "https://example.org/factsheet"


async def test_a_missing_template_is_a_clean_503(
    public: httpx.AsyncClient, templates: Path
) -> None:
    response = await public.get("/inherits/service/doc")
    assert response.status_code == 503
    assert response.json()["code"] == "service-unavailable"
    assert str(templates) not in response.text


async def test_services_take_what_they_leave_out_from_the_platform_block(
    public: httpx.AsyncClient,
) -> None:
    JSON = {"Accept": "application/json"}
    platform = (await public.get("/platform/info", headers=JSON)).json()
    assert platform["name"] == "Research platform"
    assert platform["releaseTime"] == "2026-01-15T00:00:00Z"
    inherits = (await public.get("/inherits/info", headers=JSON)).json()
    assert inherits["institution"] == "CRIM"
    assert inherits["supportEmail"] == "help@example.org"
    assert inherits["releaseTime"] == "2026-01-15T00:00:00Z"
    assert inherits["researchSubject"] == "Computer science"
    assert inherits["category"] == "Data Analysis"
    assert inherits["tags"] == ["audio", "video"]
    tmpl = (await public.get("/tmpl/info", headers=JSON)).json()
    assert tmpl["releaseTime"] == "2026-02-01T10:00:00Z"  # its own, in UTC
    # the platform's licence page serves the services without their own
    licence = await public.get("/inherits/service/licence")
    assert licence.status_code == 200
    assert "<p>Licensed by CRIM: inherits</p>" in licence.text
    support = (await public.get("/inherits/service/support")).text
    assert 'href="mailto:help@example.org"' in support
