"""Coalesced acks on the real broker: one multiple ack for a turn's acks, never over a
delivery still being handled or rejected, and nothing lost or acked twice."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from worker_sdk.wire import acks, settle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_acks_of_a_turn_go_out_as_one_and_a_reject_is_never_covered(
    amqp_url: str, namespace: str
) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        setup = await connection.channel()
        dlx = await setup.declare_exchange(
            f"{namespace}.acks.dlx", aio_pika.ExchangeType.FANOUT, auto_delete=True
        )
        dead = await setup.declare_queue(f"{namespace}.acks.dead", exclusive=True)
        await dead.bind(dlx)
        name = f"{namespace}.acks"
        await setup.declare_queue(
            name, exclusive=True, arguments={"x-dead-letter-exchange": dlx.name}
        )
        for i in range(10):
            await setup.default_exchange.publish(aio_pika.Message(str(i).encode()), name)

        consuming = await connection.channel()
        await consuming.set_qos(prefetch_count=10)
        queue = await consuming.get_queue(name)
        got: list[AbstractIncomingMessage] = []
        all_in = asyncio.Event()

        async def on_message(message: AbstractIncomingMessage) -> None:
            acks.track(message)
            got.append(message)
            if len(got) == 10:
                all_in.set()

        await queue.consume(on_message)
        async with asyncio.timeout(10):
            await all_in.wait()
        m = {int(x.body): x for x in got}

        # 0-2 in one turn: one multiple ack, sent on 2 alone.
        assert await asyncio.gather(*(settle(m[i], "ack") for i in (0, 1, 2))) == [True] * 3
        assert [m[i].processed for i in (0, 1, 2)] == [False, False, True]
        # 3 rejected in the turn 4 and 5 are acked: the acks must not cover it.
        outcomes = await asyncio.gather(
            settle(m[4], "ack"), settle(m[3], "reject"), settle(m[5], "ack")
        )
        assert outcomes == [True, True, True]
        # 6 still being handled: 7-9 are acked one by one, then 6 alone.
        assert await asyncio.gather(*(settle(m[i], "ack") for i in (7, 8, 9))) == [True] * 3
        assert [m[i].processed for i in (7, 8, 9)] == [True, True, True]
        assert await settle(m[6], "ack") is True

        await consuming.close()  # every unacked delivery would be requeued now
        check = await connection.channel()
        assert (await check.get_queue(name)).declaration_result.message_count == 0
        letters: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await dead.consume(letters.put, no_ack=True)
        async with asyncio.timeout(10):
            letter = await letters.get()
        assert letter.body == b"3"
        await check.close()
        assert letters.empty()


async def test_an_ack_on_a_closed_channel_says_so(amqp_url: str, namespace: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{namespace}.acks.closed", exclusive=True)
        await channel.default_exchange.publish(aio_pika.Message(b"x"), queue.name)
        consuming = await connection.channel()
        received: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

        async def on_message(message: AbstractIncomingMessage) -> None:
            acks.track(message)
            await received.put(message)

        await (await consuming.get_queue(queue.name)).consume(on_message)
        async with asyncio.timeout(10):
            message = await received.get()
        await consuming.close()
        assert await settle(message, "ack") is False
        assert (await channel.get_queue(queue.name)).declaration_result.message_count == 1
