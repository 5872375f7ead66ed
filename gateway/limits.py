"""Per-owner submission rate (a token bucket per gateway process)."""

from __future__ import annotations

import time


class SubmitLimiter:
    """``rate`` submissions per second per owner, bursts of up to ``burst``.

    Each gateway process keeps its own buckets, so N processes admit up to N times the rate;
    set the rate per process accordingly.
    """

    def __init__(self, rate: float | None, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, owner: str) -> float | None:
        """Take one token; None when allowed, else the seconds to wait."""
        if self._rate is None:
            return None
        now = time.monotonic()
        tokens, last = self._buckets.get(owner, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1:
            self._buckets[owner] = (tokens, now)
            return (1 - tokens) / self._rate
        self._buckets[owner] = (tokens - 1, now)
        if len(self._buckets) > 10_000:
            self._forget_full(now)
        return None

    def _forget_full(self, now: float) -> None:
        assert self._rate is not None
        refill = self._burst / self._rate
        self._buckets = {o: b for o, b in self._buckets.items() if now - b[1] < refill}
