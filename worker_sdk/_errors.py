"""Exceptions a handler raises to choose how its job fails."""

from __future__ import annotations


class HandlerError(Exception):
    """Fail the job with a stable machine ``code`` (default ``handler_error``).

    Any other exception fails the job too, with code ``handler_error`` and the exception's
    type and message; raise this one when the client should be able to tell failures apart.
    """

    def __init__(self, message: str, *, code: str = "handler_error", retryable: bool = False):
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class Retry(Exception):
    """Try the job again after ``delay`` seconds, while the service's attempts last.

    The delay is rounded up to the next of 1, 5, 15, 60, 300, 900 or 3600 seconds (each is a
    holding queue). When no attempt is left the job fails with this exception's message.
    """

    def __init__(self, message: str = "retry requested", *, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


def describe(exc: BaseException) -> str:
    """The message of what a handler raised: ``str(exc)``, or, when its ``__str__`` itself
    raises, its type alone; the job's error is reported whatever the handler raised."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ of any kind
        return f"{type(exc).__name__} (its message could not be read)"
