"""Schemas that would be applied to the same value again and again without end.

A chain of in-place applicators (``$ref``, ``allOf``, ``anyOf``, ``oneOf``, ``not``, ``if``,
``then``, ``else``, ``dependentSchemas``) that comes back to where it began, never descending
into a member or an item, is a valid JSON Schema; but jsonschema validates it by recursing until
Python's stack runs out, whatever the value: every submission would answer 500. A schema that
recurses through ``properties`` or ``items`` (a tree) descends with its value and ends.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote

_LISTS = ("allOf", "anyOf", "oneOf")
_ONES = ("not", "if", "then", "else")
# Keywords whose values are data, not schemas: a "$ref" in them is no reference.
_DATA = frozenset({"default", "const", "enum", "examples"})


def in_place_loop(schema: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The path of a subschema that applies itself to its own value again, or ``None``."""
    nodes = dict(_subschemas(schema, ()))
    state: dict[tuple[str, ...], bool] = {}  # False: on the path being walked; True: done
    for start in nodes:
        if start in state:
            continue
        stack = [(start, _applied(schema, nodes[start], start))]
        state[start] = False
        while stack:
            path, edges = stack[-1]
            following = next(edges, None)
            if following is None:
                state[path] = True
                stack.pop()
            elif following not in nodes:  # a reference into a data keyword's value
                continue
            elif following not in state:
                state[following] = False
                stack.append((following, _applied(schema, nodes[following], following)))
            elif state[following] is False:
                return following
    return None


def _subschemas(
    node: object, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    """Every object of the schema (but data keywords' values), by its path."""
    if isinstance(node, Mapping):
        yield path, node
        for key, value in node.items():
            if key not in _DATA:
                yield from _subschemas(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _subschemas(value, (*path, str(index)))


def _applied(
    root: Mapping[str, Any], node: Mapping[str, Any], path: tuple[str, ...]
) -> Iterator[tuple[str, ...]]:
    """The paths of the subschemas ``node`` applies to its own value."""
    for key in _LISTS:
        if isinstance(node.get(key), list):
            yield from ((*path, key, str(i)) for i in range(len(node[key])))
    yield from ((*path, key) for key in _ONES if isinstance(node.get(key), Mapping))
    dependent = node.get("dependentSchemas")
    if isinstance(dependent, Mapping):
        yield from ((*path, "dependentSchemas", str(name)) for name in dependent)
    target = local_ref(node.get("$ref"))
    if target is not None and isinstance(at(root, target), Mapping):
        yield target


def local_ref(ref: object) -> tuple[str, ...] | None:
    """The path a local reference (``#``, ``#/$defs/U``) names in its schema; ``None`` for
    any other."""
    if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
        return None
    tokens = ref[2:].split("/") if ref != "#" else []
    return tuple(unquote(token).replace("~1", "/").replace("~0", "~") for token in tokens)


def at(root: object, path: tuple[str, ...]) -> object:
    """What ``path`` names in ``root`` (members and indexes); ``None`` if nothing."""
    node = root
    for token in path:
        if isinstance(node, Mapping):
            node = node.get(token)
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node
