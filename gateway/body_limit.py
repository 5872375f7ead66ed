"""A request body over ``SG_MAX_BODY_SIZE`` is answered with a problem document.

The limit is FastAPI's own (``max_body_size``: Starlette's body limit middleware, outermost
but for the error middleware). It answers a body past the limit with a plain-text 413 before
anything parses it, from outside every handler and middleware of the application, and
insists on that answer when the request declared its length. :class:`TooLargeAsProblem` wraps
the whole stack and puts the ``body-too-large`` problem document every other error has in its
place; the limit itself, and when it answers, stay the framework's.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import BodyTooLarge, problem_response


class GatewayApp(FastAPI):
    """FastAPI, its whole middleware stack wrapped in :class:`TooLargeAsProblem`, and that in
    :attr:`outermost` when set: the layer that answers what it can before any middleware
    runs (:class:`gateway.api.fast.FastLanes`), given the body limit to keep."""

    outermost: Callable[[ASGIApp, int | None], ASGIApp] | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if self.max_body_size is not None:
            stack = TooLargeAsProblem(stack, self.max_body_size)
        return stack if self.outermost is None else self.outermost(stack, self.max_body_size)


class TooLargeAsProblem:
    """ASGI middleware: the framework's plain-text 413 becomes a problem document."""

    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = app
        self._limit = max_body_size
        self._detail = f"the request body is larger than {max_body_size} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not may_exceed(scope, self._limit):
            await self.app(scope, receive, send)  # the hot paths: no wrapper
            return
        replaced = False

        async def answer(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and _plain_413(message):
                replaced = True
                response = problem_response(BodyTooLarge(self._detail).problem())
                await response(scope, receive, send)
            elif not replaced:  # the plain answer's body is dropped
                await send(message)

        await self.app(scope, receive, answer)


def may_exceed(scope: Scope, limit: int) -> bool:
    """Whether the request may carry a body past ``limit``: a length over it (or not a
    number), or a body of no declared length (a transfer encoding, with or without a length
    beside it)."""
    exceeds = False
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            exceeds = exceeds or not value.isdigit() or int(value) > limit
    return exceeds


def _plain_413(start: Message) -> bool:
    if start["status"] != 413:
        return False
    types = [v for k, v in start.get("headers", ()) if k.lower() == b"content-type"]
    return all(v.startswith(b"text/plain") for v in types)
