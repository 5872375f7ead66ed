"""Bounds on the JSON values that cross the system."""

from __future__ import annotations

import tracemalloc
from typing import Any

import bson
import bson.errors
import pytest

from worker_sdk.wire.topology import RETRY_TIERS, TaskQueueOptions, Topology, retry_tier
from worker_sdk.wire.values import check_value


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "path", "says"),
    [
        ({"a": float("nan")}, "/a", "not a JSON number"),
        ({"a": [1, float("-inf")]}, "/a/1", "not a JSON number"),
        ({"s": "\udc00"}, "/s", "lone surrogate"),
        ({"\ud800": 1}, "/", "not valid Unicode"),
        ({"n": 2**63}, "/n", "64-bit"),
        ({"n": -(2**63) - 1}, "/n", "64-bit"),
        ({"o": object()}, "/o", "is not JSON"),
        ({1: "x"}, "/", "is not a string"),
        ({"a/b": {"c~d": float("nan")}}, "/a~1b/c~0d", "not a JSON number"),
        ({"x": {"a\x00b": 1}}, "/x", "NUL"),
    ],
)
def test_what_no_store_or_broker_can_carry_is_named(value: Any, path: str, says: str) -> None:
    (problem,) = check_value(value)
    assert problem.path == path
    assert says in problem.message


def test_depth_is_bounded_without_recursion() -> None:
    assert check_value(_deep(32)) == []
    (problem,) = check_value(_deep(33))
    assert "deeper than 32" in problem.message
    assert check_value(_deep(100_000), max_depth=32)  # no RecursionError at any depth


def test_what_is_carriable_passes() -> None:
    value = {"s": "é ✓ 𝄞", "n": 2**63 - 1, "f": 1.5e308, "b": True, "z": None, "l": [1, "2"]}
    assert check_value(value) == []
    assert check_value({"nul": "a\x00b"}) == []  # in a string, a NUL is carried


def test_bson_refuses_a_nul_in_a_key_not_in_a_string() -> None:
    """Why a key may not hold one: MongoDB's documents are BSON, whose keys end at a NUL."""
    assert bson.decode(bson.encode({"nul": "a\x00b"})) == {"nul": "a\x00b"}
    with pytest.raises(bson.errors.InvalidDocument):
        bson.encode({"result": {"a\x00b": 1}})


def test_problems_come_in_document_order_with_their_paths() -> None:
    value = {"a": [1, float("nan"), {"\ud800": 1}], "b": {"c": [[2**64]]}, "d": object()}
    found = [(p.path, p.message) for p in check_value(value, root="/inputs")]
    assert [path for path, _ in found] == [
        "/inputs/a/1",
        "/inputs/a/2",
        "/inputs/b/c/0/0",
        "/inputs/d",
    ]
    assert "not valid Unicode" in found[1][1]
    assert [p.path for p in check_value(float("inf"))] == ["/"]


def test_a_value_of_a_million_members_is_checked_without_copies_of_it() -> None:
    """The walk holds an iterator per level and writes no path unless for a problem (it
    built a path and a tuple per member: hundreds of megabytes for a large result)."""
    value = {"rows": [[i, "x", 1.5] for i in range(100_000)], "flat": [0] * 1_000_000}
    tracemalloc.start()
    try:
        assert check_value(value) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000, peak


def test_the_number_of_problems_is_capped() -> None:
    assert len(check_value([float("nan")] * 1000, limit=20)) == 20


def test_a_delay_waits_in_the_next_tier_up() -> None:
    assert [retry_tier(d) for d in (0, 1, 1.5, 5, 59, 3600, 10**6)] == [
        1,
        1,
        5,
        5,
        60,
        3600,
        RETRY_TIERS[-1],
    ]


def test_task_queues_dead_letter_by_service_id() -> None:
    args = TaskQueueOptions(delivery_limit=3, max_length=10).arguments(Topology("ns"), "echo")
    assert args["x-delivery-limit"] == 3
    assert args["x-max-length"] == 10
    assert args["x-dead-letter-exchange"] == "ns.dlx"
    assert args["x-dead-letter-routing-key"] == "echo"
    assert args["x-overflow"] == "reject-publish"
