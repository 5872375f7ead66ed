"""The gateway and the workers recover from lost broker connections by themselves."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import aiormq
import httpx
import pytest

from examples.echo import echo
from examples.echo import worker as echo_worker
from gateway.broker import BrokerDown
from tests.conftest import AMQP_URL, GatewayFactory
from tests.integration.test_chaos import close_broker_connections
from tests.support import BrokerRelay, eventually, submit, wait_status
from worker_sdk import Worker
from worker_sdk._autoscale import Consumers
from worker_sdk.wire import Topology
from worker_sdk.wire.catalogue import Catalogue

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


async def test_everything_recovers_after_every_broker_connection_is_closed(
    gateway_factory: GatewayFactory,
    run_worker: Callable[..., asyncio.Task[None]],
    namespace: str,
) -> None:
    gateway = await gateway_factory(broker_reconnect_after=2.0)
    run_worker(echo_worker)
    before = (await submit(gateway.client, "echo", {"text": "before"})).json()
    await wait_status(gateway.client, before["jobID"], "successful")

    closed = await close_broker_connections(namespace)
    assert len(closed) == 2, closed  # the gateway's and the worker's

    async def accepted_again() -> httpx.Response | None:
        response = await submit(gateway.client, "echo", {"text": "after"})
        return response if response.status_code == 201 else None

    after = (await eventually(accepted_again, within=30, what="submits to succeed")).json()
    await wait_status(gateway.client, after["jobID"], "successful", within=30)

    async def ready() -> bool:
        return (await gateway.client.get("/readyz")).status_code == 200

    await eventually(ready, within=30, what="/readyz to recover")


async def test_an_inspection_cut_short_fails_no_submission(
    gateway_factory: GatewayFactory,
) -> None:
    """A queue inspection (the dashboard's, the capacity figures', readiness) cancelled before
    the broker answers makes aiormq close its channel: the publishing channel must not be it."""
    gateway = await gateway_factory()
    broker = gateway.runtime.broker
    queue = broker.topology.task_queue("echo")
    cut = 0
    submitted = asyncio.Event()

    async def cut_inspections() -> None:
        """Cut inspections at every depth, again and again until the submissions are done:
        whatever the broker's pace, some are cut while submissions publish."""
        nonlocal cut
        while not submitted.is_set():
            for turns in range(1, 21):
                for inspection in (broker.queue_stats(queue), broker.check()):
                    inspecting = asyncio.create_task(inspection)
                    for _ in range(turns):  # turns of the loop: at some count, its call is on
                        await asyncio.sleep(0)  # its way to the broker when it is cut short
                    inspecting.cancel()
                    await asyncio.gather(inspecting, return_exceptions=True)
                    cut += 1

    async def submits() -> list[int]:
        codes = []
        for _ in range(25):
            codes.append((await submit(gateway.client, "echo", {"text": "x"})).status_code)
        return codes

    async def all_submits() -> list[list[int]]:
        try:
            return await asyncio.gather(*(submits() for _ in range(8)))
        finally:
            submitted.set()

    _, codes = await asyncio.gather(cut_inspections(), all_submits())
    assert cut >= 40
    assert {code for client in codes for code in client} == {201}
    await broker.check()
    assert (await broker.queue_stats(queue))[0] == 200


@pytest.mark.parametrize("turns", [1, 2, 3])
async def test_a_stream_left_while_the_tap_binds_fails_no_waiting_submission(
    gateway_factory: GatewayFactory,
    run_worker: Callable[..., asyncio.Task[None]],
    turns: int,
) -> None:
    """An event stream whose client leaves while the gateway binds its tap (the first waiter
    after a quiet spell) must not cut the bind short: aiormq would close the tap's channel, and
    the next waiting submission failed on it."""
    gateway = await gateway_factory()
    run_worker(echo_worker)

    async def stream() -> None:
        async with gateway.runtime.watch.subscribe(uuid.uuid4()):
            await asyncio.Event().wait()

    streaming = asyncio.create_task(stream())
    for _ in range(turns):  # turns of the loop: the bind calls are on their way
        await asyncio.sleep(0)
    streaming.cancel()
    await asyncio.gather(streaming, return_exceptions=True)
    response = await submit(gateway.client, "echo", {"text": "x"}, headers={"Prefer": "wait=10"})
    assert response.status_code == 200, response.text


