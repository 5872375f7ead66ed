"""JSON Schema (2020-12, as pydantic and the catalogue write it) to the OpenAPI 3.0 schema
object, for the OpenAPI document (``oas30`` conformance) and the OGC process descriptions
(whose ``schema`` member is an OpenAPI 3.0 schema object: OGC's ``schema.yaml`` admits its
keywords and no other).

What 3.0 can say is translated: ``type`` lists with ``"null"`` become ``nullable``, ``const``
an ``enum``, numeric ``exclusiveMinimum``/``exclusiveMaximum`` the boolean form, ``examples``
an ``example``, local ``$defs`` references are inlined. What it cannot (``prefixItems``,
``if``/``then``, ``patternProperties``, ``dependentRequired``, ...) is left out: the
description then admits more than the gateway does, and the gateway still validates every
submission against the catalogue's full schema.

The ``openapi-downgrade`` package does this for whole documents, but it walks every key of
the document as if it were a schema keyword (a property named ``not`` or ``examples`` is
rewritten) and drops ``not``; here only schema positions are converted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OPENAPI_VERSION = "3.0.3"

# The keywords of the OpenAPI 3.0 schema object, as OGC's schema.yaml lists them.
_KEEP = frozenset(
    {
        "title",
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "maxProperties",
        "minProperties",
        "required",
        "enum",
        "type",
        "not",
        "allOf",
        "oneOf",
        "anyOf",
        "items",
        "properties",
        "additionalProperties",
        "description",
        "format",
        "default",
        "nullable",
        "readOnly",
        "writeOnly",
        "example",
        "deprecated",
        "contentMediaType",
        "contentEncoding",
    }
)
# Further members the OpenAPI document (not an OGC description) may carry.
_DOCUMENT_ONLY = frozenset({"discriminator", "xml", "externalDocs"})
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly"}
)
_TYPES = frozenset({"array", "boolean", "integer", "number", "object", "string"})
_MAX_INLINE_DEPTH = 16


def to_oas30(schema: Any, *, strict: bool = True) -> dict[str, Any]:
    """The OpenAPI 3.0 schema object closest to ``schema``.

    ``strict`` keeps only the keywords OGC's ``schema.yaml`` allows (process descriptions);
    otherwise ``discriminator``, ``xml``, ``externalDocs`` and ``x-`` extensions stay, and
    references to ``#/components/`` are kept (the OpenAPI document).
    """
    defs: dict[str, Any] = {}
    if isinstance(schema, Mapping):
        for key in ("$defs", "definitions"):
            if isinstance(schema.get(key), Mapping):
                defs.update({f"#/{key}/{name}": s for name, s in schema[key].items()})
    return _Converter(defs, strict).convert(schema, ())


class _Converter:
    def __init__(self, defs: dict[str, Any], strict: bool) -> None:
        self._defs = defs
        self._strict = strict

    def convert(self, schema: Any, inlining: tuple[str, ...]) -> dict[str, Any]:
        if schema is True or not isinstance(schema, Mapping):
            return {}
        if schema is False:
            return {"not": {}}
        ref = schema.get("$ref")
        if isinstance(ref, str):
            resolved = self._reference(ref, schema, inlining)
            if resolved is not None:
                return resolved
        out: dict[str, Any] = {}
        for key, value in schema.items():
            self._keyword(out, key, value, inlining)
        self._types(out, schema.get("type"))
        if "const" in schema and "enum" not in out:
            out["enum"] = [schema["const"]]
        return out

    def _reference(
        self, ref: str, schema: Mapping[str, Any], inlining: tuple[str, ...]
    ) -> dict[str, Any] | None:
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        if ref in self._defs:
            if ref in inlining or len(inlining) >= _MAX_INLINE_DEPTH:
                return {}  # a recursive definition: described as any value
            target = self.convert(self._defs[ref], (*inlining, ref))
            if siblings.keys() <= _ANNOTATIONS:
                return {**target, **self.convert(siblings, inlining)}
            return {"allOf": [target], **self.convert(siblings, inlining)}
        if not self._strict and ref.startswith("#/components/"):
            if siblings:  # 3.0 ignores a reference's siblings: keep them beside it
                return {"allOf": [{"$ref": ref}], **self.convert(siblings, inlining)}
            return {"$ref": ref}
        if self._strict and not siblings:
            return {"$ref": ref}  # OGC's reference.yaml: any URI reference
        return None

    def _keyword(
        self, out: dict[str, Any], key: str, value: Any, inlining: tuple[str, ...]
    ) -> None:
        sub = self.convert
        if key == "properties" and isinstance(value, Mapping):
            out[key] = {str(name): sub(s, inlining) for name, s in value.items()}
        elif key in ("allOf", "oneOf", "anyOf") and isinstance(value, list):
            self._combination(out, key, [sub(s, inlining) for s in value], value)
        elif key in ("not", "items") and isinstance(value, Mapping | bool):
            out[key] = sub(value, inlining)
        elif key == "additionalProperties":
            out[key] = value if isinstance(value, bool) else sub(value, inlining)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            _exclusive(out, key, value)
        elif key == "examples" and isinstance(value, list) and value:
            out.setdefault("example", value[0])
        elif key in ("required", "enum"):
            if isinstance(value, list) and value:
                out[key] = list(dict.fromkeys(value)) if key == "required" else list(value)
        elif key == "type" or (key in ("minimum", "maximum") and key in out):
            pass  # types are read after the loop; an exclusive bound already set its bound
        elif key in _KEEP or (not self._strict and (key in _DOCUMENT_ONLY or key.startswith("x-"))):
            out[key] = value

    def _combination(
        self, out: dict[str, Any], key: str, converted: list[dict[str, Any]], raw: list[Any]
    ) -> None:
        nulls = [isinstance(s, Mapping) and s.get("type") == "null" for s in raw]
        kept = [s for s, null in zip(converted, nulls, strict=True) if not null]
        if any(nulls):
            out["nullable"] = True
        if len(kept) == 1 and key != "allOf" and any(nulls):
            only = kept[0]
            if "$ref" in only:
                out["allOf"] = [only]
            else:
                for k, v in only.items():
                    out.setdefault(k, v)
        elif kept:
            out[key] = kept

    def _types(self, out: dict[str, Any], declared: Any) -> None:
        names = [declared] if isinstance(declared, str) else declared
        if not isinstance(names, list):
            return
        if "null" in names:
            out["nullable"] = True
        types = [t for t in names if t in _TYPES]
        if "number" in types and "integer" in types:
            types.remove("integer")  # an integer is a number: oneOf would match both
        if len(types) == 1:
            out["type"] = types[0]
        elif len(types) > 1:
            # A value of mixed type: OGC's process descriptions use oneOf, first the default.
            choice = [{"type": t} for t in types]
            if "oneOf" in out:
                out["allOf"] = [*out.get("allOf", []), {"oneOf": choice}]
            else:
                out["oneOf"] = choice


def _exclusive(out: dict[str, Any], key: str, value: Any) -> None:
    """2020-12's numeric exclusive bound to 3.0's bound with a boolean flag."""
    if isinstance(value, bool):
        out[key] = value
    elif isinstance(value, int | float):
        out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
        out[key] = True
