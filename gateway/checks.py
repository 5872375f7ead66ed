"""What ``sgw check`` (and the gateway at start) warns about in a configuration that works.

These are not errors — the gateway runs — but each one is a trap: a JWT secret anyone could
guess, or a service whose id is also the first segment of one of the gateway's own routes
(``/jobs``, ``/processes``, ``/docs``...), which shadows its old-style routes.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Route

from gateway.settings import Settings
from worker_sdk.wire.catalogue import Catalogue

MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key of at least 256 bits
PLACEHOLDERS = ("change-me", "changeme", "secret", "password", "example", "test")


def secret_warnings(settings: Settings) -> list[str]:
    """A JWT secret that is short or reads like a placeholder."""
    if settings.jwt_secret is None or settings.auth_disabled:
        return []
    secret = settings.jwt_secret.get_secret_value()
    warnings = []
    size = len(secret) * 3 // 4 if settings.jwt_secret_base64 else len(secret.encode())
    if size < MIN_SECRET_BYTES:
        warnings.append(
            f"SG_JWT_SECRET is {size} bytes: use at least {MIN_SECRET_BYTES} random bytes "
            "(python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    if any(word in secret.lower() for word in PLACEHOLDERS):
        warnings.append("SG_JWT_SECRET looks like a placeholder: anyone could mint tokens")
    return warnings


def reserved_segments(app: FastAPI) -> set[str]:
    """The first path segments of the gateway's own fixed routes."""
    segments = set()
    for route in app.routes:
        if isinstance(route, APIRoute | Route):
            first = route.path.strip("/").split("/", 1)[0]
            if first and not first.startswith("{"):
                segments.add(first)
    return segments


def route_warnings(app: FastAPI, catalogue: Catalogue) -> list[str]:
    """Services whose id is also one of the gateway's route segments."""
    reserved = reserved_segments(app)
    return [
        f"service {spec.id!r} shares its id with the gateway's /{spec.id} routes: its old-style "
        f"routes (/{spec.id}/process, /{spec.id}/info...) are shadowed; rename it"
        for spec in catalogue
        if spec.id in reserved
    ]
