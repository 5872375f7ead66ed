"""The HTTP server's own guard against slow clients, beside uvicorn's keep-alive timeout.

uvicorn times out a connection only while it idles between requests. A client that opens a
connection and trickles its request headers, or its body, a byte at a time would hold the
connection (and, for a body, the request's handler) for as long as it likes. This protocol
gives the headers ``header_timeout`` seconds from the first byte of a request (or from the
connection, for the first request) and the body ``body_timeout`` seconds after the headers;
past either, it answers 408 when no response has begun, and closes the connection. A request
whose line and headers pass ``max_header_size`` bytes is answered 431 and its connection
closed: httptools holds a header in memory until it ends, however long, and has no limit of
its own. Both answers are problem documents, as every other error, and both are read by the
client before the connection ends (:meth:`GuardedHttpProtocol._refuse`).

uvicorn instantiates protocols itself, in each worker process, so the timeouts are class
attributes that ``gateway.app.app_factory`` sets from the settings.

It also sends a response's head with its body: uvicorn writes the two separately, two system
calls and (the socket has ``TCP_NODELAY``) two segments, the client woken for each.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import (
    PROBLEM_JSON,
    BadRequest,
    GatewayError,
    HeadersTooLarge,
    RequestTimeout,
)

log = logging.getLogger("gateway.server")


def _answer(error: GatewayError) -> bytes:
    """A whole response the server sends before any application runs: ``error``'s problem
    document, and the connection closed."""
    body = error.problem().model_dump_json(exclude_none=True).encode()
    head = (
        f"HTTP/1.1 {error.status} {error.title}\r\ncontent-type: {PROBLEM_JSON}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


TIMEOUT_RESPONSE = _answer(RequestTimeout("the request was too slow"))
HEADERS_RESPONSE = _answer(HeadersTooLarge("the request's headers are too large"))

# The parser's own limit: the offsets of its URL parts are 16 bits.
MAX_URL_BYTES = 65535


class _TooLarge(Exception):
    """Raised in a parser callback to stop it at the header limit."""


# Seconds a refused connection is read (and what comes dropped) after its answer, at most.
LINGER = 2.0


class HeadWithBody:
    """A request cycle's transport that holds the cycle's first write (a response's head)
    until its next (the body), and sends both in one write; a head with no write after it in
    the same turn of the event loop (a stream whose first event comes later) goes on its own
    at the end of the turn, as before. Only ``write`` and ``close`` differ from the
    transport's."""

    __slots__ = ("_held", "_loop", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._started = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held + bytes(data))
        elif not self._started:
            self._started = True
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body deadlines."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_header_size: int = 64 * 1024
    _deadline: asyncio.TimerHandle | None = None
    _in_headers = True  # the bytes that come now are a request's line and headers
    _header_bytes = 0  # of the request whose headers are coming
    _parsed_bytes = 0  # of the request line and headers the parser has handed over
    _lingering = False  # answered and half-closed: what comes now is dropped

    @classmethod
    def configure(
        cls, *, header_timeout: float, body_timeout: float, max_header_size: int = 64 * 1024
    ) -> None:
        cls.header_timeout = header_timeout
        cls.body_timeout = body_timeout
        cls.max_header_size = max_header_size

    def data_received(self, data: bytes) -> None:
        if self._lingering:  # refused: read only to be dropped
            return
        super().data_received(data)
        if not self._in_headers or self._lingering or self.transport.is_closing():
            return  # (the parser's callbacks may have refused the request just now)
        # The headers have not ended in this chunk: all of it went to them (or to the end of
        # the last request's body before them, counted too: at most a chunk more).
        self._header_bytes += len(data)
        if self._header_bytes > self.max_header_size:
            self._headers_too_large(self._header_bytes)

    def _headers_too_large(self, size: int) -> None:
        log.info("closing a connection whose request headers passed %d bytes", size)
        if self.cycle is None or self.cycle.response_complete:
            self._refuse(HEADERS_RESPONSE)
        else:  # a response of the request before is under way: it is cut
            self._disarm()
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            self.transport.close()

    # What the parser hands over is counted too: headers that end in the chunk they began in
    # (a large first read) never reach the count above.
    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CR LF
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._parsed_bytes += size
        if self._parsed_bytes > self.max_header_size:
            raise _TooLarge  # the parser stops; uvicorn answers through send_400_response

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request the parser refused, as a problem document."""
        if self._parsed_bytes > self.max_header_size:
            self._headers_too_large(self._parsed_bytes)
        elif len(getattr(self, "url", b"")) > MAX_URL_BYTES:  # set at a message's start
            self._refuse(_answer(BadRequest(f"the URL is longer than {MAX_URL_BYTES} bytes")))
        else:
            self._refuse(_answer(BadRequest("the request is not HTTP/1.1 this server can read")))

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self, what: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        log.info("closing a connection whose %s took too long", what)
        answer = self.cycle is None or not self.cycle.response_started
        if self.cycle is not None:
            self.cycle.disconnected = True  # its handler's writes are dropped from now on
            self.cycle.message_event.set()
        if answer:
            self._refuse(TIMEOUT_RESPONSE)
        else:
            self.transport.close()

    def _refuse(self, answer: bytes) -> None:
        """Send ``answer`` and end the connection so that the client reads it: the write side
        is shut (FIN after the answer) and what the client still sends is read and dropped
        until it closes, or for ``LINGER`` seconds. Closing a socket whose receive buffer holds
        unread bytes makes the kernel reset the connection, and a reset discards the answer
        from the client's buffer before it has read it (the headers a client is still sending
        when the limit is passed, the rest of a slow body)."""
        self._disarm()
        transport = self.transport
        transport.write(answer)
        if not transport.can_write_eof():  # TLS: no half-close
            transport.close()
            return
        transport.write_eof()
        self._lingering = True
        transport.resume_reading()  # uvicorn's flow control may have paused it
        self._deadline = self.loop.call_later(LINGER, transport.close)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, "request headers")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._parsed_bytes = 0
        self._arm(self.header_timeout, "request headers")

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:  # a new request's cycle
            cycle.transport = HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]
        self._arm(self.body_timeout, "request body")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
