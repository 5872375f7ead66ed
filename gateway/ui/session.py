"""Who is using the dashboard: a signed-in token kept in a cookie, and CSRF-safe forms.

Signing in posts a token (the same JWTs as the API's bearer tokens, verified by
:class:`gateway.auth.Authenticator` on every request: expiry, signature, scopes). The token is
kept in an ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page sends
it) cookie scoped to ``/ui`` (under the gateway's public path), ``Secure`` when the gateway is
reached over HTTPS, and lives no longer than the token.

Every form that changes something (sign in and out, submit, dismiss) is checked twice:
the double-submit token (a random value in an ``HttpOnly`` cookie, repeated in a hidden field
of the form the gateway rendered; a page of another origin can read neither) and, when the
browser sends one, the ``Origin`` header, which must be the gateway's own.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Form, Request, Response

from gateway.auth import Principal
from gateway.errors import Forbidden, GatewayError, Unauthorized
from gateway.runtime import Runtime, base_url, public_path

SESSION_COOKIE = "sg_session"
CSRF_COOKIE = "sg_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
COOKIE_PATH = "/ui"  # under public_path(request)
CSRF_LIFETIME = 12 * 3600


class SignInRequired(GatewayError):
    """No valid session: pages redirect to the sign-in form, fragments say 401."""

    status = 401
    code = "unauthorized"
    title = "Sign in"


class CsrfRejected(Forbidden):
    """A form without the gateway's own CSRF token, or posted from another origin."""


@dataclass(frozen=True, slots=True)
class Session:
    """The dashboard's caller and the CSRF token its forms carry."""

    principal: Principal
    csrf: str


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.state.runtime
    return runtime


def csrf_token(request: Request) -> str:
    """The browser's CSRF token, or a new one (set on the response by :func:`remember_csrf`)."""
    token = request.cookies.get(CSRF_COOKIE)
    if token and 20 <= len(token) <= 100:
        return token
    fresh: str | None = getattr(request.state, "new_csrf", None)
    if fresh is None:
        fresh = secrets.token_urlsafe(32)
        request.state.new_csrf = fresh
    return fresh


def _secure(request: Request, base: str) -> bool:
    return urlsplit(base).scheme == "https" or request.url.scheme == "https"


async def remember_csrf(request: Request, response: Response) -> None:
    """Set the CSRF cookie if this request made a new token."""
    fresh: str | None = getattr(request.state, "new_csrf", None)
    if fresh is not None:
        response.set_cookie(
            CSRF_COOKIE,
            fresh,
            max_age=CSRF_LIFETIME,
            path=_cookie_path(request),
            httponly=True,
            samesite="strict",
            secure=_secure(request, await base_url(request)),
        )


async def principal_of(request: Request) -> Principal:
    """The signed-in caller, or :class:`SignInRequired` (no cookie, or its token no longer
    verifies: expired, revoked key, ...). With authentication disabled, the anonymous admin."""
    auth = _runtime(request).auth
    if auth.disabled:
        return await auth.authenticate(None)
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired("sign in with a token to use the dashboard")
    try:
        return await auth.authenticate(f"Bearer {token}")
    except Unauthorized as exc:
        raise SignInRequired(exc.detail) from exc


async def session(request: Request) -> Session:
    return Session(principal=await principal_of(request), csrf=csrf_token(request))


async def check_origin(request: Request) -> None:
    """Refuse a form posted from another origin (``Origin``, or ``Sec-Fetch-Site``)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise CsrfRejected("this form was posted from another site")
    origin = request.headers.get("origin")
    if origin is None:
        return
    own = {_origin(str(request.base_url)), _origin(await base_url(request))}
    if origin not in own:
        raise CsrfRejected(f"this form was posted from {origin}, not from this gateway")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def checked_form(
    request: Request, csrf: Annotated[str | None, Form(alias=CSRF_FIELD)] = None
) -> None:
    """A state-changing form: same origin, and the double-submit token matches."""
    await check_origin(request)
    sent = csrf or request.headers.get(CSRF_HEADER) or ""
    expected = request.cookies.get(CSRF_COOKIE) or ""
    if not expected or not secrets.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRejected("the form's CSRF token is missing or stale: reload the page")


async def sign_in(request: Request, response: Response, principal: Principal, token: str) -> None:
    """Keep the verified ``token`` in the session cookie for as long as it is valid."""
    remaining = principal.remaining()
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=None if remaining is None else max(1, int(remaining)),
        # A date: Starlette reads a number as seconds from now, not as a time.
        expires=None if remaining is None else datetime.now(UTC) + timedelta(seconds=remaining),
        path=_cookie_path(request),
        httponly=True,
        samesite="strict",
        secure=_secure(request, await base_url(request)),
    )


def sign_out(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path=_cookie_path(request), httponly=True, samesite="strict"
    )


def _cookie_path(request: Request) -> str:
    """The dashboard's path as the browser sees it: the cookies go to it alone."""
    return public_path(request) + COOKIE_PATH


SessionDep = Annotated[Session, Depends(session)]
CheckedForm = Annotated[None, Depends(checked_form)]
