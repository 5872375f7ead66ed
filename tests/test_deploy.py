"""docker-compose.yml and the Dockerfile cannot run here (no Docker engine); this checks that
they name real commands, real settings and consistent ports, and that every service the
gateway needs has a healthcheck."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.catalogue import load_catalogue
from gateway.cli import build_parser, load_worker
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {f"SG_{name.upper()}" for name in Settings.model_fields}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _sg_commands(compose: dict[str, Any]) -> dict[str, list[str]]:
    return {
        name: service["command"]
        for name, service in compose["services"].items()
        if service.get("command", [""])[0] == "sgw"
    }


def test_every_compose_command_is_a_real_cli_command(compose: dict[str, Any]) -> None:
    commands = _sg_commands(compose)
    assert set(commands) >= {"gateway", "worker-echo", "worker-textstats"}
    for name, command in commands.items():
        args = build_parser().parse_args(command[1:])  # exits on an unknown command or flag
        if args.command == "worker":
            assert load_worker(args.reference).service in name


def test_every_sg_variable_is_a_real_setting(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]]
) -> None:
    used: set[str] = set()
    for service in compose["services"].values():
        used |= {k for k in service.get("environment", {}) if k.startswith("SG_")}
    for keyword, rest in dockerfile:
        if keyword == "ENV":
            used |= set(re.findall(r"\b(SG_[A-Z0-9_]+)=", rest))
    used |= set(re.findall(r"^#?\s*(SG_[A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert used, "no SG_ variables found"
    assert used - SETTINGS == set()


def test_the_environment_values_are_valid_settings(compose: dict[str, Any]) -> None:
    environment = compose["services"]["gateway"]["environment"]
    values = {k.removeprefix("SG_").lower(): v for k, v in environment.items()}
    settings = Settings(_env_file=None, **values)  # type: ignore[arg-type]
    assert settings.store_url.startswith("mongodb://mongo:")
    assert settings.amqp_url.startswith("amqp://guest:guest@rabbitmq:")


def test_ports_line_up(compose: dict[str, Any], dockerfile: list[tuple[str, str]]) -> None:
    gateway = compose["services"]["gateway"]
    port = gateway["environment"]["SG_PORT"]
    assert f"{port}:{port}" in gateway["ports"]
    assert f":{port}/readyz" in " ".join(gateway["healthcheck"]["test"])
    exposed = [rest for keyword, rest in dockerfile if keyword == "EXPOSE"]
    image_port = re.search(r"SG_PORT=(\d+)", " ".join(r for k, r in dockerfile if k == "ENV"))
    assert image_port is not None
    assert exposed == [image_port.group(1)] == [port]
    assert "5672:5672" in compose["services"]["rabbitmq"]["ports"]
    assert ":5672/" in gateway["environment"]["SG_AMQP_URL"]
    assert "27017:27017" in compose["services"]["mongo"]["ports"]
    assert ":27017/" in gateway["environment"]["SG_STORE_URL"]


def test_the_services_the_gateway_needs_are_healthchecked(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("rabbitmq", "mongo", "gateway"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD", name
        assert len(test) > 1, name
    for name in ("gateway", "worker-echo", "worker-textstats"):
        depends = services[name]["depends_on"]
        assert depends == {
            "rabbitmq": {"condition": "service_healthy"},
            "mongo": {"condition": "service_healthy"},
        }, name


def test_the_broker_config_outlasts_the_longest_job(compose: dict[str, Any]) -> None:
    mounts = compose["services"]["rabbitmq"]["volumes"]
    config = next(m.split(":")[0] for m in mounts if m.endswith(".conf:ro"))
    text = (ROOT / config).read_text()
    timeout_ms = int(re.search(r"^consumer_timeout\s*=\s*(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    longest = max(s.time_limit or 0 for s in load_catalogue(ROOT / "services.yaml"))
    assert timeout_ms > longest * 1000


def test_the_image_builds_from_what_the_repo_has(dockerfile: list[tuple[str, str]]) -> None:
    for keyword, rest in dockerfile:
        if keyword == "COPY":
            *sources, _ = shlex.split(rest)
            for source in sources:
                assert (ROOT / source).exists(), source
    user = [rest for keyword, rest in dockerfile if keyword == "USER"]
    assert user
    assert user[-1] not in {"root", "0"}
    cmd = next(rest for keyword, rest in reversed(dockerfile) if keyword == "CMD")
    build_parser().parse_args(yaml.safe_load(cmd)[1:])
    assert any(keyword == "HEALTHCHECK" for keyword, _ in dockerfile)
    catalogue = re.search(r"SG_CATALOGUE=(\S+)", " ".join(r for k, r in dockerfile if k == "ENV"))
    workdir = next(rest for keyword, rest in dockerfile if keyword == "WORKDIR")
    assert catalogue is not None
    assert catalogue.group(1) == f"{workdir}/services.yaml"
