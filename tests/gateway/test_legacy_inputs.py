"""The old routes' ``misc`` judged by the service's schema at the edge: its text read as the
worker's model reads it, anything else refused before the job exists, never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InvalidInput
from gateway.inputs import InputChecker, _types
from worker_sdk.wire.catalogue import ServiceSpec, parse_catalogue
from worker_sdk.wire.urls import UrlPolicy

CATALOGUE = """
services:
  closed:
    title: Closed
    version: "1.0.0"
    inputs:
      type: object
      required: [url]
      additionalProperties: false
      properties:
        url: {type: string, format: uri}
  typed:
    title: Typed
    version: "1.0.0"
    inputs:
      type: object
      properties:
        delay: {type: number, minimum: 0}
        top: {type: integer, maximum: 10}
        fast: {type: boolean}
        either: {type: [integer, string]}
        maybe: {anyOf: [{type: integer}, {type: "null"}]}
        half: {type: number, multipleOf: 0.5}
        count: {type: integer, multipleOf: 0.5}
        text: {type: string, maxLength: 10}
        upload_url: {type: string, format: uri}
        source: {type: string, format: uri}
        level: {$ref: "#/$defs/Level"}
        both: {allOf: [{type: integer}, {minimum: 1}]}
      $defs:
        Level: {type: integer, maximum: 5}
"""
OLD = {"doc_url": "http://93.184.216.34/a.txt", "upload_url": "http://localhost:5002/add"}
OWN = {"http://localhost:5002/add"}


@pytest.fixture
def checker() -> InputChecker:
    return InputChecker(
        parse_catalogue(CATALOGUE, source="tests"),
        UrlPolicy(),
        max_depth=32,
        max_urls=3,
        url_deadline=5.0,
    )


def _spec(name: str) -> ServiceSpec:
    spec = parse_catalogue(CATALOGUE, source="tests").get(name)
    assert spec is not None
    return spec


async def test_a_closed_schema_cannot_be_called_on_the_old_routes(checker: InputChecker) -> None:
    with pytest.raises(InvalidInput) as caught:
        await checker.check_legacy(_spec("closed"), {**OLD, "url": "http://93.184.216.34/"})
    assert [e.path for e in caught.value.errors] == ["/misc"]
    assert "cannot be called on the old routes" in caught.value.detail


@pytest.mark.parametrize(
    "misc",
    [
        {"delay": "2.5", "top": "10", "fast": "true"},
        {"delay": " 0 ", "top": "+3", "fast": "no"},  # as pydantic reads them
        {"top": "5.0", "delay": "1_000"},
        {"delay": 1, "top": 2, "fast": False},  # a JSON body's own values
        {"either": "007"},  # a string is taken as a string where the schema takes one
        {"maybe": "5"},  # a branch's type
        {"half": "1.5"},
        {"level": "5", "both": "2"},  # through a definition, and allOf
    ],
)
async def test_text_is_taken_where_the_worker_s_model_reads_it(
    checker: InputChecker, misc: dict[str, Any]
) -> None:
    sent = {**OLD, **misc}
    await checker.check_legacy(_spec("typed"), sent, own=OWN)
    assert sent == {**OLD, **misc}  # the worker gets the text as sent


@pytest.mark.parametrize(
    ("misc", "path"),
    [
        ({"delay": "soon"}, "/misc/delay"),
        ({"delay": "٣"}, "/misc/delay"),  # a digit pydantic does not read
        ({"delay": "５"}, "/misc/delay"),
        ({"fast": " true"}, "/misc/fast"),  # pydantic strips no boolean
        ({"delay": "nan"}, "/misc/delay"),  # read, but no store carries it
        ({"delay": "1e400"}, "/misc/delay"),
        ({"delay": "-1"}, "/misc/delay"),
        ({"top": "11"}, "/misc/top"),
        ({"top": "2.5"}, "/misc/top"),
        ({"top": "9" * 30}, "/misc/top"),  # past 64 bits
        ({"top": "9" * 5000}, "/misc/top"),
        ({"count": "1" + "0" * 40}, "/misc/count"),  # past 64 bits: before multipleOf divides
        ({"fast": "maybe"}, "/misc/fast"),
        ({"level": "6"}, "/misc/level"),
    ],
)
async def test_text_that_spells_no_valid_value_is_refused(
    checker: InputChecker, misc: dict[str, Any], path: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await checker.check_legacy(_spec("typed"), {**OLD, **misc}, own=OWN)
    assert [e.path for e in caught.value.errors] == [path]


async def test_the_gateway_s_own_urls_are_not_the_policy_s_to_judge(checker: InputChecker) -> None:
    await checker.check_legacy(_spec("typed"), dict(OLD), own=OWN)
    with pytest.raises(InvalidInput) as caught:  # a client's URL to the same address is
        await checker.check_legacy(_spec("typed"), {**OLD, "source": "http://localhost:5002/x"})
    assert {e.path for e in caught.value.errors} == {"/misc/upload_url", "/misc/source"}


async def test_the_urls_the_route_checked_count_in_the_request_s_limit(
    checker: InputChecker,
) -> None:
    checked = ["http://93.184.216.34/a", "http://93.184.216.35/b"]
    misc = {**OLD, "source": "http://93.184.216.36/c"}
    await checker.check_legacy(_spec("typed"), misc, checked=checked, own=OWN)  # 3 of 3
    with pytest.raises(InvalidInput) as caught:
        await checker.check_legacy(
            _spec("typed"), misc, checked=[*checked, "http://93.184.216.37/d"], own=OWN
        )
    assert "more than 3 URLs" in caught.value.detail


async def test_a_refusal_repeats_a_long_value_only_in_part(checker: InputChecker) -> None:
    with pytest.raises(InvalidInput) as caught:
        await checker.check(_spec("typed"), {"text": "x" * 900_000})
    assert len(caught.value.detail) < 1000


def test_a_definition_naming_itself_is_followed_a_few_times_only() -> None:
    root = {"$defs": {"Loop": {"$ref": "#/$defs/Loop"}, "N": {"type": "integer"}}}
    assert _types({"$ref": "#/$defs/Loop"}, root) == []
    assert _types({"$ref": "#/$defs/N"}, root) == ["integer"]
    assert _types({"$ref": "#/$defs/Missing"}, root) == []
