"""Messages no retry will make usable: the error that sets one aside in the poison queue, the
reading of an event's body that raises it, and the label each is counted under
(``sg_events_refused_total``)."""

from __future__ import annotations

from pydantic import ValidationError

from gateway.store import StoreRejected
from worker_sdk.wire import Event, NewerSchema, describe_error, parse_event


class Unusable(Exception):
    """A message no retry will make usable: it goes to the poison queue."""


def why_unusable(exc: Unusable) -> str:
    """The label a set-aside message is counted under, from what made it unusable."""
    cause = exc.__cause__
    if isinstance(cause, NewerSchema):
        return "newer-schema"
    if isinstance(cause, ValidationError | ValueError):
        return "unreadable"
    if isinstance(cause, StoreRejected):
        return "store-refused"
    return "unusable"


def read_event(body: bytes) -> Event:
    """The event in a message's body; :class:`Unusable` when it is none this gateway reads."""
    try:
        return parse_event(body)
    except NewerSchema as exc:
        raise Unusable(str(exc)) from exc
    except (ValidationError, ValueError) as exc:
        raise Unusable(f"not an event: {describe_error(exc)}") from exc
