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

import math
import re
from collections.abc import Iterable, Iterator
from contextlib import suppress
from contextvars import ContextVar
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from gateway.errors import FieldError, InvalidInput
from worker_sdk.wire.catalogue import Catalogue, ServiceSpec
from worker_sdk.wire.urls import UrlPolicy, UrlRefused, check_urls
from worker_sdk.wire.values import check_value

_seen_urls: ContextVar[list[str] | None] = ContextVar("seen_urls", default=None)


def _paths_of(value: Any, target: str, path: str) -> Iterator[str]:
    if value == target:
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _paths_of(item, target, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths_of(item, target, f"{path}/{index}")


# The text pydantic's lax mode takes for a boolean (a worker's generated model reads so).
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_INTEGER = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*", re.ASCII)


def _as_scalar(text: str, wanted: object) -> Any:
    """``text`` as the first scalar type of ``wanted`` (a schema's ``type``) that it spells, a
    string being kept first; else ``text`` itself, for the schema to judge."""
    types = [wanted] if isinstance(wanted, str) else wanted if isinstance(wanted, list) else []
    if "string" in types:
        return text
    spelled = text.strip().lower()
    for kind in types:
        if kind == "boolean" and (spelled in _TRUE or spelled in _FALSE):
            return spelled in _TRUE
        if kind == "integer" and _INTEGER.fullmatch(spelled) and len(spelled) <= 4300:
            return int(spelled)
        if kind == "number":
            with suppress(ValueError):
                number = float(spelled)
                if math.isfinite(number):
                    return number
    return text


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
            if isinstance(value, str):
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
        await self._check(spec, inputs, inputs, "/inputs")

    async def check_legacy(self, spec: ServiceSpec, misc: dict[str, Any]) -> None:
        """:meth:`check` for the ``misc`` of an old route, whose parameters are all text: a
        top-level string is taken, as the worker's model takes it, where the schema wants a
        number, an integer or a boolean it spells (``delay=5``, ``fast=true``)."""
        properties = spec.inputs.get("properties")
        view = dict(misc)
        if isinstance(properties, dict):
            for name, value in misc.items():
                schema = properties.get(name)
                if isinstance(value, str) and isinstance(schema, dict):
                    view[name] = _as_scalar(value, schema.get("type"))
        await self._check(spec, view, misc, "/misc")

    async def _check(
        self, spec: ServiceSpec, view: dict[str, Any], inputs: dict[str, Any], root: str
    ) -> None:
        self.check_bounds(inputs, root=root)
        token = _seen_urls.set([])
        try:
            problems = sorted(
                self._validators[spec.id].iter_errors(view), key=lambda e: list(e.path)
            )
            urls = list(_seen_urls.get() or [])
        finally:
            _seen_urls.reset(token)
        errors = [
            FieldError(
                path="/".join([root, *(str(p) for p in e.path)]),
                message=f"{e.message}: {e.cause}" if e.cause else e.message,
            )
            for e in problems
        ]
        if urls and not errors:
            for url, refusal in (await self.check_urls(urls)).items():
                errors.extend(
                    FieldError(path=path, message=str(refusal))
                    for path in _paths_of(inputs, url, root)
                )
        if errors:
            raise _invalid(errors, "the inputs do not match the process's schema")

    async def check_urls(self, urls: Iterable[str]) -> dict[str, UrlRefused]:
        """The whole policy for each URL (shape, scheme, resolved addresses), concurrently and
        within the per-request caps; the refusals by URL."""
        refused: dict[str, UrlRefused] = {}
        resolvable = []
        for url in dict.fromkeys(urls):
            try:
                self.policy.check_literal(url)
                resolvable.append(url)
            except UrlRefused as exc:
                refused[url] = exc
        refused.update(
            await check_urls(
                self.policy,
                resolvable,
                limit=self._max_urls,
                deadline=self._url_deadline,
                unresolvable=True,
            )
        )
        return refused
