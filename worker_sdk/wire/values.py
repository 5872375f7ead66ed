"""Bounds on the JSON values that cross the system: job inputs, results and message fields.

A value is checked once, where it enters (the gateway for inputs, the worker for results),
so that nothing accepted can fail later on its way through the broker or into a store:

- nesting at most ``max_depth`` deep (the standard library's JSON codecs recurse; pydantic's
  serialiser and BSON stop near 200 levels);
- strings and keys encodable as UTF-8 (a lone UTF-16 surrogate such as ``"\\ud800"`` is
  valid JSON text but no valid UTF-8);
- keys without a NUL character (BSON ends a key at its first NUL: MongoDB refuses it);
- finite numbers (``NaN``, ``Infinity`` and ``1e400`` parse in Python but are not JSON);
- integers within 64 bits (MongoDB refuses larger ones, SQLite overflows).

The walk is iterative, so no input can exhaust the interpreter's recursion limit here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_DEPTH = 32
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class ValueProblem:
    """Where a value breaks a bound (a JSON pointer below the checked root) and which."""

    path: str
    message: str


def _pointer(parent: str, key: str | int) -> str:
    token = str(key).replace("~", "~0").replace("/", "~1")
    return f"{parent}/{token}"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _scalar_problem(item: Any) -> str | None:
    """Why a non-container value is not a carriable JSON scalar, or None."""
    if item is None or isinstance(item, bool):
        return None
    if isinstance(item, str):
        return None if _encodable(item) else "not valid Unicode (lone surrogate)"
    if isinstance(item, int):
        return None if INT64_MIN <= item <= INT64_MAX else "integer outside the 64-bit range"
    if isinstance(item, float):
        return None if math.isfinite(item) else f"{item} is not a JSON number (finite only)"
    return f"a {type(item).__name__} is not JSON"


def _children(item: Any, path: str) -> tuple[list[tuple[Any, str]], list[ValueProblem]]:
    """A container's members with their paths, and the problems of its keys."""
    if isinstance(item, dict):
        members, problems = [], []
        for key, child in item.items():
            if not isinstance(key, str):
                problems.append(ValueProblem(path or "/", f"key {key!r} is not a string"))
            elif not _encodable(key):
                problems.append(ValueProblem(path or "/", "a key is not valid Unicode"))
            elif "\x00" in key:
                problems.append(ValueProblem(path or "/", "a key holds a NUL character"))
            else:
                members.append((child, _pointer(path, key)))
        return members, problems
    return [(child, _pointer(path, i)) for i, child in enumerate(item)], []


def check_value(
    value: Any, *, root: str = "", max_depth: int = DEFAULT_MAX_DEPTH, limit: int = 20
) -> list[ValueProblem]:
    """Every bound ``value`` breaks (at most ``limit`` of them), in document order.

    Containers are dicts (string keys) and lists or tuples; scalars are ``str``, ``int``,
    ``float``, ``bool`` and ``None``. Anything else is a problem too: it is not JSON.
    """
    problems: list[ValueProblem] = []
    stack: list[tuple[Any, str, int]] = [(value, root, 0)]
    while stack and len(problems) < limit:
        item, path, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                problems.append(ValueProblem(path or "/", f"nested deeper than {max_depth} levels"))
                continue
            members, key_problems = _children(item, path)
            problems.extend(key_problems)
            stack.extend((child, where, depth + 1) for child, where in reversed(members))
        elif (problem := _scalar_problem(item)) is not None:
            problems.append(ValueProblem(path or "/", problem))
    return problems[:limit]
