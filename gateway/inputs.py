"""Validation of job inputs: their bounds, the service's JSON Schema, and the URL policy.

Everything that could fail later is refused here, before the job exists: values no store or
broker can carry (see :mod:`worker_sdk.wire.values`), schema mismatches, and URLs the policy
forbids. A URI input (``format: uri``) is checked for its shape, scheme and literal address
while the schema is validated, then — for a host name — for the addresses it resolves to. A
name that does not resolve from the gateway is left to the worker, which checks again when it
connects. Lookups run concurrently, capped in number and in total time per request, so a
request full of URLs cannot hold the gateway.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import suppress
from contextvars import ContextVar
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from pydantic import TypeAdapter, ValidationError

from gateway.errors import FieldError, InvalidInput
from worker_sdk.wire.catalogue import Catalogue, ServiceSpec
from worker_sdk.wire.schema_loops import at, local_ref
from worker_sdk.wire.urls import UrlPolicy, UrlRefused, check_urls
from worker_sdk.wire.values import check_value

_seen_urls: ContextVar[list[str] | None] = ContextVar("seen_urls", default=None)
# URLs of the request the policy has judged already, or the gateway's own.
_trusted: ContextVar[frozenset[str]] = ContextVar("trusted_urls", default=frozenset())


def _paths_of(value: Any, target: str, path: str) -> Iterator[str]:
    if value == target:
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _paths_of(item, target, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths_of(item, target, f"{path}/{index}")


# How a worker's generated (pydantic) model reads text where it wants each scalar type.
_SCALARS: dict[str, TypeAdapter[Any]] = {
    "integer": TypeAdapter(int),
    "number": TypeAdapter(float),
    "boolean": TypeAdapter(bool),
}
# Longer text spells no scalar worth parsing (a 64-bit integer takes 20 characters).
_SCALAR_TEXT = 64
# References followed from one property's schema at most (a definition may name itself).
_REF_DEPTH = 8
# Characters of a value a refusal repeats: jsonschema's messages hold the whole value.
_MESSAGE = 300


def _types(schema: object, root: Mapping[str, Any], depth: int = 0) -> list[str]:
    """The types a property's schema names: its own ``type``, its ``anyOf``, ``oneOf`` and
    ``allOf`` branches', and those of the definitions its local ``$ref`` names (within
    ``root``, the inputs schema)."""
    if not isinstance(schema, dict) or depth > _REF_DEPTH:
        return []
    wanted = schema.get("type")
    found = [wanted] if isinstance(wanted, str) else list(_listed(wanted))
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in _listed(schema.get(key)):
            found.extend(_types(branch, root, depth + 1))
    target = local_ref(schema.get("$ref"))
    if target is not None:
        found.extend(_types(at(root, target), root, depth + 1))
    return [t for t in found if isinstance(t, str)]


def _listed(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_scalar(text: str, schema: dict[str, Any], root: Mapping[str, Any]) -> Any:
    """``text`` as the worker's model reads it where the schema wants a number, an integer
    or a boolean (a string being kept first); else ``text`` itself, for the schema to judge."""
    types = _types(schema, root)
    if "string" in types or len(text) > _SCALAR_TEXT:
        return text
    for kind in types:
        if (adapter := _SCALARS.get(kind)) is not None:
            with suppress(ValidationError):
                return adapter.validate_python(text)
    return text


def _brief(text: str) -> str:
    return text if len(text) <= _MESSAGE else text[: _MESSAGE - 1] + "…"


def _invalid(errors: list[FieldError], what: str) -> InvalidInput:
    detail = "; ".join(f"{e.path}: {e.message}" for e in errors)
    return InvalidInput(f"{what}: {detail}", errors=errors)


class InputChecker:
    """Validates the inputs of each service of the catalogue."""

    def __init__(
        self,
        catalogue: Catalogue,
        policy: UrlPolicy,
        *,
        max_depth: int,
        max_urls: int,
        url_deadline: float,
    ) -> None:
        self.policy = policy
        self._max_depth = max_depth
        self._max_urls = max_urls
        self._url_deadline = url_deadline
        checker = FormatChecker()

        @checker.checks("uri", raises=UrlRefused)
        def uri(value: object) -> bool:
            if isinstance(value, str) and value not in _trusted.get():
                policy.check_literal(value)
                seen = _seen_urls.get()
                if seen is not None:
                    seen.append(value)
            return True

        self._validators = {
            spec.id: Draft202012Validator(dict(spec.inputs), format_checker=checker)
            for spec in catalogue
        }

    def check_bounds(self, value: Any, root: str = "/inputs") -> None:
        """Raise :class:`InvalidInput` for values no broker or store can carry."""
        problems = check_value(value, root=root, max_depth=self._max_depth)
        if problems:
            errors = [FieldError(path=p.path, message=p.message) for p in problems]
            raise _invalid(errors, "the inputs cannot be carried")

    async def check(self, spec: ServiceSpec, inputs: dict[str, Any]) -> None:
        """Raise :class:`InvalidInput` naming every failing path."""
        await self._check(spec, inputs, "/inputs")

    async def check_legacy(
        self,
        spec: ServiceSpec,
        misc: dict[str, Any],
        *,
        checked: Collection[str] = (),
        own: Collection[str] = (),
    ) -> None:
        """:meth:`check` for the ``misc`` of an old route, whose parameters are all text: a
        top-level string is read as the worker's model reads it where the schema wants a
        number, an integer or a boolean (``delay=5``, ``fast=true``). ``checked``: the URLs
        the route has checked against the policy (counted in its limit); ``own``: the
        gateway's own (the upload and storage URLs its settings give), which the policy does
        not judge."""
        properties = spec.inputs.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        if (
            spec.inputs.get("additionalProperties") is False
            and not spec.inputs.get("patternProperties")
            and not {"doc_url", "upload_url"} <= set(properties)
        ):
            message = (
                "its inputs take no property but those its schema names, and the old routes "
                "always add doc_url and upload_url"
            )
            raise _invalid(
                [FieldError(path="/misc", message=message)],
                f"the {spec.id!r} service cannot be called on the old routes",
            )
        view = dict(misc)
        for name, value in misc.items():
            schema = properties.get(name)
            if isinstance(value, str) and isinstance(schema, dict):
                view[name] = _as_scalar(value, schema, spec.inputs)
        skip = frozenset(checked) | frozenset(own)
        await self._check(spec, view, "/misc", skip=skip, counted=len(set(checked)))

    async def _check(
        self,
        spec: ServiceSpec,
        inputs: dict[str, Any],
        root: str,
        *,
        skip: frozenset[str] = frozenset(),
        counted: int = 0,
    ) -> None:
        """The bounds (an integer read from text among them: past 64 bits it would reach
        jsonschema's arithmetic), the schema, then the URLs the schema names (but ``skip``),
        within the request's limit less the ``counted`` already checked."""
        self.check_bounds(inputs, root=root)
        seen = _seen_urls.set([])
        passed = _trusted.set(skip)
        try:
            problems = sorted(
                self._validators[spec.id].iter_errors(inputs), key=lambda e: list(e.path)
            )
            urls = list(_seen_urls.get() or [])
        finally:
            _trusted.reset(passed)
            _seen_urls.reset(seen)
        errors = [
            FieldError(
                path="/".join([root, *(str(p) for p in e.path)]),
                message=_brief(f"{e.message}: {e.cause}" if e.cause else e.message),
            )
            for e in problems
        ]
        if urls and not errors:
            for url, refusal in (await self.check_urls(urls, counted=counted)).items():
                errors.extend(
                    FieldError(path=path, message=str(refusal))
                    for path in _paths_of(inputs, url, root)
                )
        if errors:
            raise _invalid(errors, "the inputs do not match the process's schema")

    async def check_urls(self, urls: Iterable[str], *, counted: int = 0) -> dict[str, UrlRefused]:
        """The whole policy for each URL (shape, scheme, resolved addresses), concurrently and
        within the per-request caps (less the ``counted`` URLs of the request checked
        already); the refusals by URL."""
        refused: dict[str, UrlRefused] = {}
        resolvable = []
        distinct = list(dict.fromkeys(urls))
        if distinct and counted + len(distinct) > self._max_urls:
            too_many = UrlRefused(f"more than {self._max_urls} URLs in one request")
            return dict.fromkeys(distinct, too_many)
        for url in distinct:
            try:
                self.policy.check_literal(url)
                resolvable.append(url)
            except UrlRefused as exc:
                refused[url] = exc
        refused.update(
            await check_urls(
                self.policy,
                resolvable,
                limit=self._max_urls - counted,
                deadline=self._url_deadline,
                unresolvable=True,
            )
        )
        return refused
