"""Verified tokens are remembered, never past their exp nor for long."""

from __future__ import annotations

import time

import pytest

from gateway import auth
from gateway.auth import VERIFIED_TTL, Authenticator, Principal, mint_token
from gateway.errors import Unauthorized
from gateway.settings import Settings

SECRET = "a-test-secret-that-is-long-enough-for-hs256!"


def _settings() -> Settings:
    return Settings(_env_file=None, jwt_secret=SECRET, jwt_leeway=0)  # type: ignore[call-arg]


class Counting(Authenticator):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.verified = 0

    async def _verify(self, token: str) -> Principal:
        self.verified += 1
        return await super()._verify(token)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


async def test_a_token_is_verified_once_until_its_exp(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(auth, "time", clock)
    settings = _settings()
    authenticator = Counting(settings)
    token = mint_token(settings, subject="ann", lifetime=30)
    first = await authenticator.authenticate(f"Bearer {token}")
    again = await authenticator.authenticate(f"Bearer {token}")
    assert again is first
    assert first.subject == "ann"
    assert authenticator.verified == 1
    assert first.expires is not None
    # At its exp the token is verified again (PyJWT's own clock then decides).
    clock.now = first.expires
    await authenticator.authenticate(f"Bearer {token}")
    assert authenticator.verified == 2


async def test_a_remembered_token_is_verified_again_after_the_ttl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(auth, "time", clock)
    settings = _settings()
    authenticator = Counting(settings)
    token = mint_token(settings, subject="ann", lifetime=3600)
    await authenticator.authenticate(f"Bearer {token}")
    clock.now += VERIFIED_TTL - 1
    await authenticator.authenticate(f"Bearer {token}")
    assert authenticator.verified == 1
    clock.now += 1
    await authenticator.authenticate(f"Bearer {token}")
    assert authenticator.verified == 2


async def test_a_refused_token_is_not_remembered() -> None:
    authenticator = Counting(_settings())
    other = Settings(_env_file=None, jwt_secret="another-secret-long-enough-for-hs256!!")  # type: ignore[call-arg]
    forged = mint_token(other, subject="eve")
    for _ in range(2):
        with pytest.raises(Unauthorized):
            await authenticator.authenticate(f"Bearer {forged}")
    assert authenticator.verified == 2
