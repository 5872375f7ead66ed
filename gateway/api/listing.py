"""Query parameters of the OGC lists: the output format, the job list's filters and its
opaque cursor. A value that cannot be used is ``400 invalid-query-parameter-value``."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from urllib.parse import urlencode
from uuid import UUID

from gateway.api.schemas import HTML, JSON
from gateway.errors import InvalidQueryParameter
from gateway.negotiation import best_match
from gateway.store import JobStatus

MAX_CURSOR = 200


def wants_html(accept: str | None, f: str | None) -> bool:
    """``?f=html``/``?f=json`` first, else ``Accept``: JSON is offered first, so that no
    header, ``*/*`` (curl, most clients) and ties give JSON, while a browser, which ranks
    ``text/html`` above ``*/*``, gets HTML."""
    if f is not None:
        if f not in ("json", "html"):
            raise InvalidQueryParameter(f"f={f!r}: expected json or html")
        return f == "html"
    return best_match(accept, [JSON, HTML]) == HTML


def encode_cursor(created: datetime, job_id: UUID) -> str:
    """The opaque position after a job: its ``created`` and id, base64url."""
    raw = json.dumps([created.isoformat(), str(job_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


MAX_DURATION = 10**12  # seconds (31,000 years): any run, and inside every store's integers


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """A cursor made by :func:`encode_cursor`; anything else is 400."""
    try:
        if len(cursor) > MAX_CURSOR:
            raise ValueError("too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        created, job_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(created, str) or not isinstance(job_id, str):
            raise TypeError("not two strings")  # UUID(5) raises AttributeError
        at = datetime.fromisoformat(created)
        if at.tzinfo is None:
            raise ValueError("no time zone")
        return at.astimezone(UTC), UUID(job_id)
    except (ValueError, TypeError, UnicodeError, binascii.Error, OverflowError):
        raise InvalidQueryParameter(
            "cursor: not a cursor of this list (use the `next` link as it is)"
        ) from None


def _instant(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.upper())  # RFC 3339 §5.6 allows "t" and "z"
    except ValueError:
        raise InvalidQueryParameter(
            f"datetime: {text!r} is not an RFC 3339 date-time (e.g. 2026-11-30T12:00:00Z)"
        ) from None
    if at.tzinfo is None:
        raise InvalidQueryParameter(f"datetime: {text!r} has no time zone offset")
    try:
        at = at.astimezone(UTC)  # as the store compares it
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is no UTC time
        raise InvalidQueryParameter(f"datetime: {text!r} is out of range") from None
    return at


def parse_datetime(value: str | None) -> tuple[datetime | None, datetime | None]:
    """OGC's ``datetime``: an instant, or an interval ``start/end`` whose either end may be
    open (``..`` or empty); the bounds are inclusive."""
    if value is None:
        return None, None
    if len(value) > 100:
        raise InvalidQueryParameter("datetime: too long")
    if "/" not in value:
        at = _instant(value)
        return at, at
    start, _, end = value.partition("/")
    low = None if start in ("", "..") else _instant(start)
    high = None if end in ("", "..") else _instant(end)
    if low is None and high is None:
        raise InvalidQueryParameter("datetime: an interval needs at least one end")
    if low is not None and high is not None and low > high:
        raise InvalidQueryParameter("datetime: the interval ends before it starts")
    return low, high


def split(values: list[str] | None, name: str, *, limit: int = 50) -> tuple[str, ...]:
    """A list parameter, repeated (``?a=x&a=y``) or comma-separated (``?a=x,y``)."""
    items = tuple(
        dict.fromkeys(v.strip() for value in values or () for v in value.split(",") if v.strip())
    )
    if len(items) > limit:
        raise InvalidQueryParameter(f"{name}: at most {limit} values")
    return items


def statuses(values: list[str] | None) -> frozenset[JobStatus]:
    found = set()
    for value in split(values, "status"):
        try:
            found.add(JobStatus(value))
        except ValueError:
            allowed = ", ".join(s.value for s in JobStatus)
            raise InvalidQueryParameter(f"status: {value!r} is not one of {allowed}") from None
    return frozenset(found)


def query_string(params: dict[str, str | int | float | tuple[str, ...] | None]) -> str:
    """The query of a link, repeating list parameters; unset ones left out."""
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, tuple):
            pairs.extend((name, item) for item in value)
        else:
            pairs.append((name, str(value)))
    return urlencode(pairs)
