from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.auth import AuthConfigError, check_auth_settings
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`((?:SG|PROMETHEUS)_[A-Z0-9_]+)`", text))
    expected = {
        str(field.validation_alias) if field.validation_alias else f"SG_{name.upper()}"
        for name, field in Settings.model_fields.items()
    }
    assert expected - documented == set(), "settings missing from docs/configuration.md"
    assert documented - expected == set(), "docs/configuration.md names settings that do not exist"


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_JWT_SECRET", "s" * 32)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_NAMESPACE", "prod-eu")
    monkeypatch.setenv("SG_PUBLISH_TIMEOUT", "2.5")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.namespace == "prod-eu"
    assert settings.publish_timeout == 2.5


def test_an_empty_value_leaves_unset_what_may_be_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SG_MAX_ACTIVE_JOBS", "SG_SUBMIT_RATE", "SG_JWT_AUDIENCE", "SG_WEBHOOK_SECRET"):
        monkeypatch.setenv(name, "")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.max_active_jobs is None
    assert settings.submit_rate is None
    assert settings.jwt_audience is None
    assert not settings.webhooks_enabled
    monkeypatch.setenv("SG_PUBLISH_TIMEOUT", "")  # one with a value of its own: still refused
    with pytest.raises(ValidationError):
        Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SG_AMQP_URL", "http://localhost"),
        ("SG_STORE_URL", "postgres://x"),
        ("SG_NAMESPACE", "has spaces"),
        ("SG_PUBLISH_TIMEOUT", "0"),
        ("SG_URL_ALLOW_NETWORKS", "not-a-network"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SG_JWT_ALGORITHMS": "none"}, "use HS256"),
        ({"SG_JWT_ALGORITHMS": "HS256,RS256"}, "mixes families"),
        ({"SG_JWT_ALGORITHMS": "RS256"}, "SG_JWT_PUBLIC_KEY or SG_JWKS_URL"),
        ({"SG_JWT_SECRET": ""}, "SG_JWT_SECRET"),
    ],
)
def test_the_gateway_refuses_settings_that_cannot_authenticate(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        if value:
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]  # workers need no key
    with pytest.raises(AuthConfigError, match=message):
        check_auth_settings(settings)


def test_auth_can_be_switched_off_only_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SG_JWT_SECRET")
    monkeypatch.setenv("SG_AUTH_DISABLED", "true")
    check_auth_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    monkeypatch.setenv("SG_JWKS_URL", "https://idp.example.org/jwks.json")
    monkeypatch.setenv("SG_AUTH_DISABLED", "false")
    monkeypatch.setenv("SG_JWT_ALGORITHMS", "RS256")
    check_auth_settings(Settings(_env_file=None))  # type: ignore[call-arg]


_TELEMETRY_PROBE = """
import sys
from pathlib import Path
from opentelemetry import trace
trace.set_tracer_provider(trace.NoOpTracerProvider())  # a provider configured globally
from gateway import create_app
from gateway.settings import Settings
from worker_sdk.wire.catalogue import load_catalogue
app = create_app(Settings(_env_file=None), catalogue=load_catalogue(Path(sys.argv[1])))
print(app._native_telemetry.enabled())
"""


@pytest.mark.parametrize(("value", "traced"), [(None, "False"), ("true", "True")])
def test_fastapi_telemetry_looks_for_providers_only_when_asked(
    value: str | None, traced: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider configured before the gateway starts (``opentelemetry-instrument``) gets
    FastAPI's spans only with SG_OPENTELEMETRY; otherwise no request pays for the look. In a
    process of its own: a global provider, once set, stays for the process's life."""
    monkeypatch.delenv("SG_OPENTELEMETRY", raising=False)
    if value is not None:
        monkeypatch.setenv("SG_OPENTELEMETRY", value)
    probe = subprocess.run(
        [sys.executable, "-c", _TELEMETRY_PROBE, str(ROOT / "services.yaml")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    )
    assert probe.stdout.strip() == traced
