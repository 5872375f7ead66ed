"""A response's head goes out with its body (``gateway.server.HeadWithBody``): one write where
uvicorn made two, and nothing held past the turn of the event loop that wrote it."""

from __future__ import annotations

import asyncio

from gateway.server import HeadWithBody


class Recorder(asyncio.Transport):
    """A transport that keeps what is written to it, in the calls it was written in."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 7


async def _next_turn() -> None:
    """Let the event loop run the callbacks scheduled so far."""
    await asyncio.sleep(0)


async def test_a_head_and_its_body_go_in_one_write_at_once() -> None:
    sent = Recorder()
    cycle = HeadWithBody(sent, asyncio.get_running_loop())
    cycle.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert sent.writes == []
    cycle.write(b'{"a":1}')
    assert sent.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"a":1}']
    await _next_turn()
    assert sent.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"a":1}']  # nothing left to flush


async def test_a_head_with_nothing_after_it_goes_alone_at_the_end_of_the_turn() -> None:
    sent = Recorder()
    cycle = HeadWithBody(sent, asyncio.get_running_loop())
    cycle.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await _next_turn()
    assert sent.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    cycle.write(b"5\r\nhello\r\n")  # a stream's later chunks are written as they come
    cycle.write(b"0\r\n\r\n")
    assert sent.writes[1:] == [b"5\r\nhello\r\n", b"0\r\n\r\n"]


async def test_closing_sends_a_held_head_first() -> None:
    sent = Recorder()
    cycle = HeadWithBody(sent, asyncio.get_running_loop())
    cycle.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
    cycle.close()
    assert sent.writes == [b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"]
    assert sent.closed
    await _next_turn()
    assert len(sent.writes) == 1


async def test_a_head_held_for_a_connection_closed_meanwhile_is_dropped() -> None:
    sent = Recorder()
    cycle = HeadWithBody(sent, asyncio.get_running_loop())
    cycle.write(b"HTTP/1.1 200 OK\r\n\r\n")
    sent.close()  # the client went away
    await _next_turn()
    assert sent.writes == []


async def test_the_rest_is_the_transports() -> None:
    sent = Recorder()
    cycle = HeadWithBody(sent, asyncio.get_running_loop())
    assert cycle.get_write_buffer_size() == 7
    assert not cycle.is_closing()
    sent.close()
    assert cycle.is_closing()