async def test_readiness_asks_the_broker_and_waits_out_a_probe_being_reopened(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = await gateway_factory()
    broker = gateway.runtime.broker
    queue = broker.topology.task_queue("echo")
    for _ in range(20):
        inspecting = asyncio.create_task(broker.queue_stats(queue))
        await asyncio.sleep(0)  # two turns of the loop: its call is on its way
        await asyncio.sleep(0)
        inspecting.cancel()
        await asyncio.gather(inspecting, return_exceptions=True)
        await broker.check()  # the probe channel is reopened, not reported down
    assert (await gateway.client.get("/readyz")).status_code == 200
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(broker.topology.tasks_exchange)
    with pytest.raises(BrokerDown, match="does not answer"):
        await broker.check()  # asked of the broker, not of a cache


async def test_a_worker_asked_to_stop_while_its_broker_is_out_of_reach_stops(
    namespace: str, catalogue: Catalogue, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker goes out of reach (its connections cut, a relay in between refusing new
    ones); a stop then must not wait for it to come back (aio-pika's consumer cancel did)."""
    worker = Worker(
        "echo", version="1.0.0", publish_timeout=2, shutdown_grace=2, heartbeat_interval=0.2
    )
    worker.handler(echo)
    async with BrokerRelay(AMQP_URL) as relay:
        running = asyncio.create_task(
            worker.run(amqp_url=relay.url, catalogue=catalogue, namespace=namespace)
        )
        try:
            async with await aio_pika.connect(AMQP_URL) as connection:
                queue = Topology(namespace).task_queue("echo")

                async def consuming() -> bool:
                    channel = await (await connection.channel()).get_underlay_channel()
                    try:  # a channel of its own each time: a passive declare's 404 closes it
                        declared = await channel.queue_declare(queue, passive=True)
                    except aiormq.exceptions.ChannelNotFoundEntity:
                        return False  # not declared yet
                    await channel.close()
                    return bool(declared.consumer_count)

                await eventually(consuming, what="the worker consuming through the relay")
            relay.cut()

            async def out_of_reach() -> bool:  # the worker's connection is down, it knows
                return "heartbeat not published" in caplog.text

            await eventually(out_of_reach, what="the worker to find its broker gone")
        finally:
            relay.cut()
            worker.stop()
        await asyncio.wait_for(running, timeout=20)  # it waited for the broker for good before


async def test_consumers_cancelled_while_the_broker_is_out_of_reach_are_not_restored(
    namespace: str,
) -> None:
    """A stopping worker cancels its consumers while its broker is out of reach; when the
    connection comes back, aio-pika restores the consumers it still knows, and a stopping
    worker would take new tasks. None of the cancelled ones is restored; one that was not
    cancelled is (it shows that the restoring is done)."""
    name = f"{namespace}.restored"

    async def nothing(_delivery: object) -> None:
        return None

    async with BrokerRelay(AMQP_URL) as relay, await aio_pika.connect(AMQP_URL) as direct:

        async def consumer_count() -> int:
            channel = await direct.channel()
            declared = await (await channel.get_underlay_channel()).queue_declare(
                name, passive=True
            )
            await channel.close()
            return int(declared.consumer_count)

        robust = await aio_pika.connect_robust(relay.url, reconnect_interval=0.1)
        try:
            queue = await (await robust.channel()).declare_queue(name, auto_delete=False)
            consumers = Consumers(queue, nothing)
            await consumers.resize(2)
            await queue.consume(nothing)  # never cancelled
            assert await consumer_count() == 3
            relay.cut()

            async def dropped() -> bool:
                return await consumer_count() == 0

            await eventually(dropped, what="the broker to drop the cut connection's consumers")
            await asyncio.wait_for(consumers.cancel(within=0.5), 10)
            await relay.resume()

            async def restored() -> int | None:
                return await consumer_count() or None

            assert await eventually(restored, what="the connection restored") == 1
        finally:
            await robust.close()
            channel = await direct.channel()
            await channel.queue_delete(name)


async def test_inspections_fail_at_once_while_the_broker_is_out_of_reach(
    gateway_factory: GatewayFactory,
) -> None:
    """The dashboard, the capacity figures and the metrics inspect queues: during an outage
    they hear so at once, not after a publish timeout each."""
    async with BrokerRelay(AMQP_URL) as relay:
        gateway = await gateway_factory(amqp_url=relay.url, publish_timeout=10.0)
        broker = gateway.runtime.broker
        queue = broker.topology.task_queue("echo")
        assert (await broker.queue_stats(queue))[0] == 0
        relay.cut()

        async def down() -> bool:
            return (await gateway.client.get("/readyz")).status_code == 503

        await eventually(down, what="the gateway to find its broker gone")
        with pytest.raises(BrokerDown, match="not connected"):
            await asyncio.wait_for(broker.queue_stats(queue), 5)  # not after 10 s


async def test_a_rebuild_that_fails_part_way_is_done_again_whole(
    gateway_factory: GatewayFactory,
    run_worker: Callable[..., asyncio.Task[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rebuild of the connection by the watchdog failed at its first consumer (its channel
    closed under a first delivery it could not read, or the broker went away again): the
    channels it had opened looked healthy, so no rebuild followed; the events were never
    consumed again and readiness said ok. Now the rebuild is done again, whole, and
    readiness waits for it."""
    gateway = await gateway_factory(broker_reconnect_after=1.0)
    broker = gateway.runtime.broker
    run_worker(echo_worker)
    before = (await submit(gateway.client, "echo", {"text": "before"})).json()
    await wait_status(gateway.client, before["jobID"], "successful")
    start = broker._start_consumer
    starts = 0

    async def failing_first(consumer: Any) -> None:
        nonlocal starts
        starts += 1
        if starts == 1:
            raise RuntimeError("the channel closed under the consumer's first delivery")
        await start(consumer)

    monkeypatch.setattr(broker, "_start_consumer", failing_first)
    with pytest.raises(RuntimeError, match="first delivery"):
        await broker._rebuild()  # as the watchdog's: a new connection, no consumer on it
    assert (await gateway.client.get("/readyz")).status_code == 503

    after = (await submit(gateway.client, "echo", {"text": "after"})).json()
    await wait_status(gateway.client, after["jobID"], "successful", within=30)

    async def ready() -> bool:
        return (await gateway.client.get("/readyz")).status_code == 200

    await eventually(ready, within=30, what="/readyz to recover")
    # Ready once whole: the events consumer, restarted first, may end the job before the
    # rebuild has started the others.
    assert starts > len(broker._registered)  # the failed rebuild, then a whole one


@pytest.mark.parametrize("deleted", ["events", "dead"])
async def test_a_consumed_queue_deleted_under_the_gateway_is_declared_and_consumed_again(
    gateway_factory: GatewayFactory,
    run_worker: Callable[..., asyncio.Task[None]],
    deleted: str,
) -> None:
    """An operator deletes a queue the gateway consumes: the broker cancels the consumer and
    the channel stays open. Readiness says not ready, the watchdog rebuilds (the topology
    declared again), and jobs end again; before, the gateway stayed ready with the queue gone
    and every job's events unroutable."""
    gateway = await gateway_factory(broker_reconnect_after=1.0)
    topology = Topology(gateway.runtime.settings.namespace)
    queue = {"events": topology.events_queue, "dead": topology.dead_letter_queue}[deleted]
    broker = gateway.runtime.broker
    run_worker(echo_worker)

    async def worker_consuming() -> bool:
        return (await broker.queue_stats(topology.task_queue("echo")))[1] == 1

    await eventually(worker_consuming, what="the worker to consume")  # its topology declared
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)

    async def ready(status: int) -> bool:
        return (await gateway.client.get("/readyz")).status_code == status

    await eventually(lambda: ready(503), within=10, what="/readyz to say the consumer is gone")
    await eventually(lambda: ready(200), within=30, what="the rebuild")
    job = (await submit(gateway.client, "echo", {"text": "after"})).json()
    await wait_status(gateway.client, job["jobID"], "successful", within=30)
    assert await broker.queue_stats(queue) == (0, 1)  # there again, and consumed


async def test_a_tap_bind_the_broker_never_answers_holds_no_waiting_request(
    gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first waiter binds the tap; a bind that never comes back (its channel being
    reopened) held that waiter, and every one after it, with the watch's lock, for good. Now
    it gives up after the publish timeout and the request is answered at the end of its wait."""
    gateway = await gateway_factory(publish_timeout=1.0)
    tap = gateway.runtime.broker._tap
    assert tap is not None
    assert tap.queue is not None

    async def unanswered(*args: Any, **kwargs: Any) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(type(tap.queue), "bind", unanswered)  # no other bind runs meanwhile
    for _ in range(2):  # the second waiter finds the lock free again
        waited = submit(gateway.client, "echo", {"text": "x"}, headers={"Prefer": "wait=1"})
        response = await asyncio.wait_for(waited, 20)
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "accepted"
