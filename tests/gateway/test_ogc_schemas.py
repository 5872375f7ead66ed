"""The OGC schemas the tests validate with (tests/data/ogcapi-processes-1.0.yaml) are the
standard's: compared file by file with the standard's own files, vendored unchanged in
tests/data/ogcapi-processes-1.0-schemas (their source in its SOURCE.md), or with those of the
directory SG_TEST_OGC_SCHEMAS names (e.g.
https://schemas.opengis.net/ogcapi/processes/part1/1.0/openapi/schemas/ downloaded)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.oas30 import to_oas30
from tests.ogc import errors, schemas

VENDORED = Path(__file__).parents[1] / "data" / "ogcapi-processes-1.0-schemas"
STANDARD = Path(os.environ.get("SG_TEST_OGC_SCHEMAS") or VENDORED)


def _without_examples(node: Any, *, names: bool = False) -> Any:
    """The schema less its ``example`` annotations (``names``: a ``properties`` map, whose
    keys are property names, ``example`` included)."""
    if isinstance(node, dict):
        return {
            k: _without_examples(v, names=k == "properties" and not names)
            for k, v in node.items()
            if names or k != "example"
        }
    if isinstance(node, list):
        return [_without_examples(v) for v in node]
    return node


@pytest.mark.parametrize("name", sorted(schemas()))
def test_each_schema_is_the_standards(name: str) -> None:
    original = yaml.safe_load((STANDARD / name).read_text())
    assert schemas()[name] == _without_examples(original)


def test_the_schemas_reject_what_the_standard_rejects() -> None:
    assert errors("statusInfo.yaml", {"jobID": "j", "status": "done", "type": "process"})
    assert errors("statusInfo.yaml", {"jobID": "j", "status": "running"})  # type is required
    assert errors("jobList.yaml", {"jobs": []})  # links are required
    assert errors("exception.yaml", {"title": "no type"})
    assert errors("process.yaml", {"id": "p", "version": "1", "inputs": {"a": {"title": "a"}}})
    assert not errors("confClasses.yaml", {"conformsTo": []})


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": ["string", "null"]}, {"type": "string", "nullable": True}),
        (
            {"type": ["integer", "number", "string"]},
            {"oneOf": [{"type": "number"}, {"type": "string"}]},
        ),
        ({"const": 3}, {"enum": [3]}),
        ({"exclusiveMaximum": 5}, {"maximum": 5, "exclusiveMaximum": True}),
        ({"examples": [1, 2]}, {"example": 1}),
        ({"anyOf": [{"type": "string"}, {"type": "null"}]}, {"type": "string", "nullable": True}),
        ({"prefixItems": [{}], "if": {}, "then": {}, "required": []}, {}),
        (
            {"$defs": {"n": {"$ref": "#/$defs/n"}}, "properties": {"x": {"$ref": "#/$defs/n"}}},
            {"properties": {"x": {}}},
        ),
        ({"properties": {"not": {"type": "string"}}}, {"properties": {"not": {"type": "string"}}}),
    ],
)
def test_json_schema_becomes_an_openapi_30_schema_object(
    schema: dict[str, Any], expected: dict[str, Any]
) -> None:
    converted = to_oas30(schema)
    assert converted == expected
    assert not errors("schema.yaml", converted)
