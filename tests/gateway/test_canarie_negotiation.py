"""Content negotiation of the CANARIE routes: HTML unless JSON is preferred, never an error."""

from __future__ import annotations

import pytest

from gateway.api.canarie import wants_json


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("text/html", False),
        ("text/html,application/json", False),
        ("text/html;q=0.9,application/json;q=0.9", False),
        ("application/xml", False),
        ("application/json", True),
        ("APPLICATION/JSON", True),
        ("application/json; charset=utf-8", True),
        ("application/*", True),
        ("application/json;q=0.9,text/html;q=0.8", True),
        ("application/json, */*;q=0.1", True),
        # the most specific range decides: */* gives HTML 1.0, above JSON's 0.9
        ("application/json;q=0.9,*/*", False),
        ("text/html;q=0,application/json;q=0.1", True),
        ("application/json;q=0", False),
        ("application/json; Q=0.5, text/html; q=0.4", True),
    ],
)
def test_html_unless_json_is_preferred(accept: str | None, expected: bool) -> None:
    assert wants_json(accept) is expected


@pytest.mark.parametrize(
    "accept",
    [
        "application/json;q=abc",
        "application/json;q=",
        "application/json;q=nan",
        "application/json;q=inf",
        "application/json;q=-1",
        "application/json;q=1e309",
        "application/json;q=2",
        "application/json;;;q",
        ";;;,,,",
        "/",
        "json",
        "application/json/extra",
        "\x00\xff\u2028",
    ],
)
def test_garbage_never_raises_and_falls_back_to_html(accept: str) -> None:
    assert wants_json(accept) is False


def test_an_unreadable_entry_does_not_hide_the_others() -> None:
    assert wants_json("text/html;q=abc, application/json") is True


def test_a_huge_header_is_read_from_the_front() -> None:
    assert wants_json("application/json," + "x/y;q=0.1," * 200_000) is True  # 2 MB
    assert wants_json("x/y," * 500_000 + "application/json") is False  # past the cut: HTML
