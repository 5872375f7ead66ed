"""Who is calling: JWT validation with PyJWT, and the caller's rights.

Tokens come as ``Authorization: Bearer <token>`` or, as the old gateway took them, as the raw
token in ``Authorization``. The algorithm is pinned to the configured allow-list (one family),
``exp`` is required, ``aud`` and ``iss`` are checked when configured, and ``sub`` names the
owner of the caller's jobs. A token without ``sub`` (the old gateway minted no ``sub``) is
accepted only with ``SG_LEGACY_TOKENS=true``, as the configured legacy owner.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from gateway.errors import Forbidden, Unauthorized
from gateway.settings import Settings

log = logging.getLogger("gateway.auth")

ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    subject: str
    scopes: frozenset[str]
    admin: bool
    legacy: bool = False
    expires: float | None = None  # the token's exp, seconds since the epoch

    def remaining(self) -> float | None:
        """Seconds until the caller's token expires (``None``: it does not)."""
        return None if self.expires is None else self.expires - time.time()

    def sees(self, owner: str) -> bool:
        """Whether this caller may see (and act on) a job of ``owner``."""
        return self.admin or owner == self.subject

    def require(self, scopes: Iterable[str]) -> None:
        """Raise :class:`Forbidden` unless every scope is held (admins hold all)."""
        missing = sorted(set(scopes) - self.scopes)
        if missing and not self.admin:
            raise Forbidden(f"this process needs the scope(s) {', '.join(missing)}")


# Tokens verified lately are kept this long at most (and never past their exp), this many.
VERIFIED_TTL = 60.0
# The latest expiry taken (9000-01-01T00:00:00Z): a session's cookie and an event stream's
# bound turn it into a date, which Python's datetime holds up to the year 9999.
MAX_EXPIRY = 221_845_392_000.0
VERIFIED_MAX = 1024


class AuthConfigError(ValueError):
    """The settings cannot authenticate anyone (a missing or mismatched key)."""


def _family(algorithm: str) -> str | None:
    for prefix in ("HS", "RS", "PS", "ES"):
        if algorithm in {f"{prefix}256", f"{prefix}384", f"{prefix}512"}:
            return prefix
    return "EdDSA" if algorithm == "EdDSA" else None


def check_auth_settings(settings: Settings) -> None:
    """Raise :class:`AuthConfigError` unless the settings can validate tokens.

    Run by the gateway at start and by ``sgw check``; workers never need a key.
    """
    if settings.auth_disabled:
        return
    families = {_family(a) for a in settings.jwt_algorithms}
    if not settings.jwt_algorithms or None in families:
        raise AuthConfigError(
            f"SG_JWT_ALGORITHMS {list(settings.jwt_algorithms)}: use HS256/384/512, "
            "RS256/384/512, PS256/384/512, ES256/384/512 or EdDSA"
        )
    if len(families) > 1:
        raise AuthConfigError("SG_JWT_ALGORITHMS mixes families; a key serves one family only")
    if families == {"HS"}:
        if settings.jwt_secret is None:
            raise AuthConfigError(
                "HS* tokens need SG_JWT_SECRET (or set SG_AUTH_DISABLED=true for development)"
            )
    elif settings.jwt_public_key is None and settings.jwks_url is None:
        raise AuthConfigError(
            f"{settings.jwt_algorithms[0]} tokens need SG_JWT_PUBLIC_KEY or SG_JWKS_URL"
        )


def _scopes(claims: dict[str, Any], claim: str) -> frozenset[str]:
    value = claims.get(claim)
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(str(v) for v in value)
    return frozenset()


def load_key(settings: Settings) -> str | bytes | None:
    """The verification key of the settings: the HMAC secret or the PEM public key."""
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value()
        return base64.b64decode(secret) if settings.jwt_secret_base64 else secret.encode()
    if settings.jwt_public_key is not None:
        text = settings.jwt_public_key
        return text if text.lstrip().startswith("-----BEGIN") else Path(text).read_text()
    return None


