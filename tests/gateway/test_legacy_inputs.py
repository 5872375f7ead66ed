"""The old routes' ``misc`` judged by the service's schema at the edge: its text taken as the
worker's model takes it, anything else refused before the job exists."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InvalidInput
from gateway.inputs import InputChecker
from worker_sdk.wire.catalogue import parse_catalogue
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
"""
OLD = {"doc_url": "http://93.184.216.34/a.txt", "upload_url": "http://mss.example.org/add"}


@pytest.fixture
def checker() -> InputChecker:
    return InputChecker(
        parse_catalogue(CATALOGUE, source="tests"),
        UrlPolicy(),
        max_depth=32,
        max_urls=16,
        url_deadline=5.0,
    )


async def test_a_closed_schema_refuses_the_old_routes_parameters(checker: InputChecker) -> None:
    spec = parse_catalogue(CATALOGUE, source="tests").get("closed")
    assert spec is not None
    with pytest.raises(InvalidInput) as caught:
        await checker.check_legacy(spec, dict(OLD))
    paths = {e.path for e in caught.value.errors}
    assert paths == {"/misc"}  # the missing url, and the unexpected doc_url and upload_url
    assert "doc_url" in caught.value.detail
    assert "'url' is a required property" in caught.value.detail


@pytest.mark.parametrize(
    "misc",
    [
        {"delay": "2.5", "top": "10", "fast": "true"},
        {"delay": " 0 ", "top": "+3", "fast": "no"},
        {"delay": 1, "top": 2, "fast": False},  # a JSON body's own values
        {"either": "007"},  # a string is taken as a string where the schema takes one
    ],
)
async def test_text_is_taken_where_it_spells_the_wanted_scalar(
    checker: InputChecker, misc: dict[str, Any]
) -> None:
    spec = parse_catalogue(CATALOGUE, source="tests").get("typed")
    assert spec is not None
    sent = {**OLD, **misc}
    await checker.check_legacy(spec, sent)
    assert sent == {**OLD, **misc}  # the worker gets the text as sent


@pytest.mark.parametrize(
    ("misc", "path"),
    [
        ({"delay": "soon"}, "/misc/delay"),
        ({"delay": "nan"}, "/misc/delay"),
        ({"delay": "1e400"}, "/misc/delay"),
        ({"delay": "-1"}, "/misc/delay"),
        ({"top": "11"}, "/misc/top"),
        ({"top": "2.5"}, "/misc/top"),
        ({"fast": "maybe"}, "/misc/fast"),
        ({"top": "9" * 5000}, "/misc/top"),
    ],
)
async def test_text_that_spells_no_valid_value_is_refused(
    checker: InputChecker, misc: dict[str, Any], path: str
) -> None:
    spec = parse_catalogue(CATALOGUE, source="tests").get("typed")
    assert spec is not None
    with pytest.raises(InvalidInput) as caught:
        await checker.check_legacy(spec, {**OLD, **misc})
    assert [e.path for e in caught.value.errors] == [path]
