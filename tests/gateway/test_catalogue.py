from __future__ import annotations

from pathlib import Path

import pytest

from gateway.api import canarie, capacity, docs, jobs, legacy, ops, processes, workers
from gateway.cli import main
from gateway.ui import monitor, pages
from worker_sdk.wire.catalogue import (
    RESERVED_SERVICE_IDS,
    CatalogueError,
    load_catalogue,
    parse_catalogue,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_catalogue_is_valid() -> None:
    catalogue = load_catalogue(ROOT / "services.yaml")
    assert {s.id for s in catalogue} == {"echo", "textstats"}
    textstats = catalogue.get("textstats")
    assert textstats is not None
    assert textstats.queue_ttl == 7200
    assert textstats.canarie.tags == ("text", "statistics")  # the old comma-separated form
    assert textstats.canarie.release_time == "2026-11-30T00:00:00Z"


def test_defaults_follow_the_old_gateway() -> None:
    catalogue = parse_catalogue("services:\n  a:\n    title: A\n    version: '1'\n")
    spec = catalogue.get("a")
    assert spec is not None
    assert spec.queue_ttl == 7200
    assert spec.inputs == {"type": "object"}
    assert spec.delivery_limit == 5


def test_an_error_names_the_service_the_field_and_the_line() -> None:
    text = (
        "services:\n"
        "  good:\n"
        "    title: Good\n"
        "    version: '1'\n"
        "  broken:\n"
        "    title: Broken\n"
        "    version: '1'\n"
        "    queue_ttl: -5\n"
        "    colour: blue\n"
    )
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue(text, source="services.yaml")
    problems = caught.value.problems
    assert any("'broken'" in p and "line 8" in p and "queue_ttl" in p for p in problems), problems
    assert any("'broken'" in p and "line 9" in p and "colour" in p for p in problems), problems
    assert all("'good'" not in p for p in problems)


def test_an_invalid_input_schema_is_refused_with_its_location() -> None:
    text = (
        "services:\n"
        "  s:\n"
        "    title: S\n"
        "    version: '1'\n"
        "    inputs:\n"
        "      type: object\n"
        "      properties:\n"
        "        n: {type: numbr}\n"
    )
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue(text)
    (problem,) = caught.value.problems
    assert "'s'" in problem
    assert "line 8" in problem
    assert "properties/n/type" in problem


LOOPING = {
    "a definition naming itself": (
        "      properties:\n        item: {$ref: '#/$defs/L'}\n"
        "      $defs:\n        L: {$ref: '#/$defs/L'}\n",
        "$defs/L",
    ),
    "the root in its own allOf": ("      allOf: [{$ref: '#'}]\n", "(root)"),
    "two definitions through anyOf and not": (
        "      properties:\n        item: {$ref: '#/$defs/A'}\n"
        "      $defs:\n        A: {anyOf: [{$ref: '#/$defs/B'}]}\n"
        "        B: {not: {$ref: '#/$defs/A'}}\n",
        "$defs/A",
    ),
}


@pytest.mark.parametrize("case", LOOPING)
def test_a_schema_applying_itself_without_end_is_refused(case: str) -> None:
    """jsonschema would recurse until the stack ran out: every submission a 500."""
    body, where = LOOPING[case]
    text = "services:\n  s:\n    title: S\n    version: '1'\n    inputs:\n" + body
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue(text)
    (problem,) = caught.value.problems
    assert f"schema at {where} applies itself" in problem


def test_a_schema_recursing_through_its_members_is_a_tree() -> None:
    text = (
        "services:\n  s:\n    title: S\n    version: '1'\n    inputs:\n"
        "      type: object\n"
        "      properties:\n"
        "        node: {$ref: '#/$defs/Node'}\n"
        "        note: {type: object, default: {$ref: '#'}}\n"
        "      $defs:\n"
        "        Node:\n"
        "          type: object\n"
        "          properties: {children: {type: array, items: {$ref: '#/$defs/Node'}}}\n"
    )
    spec = parse_catalogue(text).get("s")
    assert spec is not None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("services: [", "not valid YAML"),
        ("services: {}\n", "no services"),
        ("other: 1\n", "services"),
        ("services:\n  Bad Id:\n    title: x\n    version: '1'\n", "id"),
        ("services:\n  s:\n    title: x\n", "version"),
        ("services:\n  s:\n    title: x\n    version: '1'\n    inputs: {type: array}\n", "object"),
    ],
)
def test_broken_catalogues_fail(text: str, fragment: str) -> None:
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue(text)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("reserved", sorted(RESERVED_SERVICE_IDS))
def test_a_service_named_as_a_route_of_the_gateway_is_refused_with_its_line(
    reserved: str,
) -> None:
    text = f"services:\n  ok:\n    title: x\n    version: '1'\n  {reserved}:\n    title: x\n"
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue(text + "    version: '1'\n")
    assert "a path of the gateway's own" in str(caught.value)
    assert "line 5" in str(caught.value)


def test_the_reserved_ids_are_the_gateways_first_path_segments() -> None:
    """Kept in step with the routes: every fixed first segment of a route is reserved."""
    modules = (ops, processes, workers, capacity, jobs, legacy, canarie, docs, monitor, pages)
    fixed = {route.path.split("/")[1] for m in modules for route in m.router.routes}
    fixed -= {"", "{service}"}
    assert fixed <= RESERVED_SERVICE_IDS, fixed - RESERVED_SERVICE_IDS
    assert {"jobs", "processes", "platform", "ui"} <= fixed


