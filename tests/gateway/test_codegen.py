"""``sgw models`` on schemas with definitions of their own: each service's references point
into its own schema, whatever the others name theirs, and the module imports."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.codegen import generate_models
from worker_sdk.wire.catalogue import parse_catalogue

CATALOGUE = """
services:
  first:
    title: First
    version: "1.0.0"
    inputs:
      type: object
      properties:
        item: {$ref: "#/$defs/U"}
      $defs:
        U: {anyOf: [{type: integer}, {type: "null"}]}
  second:
    title: Second
    version: "1.0.0"
    inputs:
      type: object
      properties:
        item: {$ref: "#/$defs/U"}
        items: {type: array, items: {$ref: "#/$defs/U"}}
        note: {type: object, default: {$ref: "#/$defs/U"}}
      $defs:
        U: {type: string, maxLength: 3}
"""


def test_each_service_s_references_are_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("datamodel_code_generator")
    path = tmp_path / "generated_models.py"
    path.write_text(generate_models(parse_catalogue(CATALOGUE, source="tests"), output=str(path)))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("generated_models")
    assert module.FirstInputs.model_validate({"item": 5}).model_dump() == {"item": 5}
    second = module.SecondInputs.model_validate({"item": "abc", "items": ["x"]})
    assert second.model_dump(mode="json")["items"] == ["x"]
    assert second.note == {"$ref": "#/$defs/U"}  # a default is data: kept as it is
    with pytest.raises(ValidationError):
        module.FirstInputs.model_validate({"item": "abc"})
    with pytest.raises(ValidationError):
        module.SecondInputs.model_validate({"item": "abcd"})
    monkeypatch.delitem(sys.modules, "generated_models")
