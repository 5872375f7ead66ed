"""Validation of job inputs: the service's JSON Schema, and the URL policy on ``format: uri``.

A URI input is checked twice here: its shape, scheme and any literal address while the schema
is validated, then — for a host name — the addresses it resolves to. A name that does not
resolve from the gateway is left to the worker, which checks again when it connects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from gateway.catalogue import Catalogue, ServiceSpec
from gateway.errors import FieldError, InvalidInput
from worker_sdk import UrlPolicy, UrlRefused

_seen_urls: ContextVar[list[str] | None] = ContextVar("seen_urls", default=None)


def _paths_of(value: Any, target: str, path: str = "/inputs") -> Iterator[str]:
    if value == target:
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _paths_of(item, target, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths_of(item, target, f"{path}/{index}")


class InputChecker:
    """Validates the inputs of each service of the catalogue."""

    def __init__(self, catalogue: Catalogue, policy: UrlPolicy) -> None:
        self.policy = policy
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

    async def check(self, spec: ServiceSpec, inputs: dict[str, Any]) -> None:
        """Raise :class:`InvalidInput` naming every failing path."""
        token = _seen_urls.set([])
        try:
            problems = sorted(
                self._validators[spec.id].iter_errors(inputs), key=lambda e: list(e.path)
            )
            urls = list(_seen_urls.get() or [])
        finally:
            _seen_urls.reset(token)
        errors = [
            FieldError(
                path="/inputs/" + "/".join(str(p) for p in e.path),
                message=f"{e.message}: {e.cause}" if e.cause else e.message,
            )
            for e in problems
        ]
        if not errors:
            for url in urls:
                try:
                    await self.check_resolved(url)
                except UrlRefused as exc:
                    errors.extend(
                        FieldError(path=path, message=str(exc)) for path in _paths_of(inputs, url)
                    )
        if errors:
            detail = "; ".join(f"{e.path}: {e.message}" for e in errors)
            raise InvalidInput(
                f"the inputs do not match the process's schema: {detail}", errors=errors
            )

    async def check_url(self, url: str) -> None:
        """The whole policy for one URL (legacy ``doc_url`` and ``*_url`` parameters)."""
        self.policy.check_literal(url)
        await self.check_resolved(url)

    async def check_resolved(self, url: str) -> None:
        _, host, port = self.policy.split(url)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror:
            return  # unresolvable here; the worker checks again where it connects
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        self.policy.check_resolved(host, addresses)
