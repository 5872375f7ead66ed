from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`(SG_[A-Z_]+)`", text))
    expected = {f"SG_{name.upper()}" for name in Settings.model_fields}
    assert expected - documented == set(), "settings missing from docs/configuration.md"
    assert documented - expected == set(), "docs/configuration.md names settings that do not exist"


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_NAMESPACE", "prod-eu")
    monkeypatch.setenv("SG_PUBLISH_TIMEOUT", "2.5")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.namespace == "prod-eu"
    assert settings.publish_timeout == 2.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SG_AMQP_URL", "http://localhost"),
        ("SG_STORE_URL", "postgres://x"),
        ("SG_NAMESPACE", "has spaces"),
        ("SG_PUBLISH_TIMEOUT", "0"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings(_env_file=None)  # type: ignore[call-arg]
