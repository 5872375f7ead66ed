"""Acks coalesced per channel: one ``basic.ack`` with ``multiple`` for every delivery of a
channel settled in the same turn of the event loop.

A consumer whose deliveries finish together (the gateway's events, applied in one store
transaction) acks them in one frame, which the broker settles as one quorum-queue command
instead of one each. What stays exact:

- An ack is sent only for a delivery its consumer acked; ``multiple`` on tag *N* is sent only
  when every tracked delivery of the channel up to *N* was acked (consumers settle out of
  order: a delivery still being handled, or being rejected, keeps every later ack individual
  until it is settled itself).
- A reject (dead-lettering) or requeue is never coalesced, and its delivery blocks any
  ``multiple`` over it until its own frame is written.
- The frames of one channel are written in the order they were planned, so a ``multiple``
  never reaches the broker before an individual ack of a lower tag (which the broker would
  refuse as an unknown tag, closing the channel).
- A caller's ``await`` returns once its delivery's ack was written; if the channel closed
  first it raises, as a plain ack would: the broker redelivers every unacked delivery of a
  closed channel, so nothing is lost.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError


@dataclass
class _Plan:
    """The frames one turn of the loop decided: individual acks, then at most one multiple."""

    singles: list[AbstractIncomingMessage] = field(default_factory=list)
    multiple: AbstractIncomingMessage | None = None


class _Channel:
    """The tracked deliveries of one AMQP channel that are not settled yet, in tag order."""

    def __init__(self) -> None:
        self.open: dict[int, AbstractIncomingMessage] = {}  # insertion order is tag order
        self.acked: dict[int, asyncio.Future[None]] = {}
        self.scheduled = False
        self.last: asyncio.Future[None] | None = None  # the previous plan's frames written
        self.senders: set[asyncio.Task[None]] = set()

    def ack(self, tag: int) -> asyncio.Future[None]:
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acked[tag] = written
        self.schedule()
        return written

    def settled_alone(self, tag: int) -> None:
        self.open.pop(tag, None)
        if self.acked:
            self.schedule()

    def schedule(self) -> None:
        """Plan the acks of this turn of the loop once it has run."""
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.scheduled = False
        plan = _Plan()
        waiters: list[asyncio.Future[None]] = []
        prefix = True
        for tag, message in list(self.open.items()):
            written = self.acked.pop(tag, None)
            if written is None:
                prefix = False  # still being handled or rejected: later acks go one by one
                continue
            del self.open[tag]
            waiters.append(written)
            if prefix:
                plan.multiple = message
            else:
                plan.singles.append(message)
            if not self.acked:
                break
        if not waiters:
            return
        previous, done = self.last, asyncio.get_running_loop().create_future()
        self.last = done
        sender = asyncio.create_task(_send(plan, previous, done, waiters))
        self.senders.add(sender)  # owned until it ends
        sender.add_done_callback(self.senders.discard)


async def _send(
    plan: _Plan,
    previous: asyncio.Future[None] | None,
    done: asyncio.Future[None],
    waiters: list[asyncio.Future[None]],
) -> None:
    failure: BaseException | None = None
    try:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is its own waiters' concern
        for message in plan.singles:
            await message.ack()
        if plan.multiple is not None:
            await plan.multiple.ack(multiple=True)
    except BaseException as exc:  # noqa: BLE001 - every waiter hears it; cancellation re-raised
        failure = exc
    for written in waiters:
        if written.done():
            continue
        if failure is None:
            written.set_result(None)
        else:
            written.set_exception(ConnectionError(f"the ack was not sent: {failure!r}"))
    done.set_result(None)
    if isinstance(failure, asyncio.CancelledError):
        raise failure


_CHANNELS: WeakKeyDictionary[object, _Channel] = WeakKeyDictionary()


def track(message: AbstractIncomingMessage) -> None:
    """Make ``message``'s ack eligible for coalescing; call it on delivery, before handling
    (deliveries arrive in tag order, which the coalescing relies on)."""
    if message.delivery_tag is None:  # not acked at all (no_ack)
        return
    channel = _CHANNELS.get(message.channel)
    if channel is None:
        channel = _CHANNELS[message.channel] = _Channel()
    channel.open[message.delivery_tag] = message


def tracked(message: AbstractIncomingMessage) -> _Channel | None:
    """The coalescing state of ``message``'s channel, when ``message`` is tracked and open
    (None once the channel closed: a plain ack then fails as it should)."""
    try:
        channel = _CHANNELS.get(message.channel)
    except (AMQPError, RuntimeError):  # the channel closed (ChannelInvalidStateError)
        return None
    if channel is None or message.delivery_tag not in channel.open:
        return None
    return channel


async def ack(channel: _Channel, message: AbstractIncomingMessage) -> None:
    """Ack a tracked delivery with the others of its turn; return once its frame is written."""
    assert message.delivery_tag is not None  # tracked
    await asyncio.shield(channel.ack(message.delivery_tag))


def untrack(channel: _Channel, message: AbstractIncomingMessage) -> None:
    """A tracked delivery settled by itself (rejected, requeued): it no longer blocks a
    ``multiple`` over it. Call it once its own frame is written (or its channel closed)."""
    assert message.delivery_tag is not None  # tracked
    channel.settled_alone(message.delivery_tag)
