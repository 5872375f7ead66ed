"""AMQP frames that no publisher can use to close a connection.

pamqp (under aiormq, under aio-pika) raises on a message property or a header it cannot turn
into a Python value, and aiormq takes that for a broken stream: it closes the whole
connection, with the gateway's publishing channel and every consumer on it. The broker hands
the unacked message to the next connection, which it closes again, until the queue's delivery
limit parks it, taking the messages delivered beside it along at each turn: one message from a
buggy or rogue publisher then stops the event path for most of a minute and loses confirmed
results. RabbitMQ forwards such values as they came; the triggers are plain:

- a ``timestamp`` past what ``datetime`` holds (a 64-bit value, as the AMQP spec has it: a
  millisecond epoch, or the Java client's pre-1970 times);
- a short string that is not UTF-8 (a property such as ``message_id``, or a routing key);
- headers nested a few hundred tables or arrays deep (pamqp's decoder recurses per level:
  ``RecursionError``; the broker forwards any depth that fits a frame).

Known upstream (mosquito/aiormq#186, open; pika fixed its own decoder in pika/pika#1699), and
still so in pamqp 4.0. :func:`install` makes the decoding lenient, so that such a message
reaches its consumer, which sets it aside like any other message it cannot use: such a
timestamp decodes to ``None``, such a string with replacement characters, and a content header
that still cannot be decoded is delivered without its properties (its consumer then finds no
type on it). It replaces pamqp's own functions, so it checks that they are there: a pamqp that
moved them leaves it uninstalled, and the test of this module fails.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

import pamqp.decode
import pamqp.exceptions
import pamqp.frame
from pamqp import commands, header

log = logging.getLogger("worker_sdk")

_strict_timestamp = pamqp.decode.timestamp


def timestamp(value: bytes) -> tuple[int, Any]:
    """pamqp's timestamp decoder, with ``None`` for a time ``datetime`` cannot hold."""
    try:
        return _strict_timestamp(value)
    except (OverflowError, OSError, ValueError) as exc:
        if isinstance(exc, ValueError) and len(value) < 8:
            raise  # truncated: a broken frame, as pamqp says
        return 8, None


def short_str(value: bytes) -> tuple[int, str]:
    """pamqp's short string decoder, with replacement characters for bytes not UTF-8."""
    try:
        length: int = struct.unpack(">B", value[0:1])[0]
    except struct.error as exc:
        raise ValueError("Could not unpack short string value") from exc
    return length + 1, value[1 : length + 1].decode("utf-8", "replace")


def header_frame(frame_data: bytes) -> header.ContentHeader:
    """pamqp's content header decoder; a header it still cannot decode keeps its body size and
    loses its properties, rather than the connection."""
    content = header.ContentHeader()
    try:
        content.unmarshal(frame_data)
    except (struct.error, ValueError, ArithmeticError, RecursionError) as exc:
        try:
            _class, weight, body_size = struct.unpack(">HHQ", frame_data[0:12])
        except struct.error:
            raise pamqp.exceptions.UnmarshalingException("ContentHeader", exc) from exc
        log.warning("a message's properties cannot be decoded (%s): delivered without them", exc)
        content = header.ContentHeader(weight, body_size, commands.Basic.Properties())
    return content


def install() -> bool:
    """Put the lenient decoders in pamqp's place; whether it could."""
    decoders = getattr(pamqp.decode, "METHODS", None)
    table = getattr(pamqp.decode, "TABLE_MAPPING", None)
    if (
        not isinstance(decoders, dict)
        or not isinstance(table, dict)
        or decoders.get("timestamp") not in (_strict_timestamp, timestamp)
        or "shortstr" not in decoders
        or b"T" not in table
        or not hasattr(pamqp.frame, "_unmarshal_header_frame")
    ):
        log.warning("pamqp %s decodes differently: strict AMQP decoding kept", pamqp.__version__)
        return False
    decoders["timestamp"] = table[b"T"] = timestamp
    decoders["shortstr"] = short_str
    pamqp.frame._unmarshal_header_frame = header_frame
    return True
