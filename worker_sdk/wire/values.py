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
from collections.abc import Iterator
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


def _key_problem(key: object) -> str | None:
    """Why a dict's key cannot be carried, or None."""
    if not isinstance(key, str):
        return f"key {key!r} is not a string"
    if not _encodable(key):
        return "a key is not valid Unicode"
    if "\x00" in key:
        return "a key holds a NUL character"
    return None


class _Check:
    """One walk of :func:`check_value`: an iterator per level it is in, and the keys down to
    the container walked last; a member's path is written only for a problem."""

    def __init__(self, root: str, max_depth: int, limit: int) -> None:
        self.root, self.max_depth, self.limit = root, max_depth, limit
        self.problems: list[ValueProblem] = []
        self.keys: list[str | int] = []
        self.walks: list[tuple[Iterator[tuple[Any, Any]], bool]] = []  # and whether a dict

    def path(self, *last: str | int) -> str:
        where = self.root
        for key in (*self.keys, *last):
            where = _pointer(where, key)
        return where or "/"

    def refuse(self, problem: str, *key: str | int) -> None:
        self.problems.append(ValueProblem(self.path(*key), problem))

    def visit(self, item: Any, *key: str | int) -> None:
        """Check a value; a container is walked next."""
        if isinstance(item, dict):
            self.enter(iter(item.items()), True, key)
        elif isinstance(item, list | tuple):
            self.enter(iter(enumerate(item)), False, key)
        elif (problem := _scalar_problem(item)) is not None:
            self.refuse(problem, *key)

    def enter(
        self, members: Iterator[tuple[Any, Any]], is_dict: bool, key: tuple[Any, ...]
    ) -> None:
        if len(self.walks) >= self.max_depth:
            self.refuse(f"nested deeper than {self.max_depth} levels", *key)
            return
        self.keys.extend(key)
        self.walks.append((members, is_dict))

    def step(self) -> None:
        """Check the members of the container walked last, up to one that is a container
        (walked next) or its end (back to the container holding it). Plain scalars, the bulk
        of a large value, are checked here inline."""
        members, is_dict = self.walks[-1]
        for key, child in members:
            plain_key = not is_dict or (type(key) is str and key.isascii() and "\x00" not in key)
            if not plain_key and (problem := _key_problem(key)) is not None:
                self.refuse(problem)
                return
            kind = type(child)
            if (
                (kind is str and (child.isascii() or _encodable(child)))
                or (kind is int and INT64_MIN <= child <= INT64_MAX)
                or child is None
                or kind is bool
            ):
                continue
            self.visit(child, key)
            return
        self.walks.pop()
        if self.keys:
            self.keys.pop()


def check_value(
    value: Any, *, root: str = "", max_depth: int = DEFAULT_MAX_DEPTH, limit: int = 20
) -> list[ValueProblem]:
    """Every bound ``value`` breaks (at most ``limit`` of them), in document order.

    Containers are dicts (string keys) and lists or tuples; scalars are ``str``, ``int``,
    ``float``, ``bool`` and ``None``. Anything else is a problem too: it is not JSON. A value
    of millions of members costs no memory beyond its own, and well under a second.
    """
    check = _Check(root, max_depth, limit)
    check.visit(value)
    while check.walks and len(check.problems) < limit:
        check.step()
    return check.problems[:limit]
