"""The lenient AMQP decoding is installed, and each of its decoders gives the value pamqp
gives where pamqp can, and a usable one where pamqp raised."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pamqp.decode
import pamqp.frame
import pytest
from pamqp import commands, header

import worker_sdk.wire  # noqa: F401 - importing it installs the decoders
from worker_sdk.wire import lenient


def test_importing_the_wire_installs_the_lenient_decoders() -> None:
    assert pamqp.decode.METHODS["timestamp"] is lenient.timestamp
    assert pamqp.decode.TABLE_MAPPING[b"T"] is lenient.timestamp
    assert pamqp.decode.METHODS["shortstr"] is lenient.short_str
    assert pamqp.frame._unmarshal_header_frame is lenient.header_frame
    assert lenient.install()  # twice is the same


def test_a_timestamp_datetime_holds_decodes_as_pamqp_decodes_it() -> None:
    at = datetime(2026, 12, 1, 4, 30, tzinfo=UTC)
    assert lenient.timestamp(struct.pack(">Q", int(at.timestamp()))) == (8, at)


@pytest.mark.parametrize("raw", [2**64 - 1, 2**63, 253402300800 * 1000 + 1])
def test_a_timestamp_past_datetime_decodes_to_none(raw: int) -> None:
    assert lenient.timestamp(struct.pack(">Q", raw)) == (8, None)


def test_a_truncated_timestamp_is_still_a_broken_frame() -> None:
    with pytest.raises(ValueError, match="timestamp"):
        lenient.timestamp(b"\x00\x01")


def test_a_short_string_that_is_not_utf8_decodes_with_replacements() -> None:
    assert lenient.short_str(b"\x03abc") == (4, "abc")
    assert lenient.short_str(b"\x02\xff\xfe") == (3, "\ufffd\ufffd")
    with pytest.raises(ValueError, match="short string"):
        lenient.short_str(b"")


def _content_header(properties: bytes, body_size: int = 5) -> bytes:
    return struct.pack(">HHQ", 60, 0, body_size) + properties


def test_a_content_header_decodes_its_properties() -> None:
    encoded = header.ContentHeader(0, 5, commands.Basic.Properties(message_type="task"))
    content = lenient.header_frame(encoded.marshal())
    assert (content.body_size, content.properties.message_type) == (5, "task")


def test_a_content_header_whose_properties_fail_keeps_its_body_size() -> None:
    # The headers flag set, then a table of an unknown field type.
    broken = _content_header(struct.pack(">H", 1 << 13) + struct.pack(">I", 3) + b"\x01aZ")
    content = lenient.header_frame(broken)
    assert content.body_size == 5
    assert content.properties.message_type is None
    with pytest.raises(pamqp.exceptions.UnmarshalingException):
        lenient.header_frame(b"\x00")


def nested_headers(depth: int) -> bytes:
    """A ``headers`` property (and its flag) of tables nested ``depth`` deep, as any client
    can publish it: ``{"a": {"a": ... {}}}``."""
    table = b""
    for _ in range(depth):
        table = b"\x01aF" + struct.pack(">I", len(table)) + table
    return struct.pack(">H", 1 << 13) + struct.pack(">I", len(table)) + table


def test_headers_nested_past_the_decoders_recursion_keep_the_body_size() -> None:
    content = lenient.header_frame(_content_header(nested_headers(5000)))
    assert content.body_size == 5
    assert content.properties.headers is None
    shallow = lenient.header_frame(_content_header(nested_headers(3)))
    assert shallow.properties.headers == {"a": {"a": {"a": {}}}}
