"""Where the gateway is, who calls it, and how hard to retry."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

URL_ENV = "SG_CLIENT_URL"
TOKEN_ENV = "SG_CLIENT_TOKEN"
DEFAULT_URL = "http://localhost:8000"


def resolve(base_url: str | None, token: str | None) -> tuple[str, str | None]:
    """The gateway URL and token: the arguments, else ``SG_CLIENT_URL``/``SG_CLIENT_TOKEN``,
    else ``http://localhost:8000`` and no token."""
    # Two variables read once, at construction: a settings library would add a dependency to
    # a package meant to stay installable on its own (httpx, httpx-sse, pydantic).
    url = base_url or os.environ.get(URL_ENV) or DEFAULT_URL
    return url.rstrip("/"), token or os.environ.get(TOKEN_ENV) or None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a call that was refused (429, 502, 503, 504) or broken (connection refused or
    reset, timeout) is retried: ``attempts`` tries in all, pausing ``backoff`` seconds, then
    twice as long each time up to ``max_backoff``, with jitter. A ``Retry-After`` from the
    gateway replaces the computed pause (capped at ``max_backoff`` as well).

    Submits are safe to retry because each carries one ``Idempotency-Key`` over all its tries.
    """

    attempts: int = 6
    backoff: float = 0.5
    max_backoff: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("attempts must be >= 1, backoff and max_backoff >= 0")

    def pause(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th failure in a row."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff)
        ceiling = min(self.backoff * 2.0 ** (failures - 1), self.max_backoff)
        # Half fixed, half random: clients refused together do not come back together.
        return ceiling / 2 + random.uniform(0, ceiling / 2)


NO_RETRY = RetryPolicy(attempts=1)
