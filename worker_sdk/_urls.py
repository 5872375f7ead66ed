"""Which URLs a job may make us fetch (SSRF policy), and a fetch that enforces it.

The gateway checks URL inputs when a job is submitted; the worker checks again when it
connects, against the addresses it actually connects to (a name may resolve elsewhere by then:
DNS rebinding), and again at every redirect.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_TIMEOUT = 60.0
MAX_REDIRECTS = 5


class UrlRefused(ValueError):
    """The URL is not allowed by the policy (scheme, address or shape)."""


class FetchError(RuntimeError):
    """The document could not be fetched (HTTP error, too large, too slow)."""


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Allowed schemes, and the private addresses that are allowed all the same.

    By default only ``http`` and ``https`` URLs whose host is a public address are allowed:
    loopback, private, link-local (169.254.0.0/16, cloud metadata), shared, multicast,
    unspecified and reserved addresses are refused, in every spelling (IPv6, IPv4-mapped IPv6,
    decimal, octal and hex IPv4). ``allow_hosts`` and ``allow_networks`` make exceptions.
    """

    schemes: tuple[str, ...] = ("http", "https")
    allow_hosts: tuple[str, ...] = ()
    allow_networks: tuple[str, ...] = ()
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        networks = tuple(ipaddress.ip_network(n, strict=False) for n in self.allow_networks)
        object.__setattr__(self, "_networks", networks)

    def split(self, url: str) -> tuple[str, str, int]:
        """Check the URL's shape and scheme; return (scheme, host, port)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise UrlRefused(f"not a valid URL: {exc}") from exc
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            raise UrlRefused(
                f"scheme {scheme or '(none)'!r} is not allowed ({', '.join(self.schemes)})"
            )
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise UrlRefused("the URL has no host")
        if parts.username is not None or parts.password is not None:
            raise UrlRefused("credentials in URLs are not allowed")
        return scheme, host, port or (443 if scheme == "https" else 80)

    def check_address(self, address: IPAddress, host: str) -> None:
        """Refuse a non-public address unless allow-listed."""
        if host in self.allow_hosts or any(address in net for net in self._networks):
            return
        mapped = getattr(address, "ipv4_mapped", None)
        effective = mapped if mapped is not None else address
        if not effective.is_global or effective.is_multicast:
            raise UrlRefused(f"{host} is a non-public address ({effective})")

    def check_literal(self, url: str) -> None:
        """Check what needs no DNS: shape, scheme and a literal address (any spelling)."""
        _, host, _ = self.split(url)
        literal = literal_address(host)
        if literal is not None:
            self.check_address(literal, host)

    def check_resolved(self, host: str, addresses: Iterable[IPAddress]) -> None:
        addresses = list(addresses)
        if not addresses:
            raise UrlRefused(f"{host} does not resolve")
        for address in addresses:
            self.check_address(address, host)


def literal_address(host: str) -> IPAddress | None:
    """The address a host names literally, in any spelling libc accepts, else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:  # 2130706433, 0x7f.1, 0177.0.0.1, 127.1: what inet_aton (and so connect) accepts
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (blocking: call from a thread or a child)."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UrlRefused(f"{host} does not resolve: {exc.strerror}") from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


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
            target = addresses[0]
            netloc = f"[{target}]" if target.version == 6 else str(target)
            pinned = urlsplit(url)._replace(netloc=f"{netloc}:{port}").geturl()
            default_port = port == (443 if scheme == "https" else 80)
            headers = {"Host": host if default_port else f"{host}:{port}"}
            extensions = {"sni_hostname": host} if scheme == "https" else {}
            with client.stream("GET", pinned, headers=headers, extensions=extensions) as response:
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
