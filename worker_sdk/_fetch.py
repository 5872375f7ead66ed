"""Downloading a document under the URL policy: the worker's side of the SSRF defence."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urljoin

import httpx

from .wire.urls import UrlPolicy, pin, resolve

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_TIMEOUT = 60.0
MAX_REDIRECTS = 5


class FetchError(RuntimeError):
    """The document could not be fetched (HTTP error, too large, too slow)."""


def fetch(
    url: str,
    *,
    policy: UrlPolicy,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT,
    on_chunk: Callable[[int, int | None], None] | None = None,
) -> bytes:
    """Download ``url`` under ``policy``, connecting only to addresses the policy allows.

    Each hop is resolved, checked, and connected to by address (the host name is kept for the
    ``Host`` header and TLS), so a name cannot resolve to an allowed address for the check and
    to a forbidden one for the connection. Redirects are followed by hand, each one checked,
    at most five. ``on_chunk(received, total)`` reports the download as it goes.
    """
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            scheme, host, port = policy.split(url)
            addresses = resolve(host, port)
            policy.check_resolved(host, addresses)
            target = pin(url, scheme, host, port, addresses[0])
            with client.stream(
                "GET", target.url, headers=target.headers, extensions=target.extensions
            ) as response:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(f"{url} redirected without a Location")
                    url = urljoin(url, location)
                    continue
                if response.status_code != 200:
                    raise FetchError(f"fetching {url} answered HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                total = int(declared) if declared and declared.isdigit() else None
                if total is not None and total > max_bytes:
                    raise FetchError(f"{url} is {total} bytes, more than {max_bytes}")
                chunks: list[bytes] = []
                received = 0
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > max_bytes:
                        raise FetchError(f"{url} is larger than {max_bytes} bytes")
                    chunks.append(chunk)
                    if on_chunk is not None:
                        on_chunk(received, total)
                return b"".join(chunks)
    raise FetchError(f"{url} redirected more than {MAX_REDIRECTS} times")
