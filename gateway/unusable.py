"""Messages no retry will make usable: the error that sets one aside in the poison queue, the
reading of an event's body that raises it, and the label each is counted under
(``sg_events_refused_total``)."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError

from gateway.store import StoreRejected
from worker_sdk.wire import (
    Event,
    NewerSchema,
    Outcomes,
    TerminalEvent,
    check_schema,
    describe_error,
    parse_event,
)
from worker_sdk.wire.messages import MAX_OUTCOMES

_TERMINAL: TypeAdapter[TerminalEvent] = TypeAdapter(
    Annotated[TerminalEvent, Field(discriminator="kind")]
)


class Unusable(Exception):
    """A message no retry will make usable: it goes to the poison queue."""


class Salvaged(Outcomes):
    """The events that parse of an ``outcomes`` message that does not as a whole: they are
    applied, and the message is then set aside for the others (``refused``: why each not;
    ``newer``: whether the first was written for a newer contract)."""

    refused: list[str] = Field(default_factory=list, exclude=True)
    newer: bool = Field(default=False, exclude=True)

    def refusal(self) -> Unusable | None:
        """What sets the message aside once its events are applied, if any was refused."""
        if not self.refused:
            return None
        total, why = len(self.events) + len(self.refused), self.refused[0]
        error = Unusable(f"{len(self.refused)} of its {total} events do not parse; first {why}")
        error.__cause__ = NewerSchema(why) if self.newer else ValueError(why)
        return error


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
    """The event in a message's body; :class:`Unusable` when it is none this gateway reads.
    An ``outcomes`` message with events that do not parse gives those that do
    (:class:`Salvaged`): one bad entry holds back no other job's end."""
    try:
        return parse_event(body)
    except (ValidationError, ValueError) as exc:  # NewerSchema too
        salvaged = _salvage(body)
        if salvaged is not None:
            return salvaged
        if isinstance(exc, NewerSchema):
            raise Unusable(str(exc)) from exc
        raise Unusable(f"not an event: {describe_error(exc)}") from exc


def _salvage(body: bytes) -> Salvaged | None:
    """The events of an ``outcomes`` message that parse one by one; None when it is no such
    message (its envelope does not parse, or it is not UTF-8) or none of its events does."""
    if b'"outcomes"' not in body:  # no second parse of a large body that is not one
        return None
    try:
        envelope = json.loads(body.decode("utf-8"))  # not json's guess of UTF-16 or -32
    except (ValueError, RecursionError):
        return None
    if not isinstance(envelope, dict) or envelope.get("kind") != "outcomes":
        return None
    entries = envelope.get("events")
    if not isinstance(entries, list) or not 0 < len(entries) <= MAX_OUTCOMES:
        return None
    events: list[TerminalEvent] = []
    refused: list[str] = []
    newer = False
    for index, entry in enumerate(entries):
        try:
            event = _TERMINAL.validate_json(json.dumps(entry))
            check_schema(event)
        except (ValueError, RecursionError) as exc:  # ValidationError and NewerSchema too
            refused.append(f"events[{index}]: {describe_error(exc)}")
            newer = newer or (len(refused) == 1 and isinstance(exc, NewerSchema))
        else:
            events.append(event)
    if not events:
        return None
    fields = {k: v for k, v in envelope.items() if k in ("service", "worker_id", "schema_version")}
    try:
        salvaged = Salvaged.model_validate(
            {**fields, "events": events, "refused": refused, "newer": newer}
        )
        check_schema(salvaged)
    except ValueError:  # its envelope is broken too
        return None
    return salvaged
