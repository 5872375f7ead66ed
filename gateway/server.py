"""The HTTP server's own guard against slow clients, beside uvicorn's keep-alive timeout.

uvicorn times out a connection only while it idles between requests. A client that opens a
connection and trickles its request headers, or its body, a byte at a time would hold the
connection (and, for a body, the request's handler) for as long as it likes. This protocol
gives the headers ``header_timeout`` seconds from the first byte of a request (or from the
connection, for the first request) and the body ``body_timeout`` seconds after the headers;
past either, it answers 408 when no response has begun, and closes the connection.

uvicorn instantiates protocols itself, in each worker process, so the timeouts are class
attributes that ``gateway.app.app_factory`` sets from the settings.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("gateway.server")

TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 24\r\n"
    b"connection: close\r\n\r\n"
    b"the request was too slow"
)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body deadlines."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    _deadline: asyncio.TimerHandle | None = None

    @classmethod
    def configure(cls, *, header_timeout: float, body_timeout: float) -> None:
        cls.header_timeout = header_timeout
        cls.body_timeout = body_timeout

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
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(TIMEOUT_RESPONSE)
        if self.cycle is not None:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, "request headers")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.header_timeout, "request headers")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_timeout, "request body")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
