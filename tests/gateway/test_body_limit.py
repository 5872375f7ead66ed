"""Which requests may carry a body past the limit: the fast lane reads only those that
cannot, so this check is what keeps the limit for it."""

from __future__ import annotations

import pytest

from gateway.body_limit import may_exceed

LIMIT = 1000


def scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "headers": list(headers)}


@pytest.mark.parametrize(
    ("headers", "exceeds"),
    [
        ((), False),  # no body
        (((b"content-length", b"1000"),), False),
        (((b"content-length", b"1001"),), True),
        (((b"content-length", b"-1"),), True),
        (((b"content-length", b"1e3"),), True),
        (((b"content-length", b""),), True),
        (((b"content-length", "１０".encode()),), True),  # not ASCII digits
        (((b"transfer-encoding", b"chunked"),), True),
        # A length beside a transfer encoding, in either order: the length does not bound it.
        (((b"content-length", b"10"), (b"transfer-encoding", b"chunked")), True),
        (((b"transfer-encoding", b"chunked"), (b"content-length", b"10")), True),
        # Two lengths: the larger counts.
        (((b"content-length", b"10"), (b"content-length", b"5000")), True),
        (((b"content-type", b"application/json"), (b"content-length", b"10")), False),
    ],
)
def test_a_body_may_exceed_the_limit_unless_its_declared_length_bounds_it(
    headers: tuple[tuple[bytes, bytes], ...], exceeds: bool
) -> None:
    assert may_exceed(scope(*headers), LIMIT) is exceeds


async def test_the_lane_stops_reading_past_the_limit_and_hands_the_body_on() -> None:
    """A server that delivers more than the declared length: the lane reads up to the limit,
    then the application receives the whole body, from its first byte, and answers."""
    from starlette.types import Message

    from gateway.api.fast import FastLanes

    chunks = [b"a" * 8, b"b" * 8, b"c" * 8]
    delivered = [
        {"type": "http.request", "body": c, "more_body": i < 2} for i, c in enumerate(chunks)
    ]
    seen: list[bytes] = []

    async def receive() -> Message:
        return delivered.pop(0)

    async def application(scope: object, receive: object, send: object) -> None:
        assert callable(receive)
        while True:
            message = await receive()
            seen.append(message["body"])
            if not message["more_body"]:
                return

    async def send(message: Message) -> None:
        raise AssertionError(f"the lane answered: {message}")

    lanes = FastLanes(application, max_body_size=10)
    request = {
        "type": "http",
        "method": "POST",
        "path": "/processes/echo/execution",
        "query_string": b"",
        "state": {},
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"5")],
    }
    await lanes(request, receive, send)
    # The lane stopped after the chunk that crossed the limit; the rest came from the server.
    assert seen == [b"a" * 8 + b"b" * 8, b"c" * 8]
