"""The messages the hot paths build from pamqp's properties are, on the wire, the ones
aio-pika's ``Message`` makes: every property, the expiration in whole milliseconds."""

from __future__ import annotations

from typing import Any

import pytest
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from tests.support import message
from worker_sdk.wire.publish import outgoing


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
