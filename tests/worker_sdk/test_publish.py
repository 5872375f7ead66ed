"""The messages the hot paths build from pamqp's properties are, on the wire, the ones
aio-pika's ``Message`` makes: every property, the expiration in whole milliseconds."""

from __future__ import annotations

import itertools
import os
import struct
from datetime import UTC, datetime
from typing import Any

import pytest
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from tests.support import message
from worker_sdk.wire.publish import JSON, Properties, outgoing


def _wire(properties: Basic.Properties, size: int) -> bytes:
    return ContentHeader(0, size, properties).marshal()


@pytest.mark.parametrize(
    "options",
    [
        {"type": "task", "correlation_id": "a-job", "expiration": 7200, "priority": 3},
        {"type": "heartbeat", "expiration": 2.5},
        {"type": "heartbeat", "expiration": 0.0015},
        {"type": "cancel", "correlation_id": "a-job", "persistent": False},
        {"type": "webhook", "headers": {"x-sg-deferrals": 2, "x-why": "a reason"}},
        {"type": "outcomes"},
    ],
)
def test_the_same_bytes_as_aio_pikas_message(options: dict[str, Any]) -> None:
    body = b'{"inputs": {}}'
    lean = outgoing(body, **options)
    reference = message(body, **options)
    lean.properties.message_id = reference.message_id  # each is fresh
    assert lean.body == reference.body
    assert _wire(lean.properties, len(body)) == _wire(reference.properties, len(body))
    assert lean.type == options["type"]


def test_every_message_has_its_own_id() -> None:
    ids = {outgoing(b"{}", type="task").properties.message_id for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_forked_processes_name_their_messages_apart() -> None:
    """The ids come from the process's own generator: a forked child must not repeat its
    parent's sequence (nor its siblings')."""
    ids = []
    for _ in range(2):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: one id, written whole, and out
            os.write(write, outgoing(b"{}", type="task").properties.message_id.encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            ids.append(pipe.read().decode())
        os.waitpid(pid, 0)
    ids.append(outgoing(b"{}", type="task").properties.message_id)
    assert len(set(ids)) == 3, ids


def _pamqp(properties: Basic.Properties) -> bytes | type[Exception]:
    try:
        return Basic.Properties.marshal(properties)
    except (TypeError, ValueError, struct.error) as exc:
        return type(exc)


def _ours(properties: Properties) -> bytes | type[Exception]:
    try:
        return properties.marshal()
    except (TypeError, ValueError, struct.error) as exc:
        return type(exc)


STRINGS = [None, "", "task", "é" * 127, "x" * 255, "x" * 256, "é" * 128, 7]
OCTETS = [None, 0, 1, 2, 255, 256, -1, True, 2.0]
TABLES = [None, {}, "", {"x-sg-deferrals": 2}]
OTHERS = [
    {},
    {"content_encoding": "gzip"},
    {"reply_to": "amq.rabbitmq.reply-to"},
    {"timestamp": datetime(2026, 12, 3, tzinfo=UTC)},
    {"user_id": "guest"},
    {"app_id": "sgw"},
    {"cluster_id": None},
]


@pytest.mark.parametrize("name", ["content_type", "correlation_id", "expiration", "message_id"])
@pytest.mark.parametrize("value", STRINGS)
def test_each_string_property_is_written_as_pamqp_writes_it(name: str, value: object) -> None:
    properties = Properties(content_type=JSON, delivery_mode=2, message_type="task")
    setattr(properties, name, value)
    assert _ours(properties) == _pamqp(properties)


@pytest.mark.parametrize("name", ["delivery_mode", "priority"])
@pytest.mark.parametrize("value", OCTETS)
def test_each_octet_property_is_written_as_pamqp_writes_it(name: str, value: object) -> None:
    properties = Properties(content_type=JSON, message_id="m", message_type="event")
    setattr(properties, name, value)
    assert _ours(properties) == _pamqp(properties)


@pytest.mark.parametrize("headers", TABLES)
@pytest.mark.parametrize("others", OTHERS)
@pytest.mark.parametrize("message_type", STRINGS)
def test_headers_and_the_properties_outgoing_never_sets_are_left_to_pamqp(
    headers: object, others: dict[str, Any], message_type: object
) -> None:
    properties = Properties(content_type=JSON, delivery_mode=1, priority=0)
    for name, value in others.items():  # after construction: pamqp refuses cluster_id=None
        setattr(properties, name, value)
    properties.headers = headers  # type: ignore[assignment]
    properties.message_type = message_type  # type: ignore[assignment]
    assert _ours(properties) == _pamqp(properties)


def test_every_set_of_outgoings_own_properties_is_written_as_pamqp_writes_it() -> None:
    values = {
        "content_type": [None, JSON],
        "headers": [None, {}],
        "delivery_mode": [None, 1, 2],
        "priority": [None, 0, 9],
        "correlation_id": [None, "", "a-job"],
        "expiration": [None, "7200000"],
        "message_id": [None, "0" * 32],
        "message_type": [None, "outcomes"],
    }
    checked = 0
    for combination in itertools.product(*values.values()):
        properties = Properties(**dict(zip(values, combination, strict=True)))
        assert _ours(properties) == _pamqp(properties), combination
        checked += 1
    assert checked == 2 * 2 * 3 * 3 * 3 * 2 * 2 * 2


def test_what_outgoing_builds_reads_back_the_same() -> None:
    sent = outgoing(b"{}", type="task", correlation_id="a-job", expiration=60, priority=4)
    header = ContentHeader(0, 2, sent.properties)
    read = ContentHeader()
    read.unmarshal(header.marshal()[0:])
    for name in Basic.Properties.__slots__:
        assert getattr(read.properties, name) == getattr(sent.properties, name) or (
            name == "cluster_id"
        ), name
