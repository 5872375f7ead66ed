"""Validate documents against OGC API – Processes 1.0's schemas (tests/data; see its header)."""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from tests.conftest import ROOT

SCHEMAS = ROOT / "tests" / "data" / "ogcapi-processes-1.0.yaml"
BASE = "https://schemas.test/ogcapi/processes/part1/1.0/openapi/schemas/"
OGC_EXCEPTION = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"


@cache
def schemas() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SCHEMAS.read_text())
    return loaded


@cache
def _registry() -> Registry[Any]:
    resources = [
        (BASE + name, Resource.from_contents(schema, default_specification=DRAFT4))
        for name, schema in schemas().items()
    ]
    return Registry().with_resources(resources)


def errors(name: str, document: Any) -> list[str]:
    """Why ``document`` fails the standard's ``name`` schema (e.g. ``statusInfo.yaml``)."""
    validator = Draft4Validator({"$ref": BASE + name}, registry=_registry())
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def check(name: str, document: Any) -> None:
    problems = errors(name, document)
    assert not problems, f"not a valid {name}: {problems}"