class Authenticator:
    """Validates tokens against the settings; built once per application."""

    def __init__(self, settings: Settings) -> None:
        check_auth_settings(settings)
        self._settings = settings
        self._key = None if settings.auth_disabled else load_key(settings)
        self._jwks = (
            jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300, timeout=5)
            if settings.jwks_url and not settings.auth_disabled
            else None
        )
        required = ["exp"]
        if not settings.legacy_tokens:
            required.append("sub")
        if settings.jwt_audience:
            required.append("aud")
        if settings.jwt_issuer:
            required.append("iss")
        self._options: Any = {"require": required, "verify_aud": bool(settings.jwt_audience)}
        self._verified: dict[str, tuple[Principal, float]] = {}  # token: (caller, until)

    @property
    def disabled(self) -> bool:
        return self._settings.auth_disabled

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a request with this ``Authorization`` header, or 401.

        A token verified lately is not verified again (a client sends the same token with
        every request, and its verification was a tenth of a status read): it serves until
        its ``exp`` (with the leeway, the bound the verification itself applies) and at most
        ``VERIFIED_TTL`` seconds, so that a signing key withdrawn from the JWKS stops being
        trusted within that time.
        """
        if self._settings.auth_disabled:
            return Principal(subject=ANONYMOUS, scopes=frozenset(), admin=True)
        token = _token(authorization)
        if len(token) > self._settings.jwt_max_bytes:
            raise Unauthorized("the token is too long", error="invalid_token")
        now = time.time()
        known = self._verified.get(token)
        if known is not None:
            if now < known[1]:
                return known[0]
            del self._verified[token]
        principal = await self._verify(token)
        until = now + VERIFIED_TTL
        if principal.expires is not None:
            until = min(until, principal.expires)
        while len(self._verified) >= VERIFIED_MAX:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[token] = (principal, until)
        return principal

    async def _verify(self, token: str) -> Principal:
        key = self._key
        try:
            if self._jwks is not None:
                # PyJWKClient fetches with urllib (blocking); its cache makes this rare.
                signing = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
                key = signing.key
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key or "",
                algorithms=list(self._settings.jwt_algorithms),
                audience=self._settings.jwt_audience,
                issuer=self._settings.jwt_issuer,
                leeway=self._settings.jwt_leeway,
                options=self._options,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the token has expired", error="invalid_token") from exc
        except jwt.PyJWKClientConnectionError as exc:
            log.warning("JWKS endpoint unreachable: %s", exc)
            raise Unauthorized("the signing keys cannot be fetched", error="invalid_token") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}", error="invalid_token") from exc
        subject = claims.get("sub")
        legacy = subject is None
        if legacy:
            subject = self._settings.legacy_owner
        if not isinstance(subject, str) or not subject or not _encodable(subject):
            raise Unauthorized(
                "the token's sub must be a non-empty string of valid Unicode", error="invalid_token"
            )
        scopes = _scopes(claims, self._settings.scope_claim)
        return Principal(
            subject=subject,
            scopes=scopes,
            admin=self._settings.admin_scope in scopes,
            legacy=legacy,
            expires=_expiry(claims.get("exp"), self._settings.jwt_leeway),
        )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no store keeps it as an owner
        return False
    return True


def _expiry(exp: object, leeway: float) -> float | None:
    """When a token stops being accepted: its ``exp`` (a JSON number, RFC 7519's NumericDate)
    plus the leeway; a token without one never expires. PyJWT also takes a numeric string,
    and any size of number: both are refused here, as no time."""
    if exp is None:
        return None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise Unauthorized("the token's exp must be a number", error="invalid_token")
    try:
        at = float(exp) + leeway
    except OverflowError:
        at = math.inf
    if not math.isfinite(at) or at > MAX_EXPIRY:
        raise Unauthorized("the token's exp is past any date", error="invalid_token")
    return at


def _token(authorization: str | None) -> str:
    if not authorization or not authorization.strip():
        raise Unauthorized("this route needs a token: Authorization: Bearer <JWT>")
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        token = rest.strip()
    elif not rest:
        token = scheme  # the old gateway's raw token
    else:
        raise Unauthorized(f"unsupported authorization scheme {scheme!r}", error="invalid_request")
    if not token:
        raise Unauthorized("the bearer token is empty", error="invalid_request")
    return token


def mint_token(
    settings: Settings,
    *,
    subject: str | None,
    scopes: Iterable[str] = (),
    lifetime: float = 3600,
    private_key: str | None = None,
    algorithm: str | None = None,
) -> str:
    """A token the gateway will accept: HS* with the configured secret, or RS*/ES*/EdDSA with
    ``private_key`` (PEM). For development, tests and scripts (``sgw token``)."""
    algorithm = algorithm or settings.jwt_algorithms[0]
    now = int(time.time())
    claims: dict[str, Any] = {"iat": now, "exp": now + int(lifetime)}
    if subject is not None:
        claims["sub"] = subject
    scopes = list(scopes)
    if scopes:
        claims[settings.scope_claim] = " ".join(scopes)
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if algorithm.startswith("HS"):
        key: str | bytes | None = load_key(settings)
        if key is None:
            raise ValueError("no SG_JWT_SECRET to sign with")
    else:
        if private_key is None:
            raise ValueError(f"{algorithm} tokens are signed with a private key (--private-key)")
        key = private_key
    return jwt.encode(claims, key, algorithm=algorithm)