def test_check_command_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SG_JWT_SECRET", "s" * 32)
    assert main(["check", "--catalogue", str(ROOT / "services.yaml")]) == 0
    assert "configuration OK" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  s:\n    title: x\n    version: '1'\n    time_limit: zero\n")
    assert main(["check", "--catalogue", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "time_limit" in out
    assert "line 5" in out
    assert main(["check", "--catalogue", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().out


def test_check_command_reports_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SG_AMQP_URL", "http://not-a-broker")
    assert main(["check"]) == 1
    assert "SG_AMQP_URL" in capsys.readouterr().out
    monkeypatch.delenv("SG_AMQP_URL")
    assert main(["check"]) == 1
    assert "SG_JWT_SECRET" in capsys.readouterr().out


def test_the_platform_block_is_optional_and_normalised() -> None:
    bare = parse_catalogue("services:\n  a:\n    title: A\n    version: '1'\n")
    assert bare.platform.institution is None
    assert bare.platform.pages == {}
    text = (
        "platform:\n"
        "  institution: CRIM\n"
        "  releaseTime: 2026-01-15\n"  # YAML reads a date
        "  supportEmail: help@example.org\n"
        "  tags: 'audio, video'\n"
        "  pages: {source: ',204', doc: 'https://example.org/doc', tryme: tryme.html}\n"
        "services:\n"
        "  a:\n"
        "    title: A\n"
        "    version: '1'\n"
        "    canarie: {releaseTime: '2026-02-01T12:00:00+02:00'}\n"
    )
    catalogue = parse_catalogue(text)
    assert catalogue.platform.release_time == "2026-01-15T00:00:00Z"
    assert catalogue.platform.tags == ("audio", "video")
    spec = catalogue.get("a")
    assert spec is not None
    assert spec.canarie.release_time == "2026-02-01T10:00:00Z"


def test_platform_errors_name_the_field_and_the_line() -> None:
    text = (
        "services:\n"
        "  a:\n"
        "    title: A\n"
        "    version: '1'\n"
        "platform:\n"
        "  releaseTime: last tuesday\n"
        "  supportEmail: nobody\n"
        "  colour: blue\n"
        "  pages:\n"
        "    license: https://example.org/licence\n"
        "    doc: ../../etc/passwd.html\n"
        "    source: 'hidden,999'\n"
    )
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue(text, source="services.yaml")
    problems = caught.value.problems
    expected = {
        6: "releaseTime",
        7: "supportEmail",
        8: "colour",
        10: "pages.license",
        11: "pages.doc",
        12: "pages.source",
    }
    for line, field in expected.items():
        assert any(
            p.startswith("platform: ") and f"line {line}:" in p and field in p for p in problems
        ), (line, problems)


@pytest.mark.parametrize("status", ["100", "199", "301", "304", "399", "600", "999"])
def test_a_page_of_text_with_a_status_that_needs_more_is_refused(status: str) -> None:
    """A 3xx needs its Location, a 1xx is no answer: neither can a page of text give."""
    text = "services:\n  a:\n    title: A\n    version: '1'\n    canarie:\n      pages:\n"
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue(text + f"        doc: 'moved,{status}'\n")
    assert "line 7" in str(caught.value)
    for status_ok in ("200", "204", "404", "503"):
        parse_catalogue(text + f"        doc: 'text,{status_ok}'\n")


def test_check_command_refuses_pages_it_cannot_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SG_JWT_SECRET", "s" * 32)
    catalogue = tmp_path / "services.yaml"
    catalogue.write_text(
        "platform: {pages: {doc: platform.html}}\n"
        "services:\n  a:\n    title: A\n    version: '1'\n"
        "    canarie: {pages: {tryme: tryme.html}}\n"
    )
    assert main(["check", "--catalogue", str(catalogue)]) == 1
    assert "SG_CANARIE_TEMPLATES is not set" in capsys.readouterr().out

    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "platform.html").write_text("<p>{{ platform.name }}</p>")
    (templates / "tryme.html").write_text("{% if %}")
    monkeypatch.setenv("SG_CANARIE_TEMPLATES", str(templates))
    assert main(["check", "--catalogue", str(catalogue)]) == 1
    out = capsys.readouterr().out
    assert "service 'a': page 'tryme'" in out
    assert "platform" not in out.split("cannot be served")[1]

    (templates / "tryme.html").write_text("<p>{{ service.title }}</p>")
    assert main(["check", "--catalogue", str(catalogue)]) == 0
    out = capsys.readouterr().out
    assert "configuration OK" in out
    assert "platform.institution is not set" in out
    assert "platform.supportEmail is not set" in out


def test_resource_limits_are_read_with_units() -> None:
    text = (
        "services:\n  a:\n    title: A\n    version: '1'\n"
        "    memory_limit: 512MiB\n    cpu_time_limit: 30\n"
    )
    spec = parse_catalogue(text).get("a")
    assert spec is not None
    assert (spec.memory_limit, spec.cpu_time_limit) == (512 * 1024 * 1024, 30)
    decimal = parse_catalogue(text.replace("512MiB", "2GB")).get("a")
    assert decimal is not None
    assert decimal.memory_limit == 2 * 10**9


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("memory_limit: 1MiB", "line 5: field 'memory_limit'"),  # below an idle interpreter
        ("memory_limit: plenty", "line 5: field 'memory_limit'"),
        ("cpu_time_limit: 0", "line 5: field 'cpu_time_limit'"),
    ],
)
def test_bad_resource_limits_are_refused_with_their_line(line: str, fragment: str) -> None:
    with pytest.raises(CatalogueError) as refused:
        parse_catalogue(f"services:\n  a:\n    title: A\n    version: '1'\n    {line}\n")
    assert fragment in str(refused.value)
