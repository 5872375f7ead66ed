"""A worker takes its service's queue from the catalogue the gateway reads: it never repeats a
queue argument, refuses a service the catalogue lacks, and says in one line when the broker's
queue disagrees."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aio_pika
import pytest

from tests import workers
from tests.conftest import AMQP_URL, ROOT, GatewayFactory
from tests.support import TEST_CATALOGUE, eventually, measured, submit, wait_status
from worker_sdk import UnknownService, Worker
from worker_sdk.wire import TaskQueueOptions, Topology
from worker_sdk.wire.catalogue import Catalogue, parse_catalogue

pytestmark = pytest.mark.integration


def _sgw_worker(
    reference: str, namespace: str, catalogue: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    env = measured(
        {
            **os.environ,
            "SG_AMQP_URL": AMQP_URL,
            "SG_NAMESPACE": namespace,
            "SG_CATALOGUE": str(catalogue),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "worker", reference, "--burst", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _errors(output: str) -> list[str]:
    """What a failed command said, log lines aside, as one line (rich wraps long lines)."""
    said = [line for line in output.splitlines() if line.strip() and not line.startswith("20")]
    return [" ".join(" ".join(said).split())] if said else []


async def test_a_worker_with_a_mistyped_service_refuses_to_start(
    namespace: str, tmp_path: Path, catalogue: Catalogue
) -> None:
    typo = Worker("ecoh", version="1.0.0")

    @typo.handler
    async def handler(ctx: object, inputs: dict[str, object]) -> None:
        return None

    with pytest.raises(UnknownService, match=r"'ecoh' is not in the catalogue .*echo"):
        await typo.run(amqp_url=AMQP_URL, catalogue=catalogue, namespace=namespace)
    file = tmp_path / "catalogue.yaml"
    file.write_text(TEST_CATALOGUE.replace("  echo:", "  echoes:"))
    done = _sgw_worker("examples.echo:worker", namespace, file)
    assert done.returncode == 2
    (line,) = _errors(done.stderr)
    assert "service 'echo' is not in the catalogue" in line
    assert "Traceback" not in done.stderr


@pytest.fixture
def catalogue() -> Catalogue:
    """The tests' catalogue, with a bound and a delivery limit of its own on ``counted``."""
    return parse_catalogue(
        TEST_CATALOGUE.replace(
            "title: Counts its completions",
            "title: Counts its completions\n    max_queued: 3\n    delivery_limit: 2",
        )
    )


async def test_a_worker_runs_with_the_catalogues_queue_arguments(
    namespace: str,
    catalogue: Catalogue,
    gateway_factory: GatewayFactory,
    run_worker: Callable[..., asyncio.Task[None]],
) -> None:
    """The worker starts first and declares the queue with the catalogue's arguments (the
    broker refuses any other declaration of it); the gateway, declaring it after from the same
    catalogue, agrees, and jobs flow."""
    started = run_worker(workers.counted)
    topology = Topology(namespace)
    spec = catalogue.get("counted")
    assert spec is not None

    async def declared_with(options: TaskQueueOptions) -> bool:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            try:
                await channel.declare_queue(
                    topology.task_queue("counted"),
                    durable=True,
                    arguments=options.arguments(topology, "counted"),
                )
            except aio_pika.exceptions.ChannelPreconditionFailed:
                return False
            return True

    await eventually(lambda: declared_with(spec.queue_options), what="the catalogue's queue")
    assert (spec.queue_options.delivery_limit, spec.queue_options.max_length) == (2, 3)
    assert not await declared_with(TaskQueueOptions())  # the defaults are not what it has
    assert not started.done()
    gateway = await gateway_factory()
    job = (await submit(gateway.client, "counted", {"n": 1})).json()
    await wait_status(gateway.client, job["jobID"], "successful")


async def test_a_queue_the_broker_holds_with_other_arguments_is_one_line(
    namespace: str, tmp_path: Path
) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(
            Topology(namespace).task_queue("echo"),
            durable=True,
            arguments={"x-queue-type": "quorum", "x-delivery-limit": 99},
        )
    file = tmp_path / "catalogue.yaml"
    file.write_text(TEST_CATALOGUE)
    done = _sgw_worker("examples.echo:worker", namespace, file)
    assert done.returncode == 3, done.stderr
    (line,) = _errors(done.stderr)
    assert "exists on the broker with other arguments" in line
    assert "x-delivery-limit" in line or "inequivalent" in line
    assert "Traceback" not in done.stderr


def test_the_generated_models_are_those_of_the_catalogue(tmp_path: Path) -> None:
    """examples/models.py is what `sgw models` makes of services.yaml now."""
    from gateway.cli import main
    from gateway.codegen import generate_models
    from worker_sdk.wire.catalogue import load_catalogue

    catalogue = load_catalogue(ROOT / "services.yaml")
    committed = (ROOT / "examples" / "models.py").read_text()
    assert generate_models(catalogue, output="examples/models.py") == committed
    out = tmp_path / "models.py"
    assert main(["models", "--catalogue", str(ROOT / "services.yaml"), "--output", str(out)]) == 0
    assert out.read_text().replace(str(out), "examples/models.py") == committed


async def test_a_model_generated_from_another_schema_refuses_to_start(
    namespace: str, tmp_path: Path
) -> None:
    file = tmp_path / "catalogue.yaml"
    changed = (
        (ROOT / "services.yaml")
        .read_text()
        .replace(
            "delay: {type: number, minimum: 0, maximum: 3600}", "delay: {type: number, minimum: 1}"
        )
    )
    file.write_text(changed)
    done = _sgw_worker("examples.echo:worker", namespace, file)
    assert done.returncode == 2
    (line,) = _errors(done.stderr)
    assert "examples.models.EchoInputs was generated from another inputs schema" in line
    assert "sgw models" in line
