"""A local HTTP receiver of webhooks, in a thread: it records every request and answers with
the status its plan gives (per ``webhook-id`` and attempt)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# (webhook-id, how many requests with that id came before) -> the status to answer
Plan = Callable[[str, int], int]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def event_id(self) -> str:
        return self.headers.get("webhook-id", "")


class Receiver:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def record(self, path: str, headers: dict[str, str], body: bytes) -> int:
        event_id = headers.get("webhook-id", "")
        with self._lock:
            before = sum(1 for r in self.requests if r.event_id == event_id)
        status = self.plan(event_id, before)  # a plan may hold the request: not under the lock
        with self._lock:
            self.requests.append(Received(path, headers, body, status))
        return status

    def of_type(self, kind: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if f'"type":"{kind}"' in r.body.decode()]

    def successes(self, event_id: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.event_id == event_id and r.answered < 300)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.record(self.path, headers, body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def receiving(plan: Plan = lambda _id, _before: 204, port: int = 0) -> Iterator[Receiver]:
    """A receiver listening on 127.0.0.1 until the block ends."""
    receiver = Receiver(plan)
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(receiver))
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
