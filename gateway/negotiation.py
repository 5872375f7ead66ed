"""Content negotiation on the ``Accept`` header, for every route that answers in several types.

It never raises: a malformed header (``q=abc``, ``q=nan``, garbage, thousands of entries)
matches what its well-formed entries match, and an entry whose quality cannot be read is
ignored, as RFC 9110 §12.4.2 lets a server do.
"""

from __future__ import annotations

import math

MAX_ENTRIES = 64  # a longer header is read up to here: no client needs more


def _quality(params: list[str]) -> float | None:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return None
            return q if math.isfinite(q) and 0.0 <= q <= 1.0 else None
    return 1.0


def parse_accept(accept: str | None) -> list[tuple[str, float]]:
    """The header's media ranges with their qualities, lower-cased, in header order."""
    if not accept:
        return []
    ranges = []
    for part in accept.split(",")[:MAX_ENTRIES]:
        media, *params = (p.strip() for p in part.split(";"))
        quality = _quality(params)
        if media and quality is not None:
            ranges.append((media.lower(), quality))
    return ranges


def _specificity(media: str, offer: str) -> int:
    if media == offer:
        return 2
    if media == offer.split("/")[0] + "/*":
        return 1
    if media == "*/*":
        return 0
    return -1


def best_match(accept: str | None, offers: list[str]) -> str | None:
    """The offer the client prefers (Werkzeug's ``best_match``): for each offer the quality of
    the most specific range that matches it; the highest quality wins; the first offer listed
    wins a tie. ``None`` when nothing is acceptable or the header is absent."""
    ranges = parse_accept(accept)
    best, best_q = None, 0.0
    for offer in offers:
        matching = [(_specificity(m, offer), q) for m, q in ranges if _specificity(m, offer) >= 0]
        if not matching:
            continue
        _, quality = max(matching)
        if quality > best_q:
            best, best_q = offer, quality
    return best
