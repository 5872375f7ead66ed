"""Which URLs a job may make us fetch (the SSRF policy), and the checks that apply it.

The gateway checks URL inputs when a job is submitted (:func:`check_urls`); the worker checks
again when it connects, against the addresses it actually connects to (a name may resolve
elsewhere by then: DNS rebinding), and again at every redirect (``worker_sdk.fetch``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlRefused(ValueError):
    """The URL is not allowed by the policy (scheme, address or shape)."""


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Allowed schemes, and the private addresses that are allowed all the same.

    By default only ``http`` and ``https`` URLs whose host is a public address are allowed:
    loopback, private, link-local (169.254.0.0/16, cloud metadata), shared, multicast,
    unspecified and reserved addresses are refused, in every spelling (IPv6, IPv4-mapped,
    -compatible and -translated IPv6, NAT64 and 6to4 addresses of them, decimal, octal and
    hex IPv4). ``allow_hosts`` and ``allow_networks`` make exceptions.
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
        if _CONTROL.search(url):  # a line break would end a request line or a header early
            raise UrlRefused("the URL holds a control character")
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
        if not host.isprintable() or " " in host:  # a NUL, a newline: no resolver's name
            raise UrlRefused(f"{host!r} is not a valid host name")
        if "%" in host:
            # %31%32%37.0.0.1 is 127.0.0.1 to a URL parser that decodes it (pydantic's, the
            # WHATWG's), and an IPv6 zone names a local interface: spelled plainly or not at all.
            raise UrlRefused(f"{host!r}: a percent-encoded host is not allowed")
        if literal_address(host) is None:
            _check_name(host, bracketed="[" in parts.netloc)
        if parts.username is not None or parts.password is not None:
            raise UrlRefused("credentials in URLs are not allowed")
        return scheme, host, port or (443 if scheme == "https" else 80)

    def check_address(self, address: IPAddress, host: str) -> None:
        """Refuse a non-public address unless allow-listed: an IPv6 address that carries an
        IPv4 one (mapped, compatible, translated, NAT64, 6to4) is judged by both."""
        if host in self.allow_hosts or any(address in net for net in self._networks):
            return
        mapped = getattr(address, "ipv4_mapped", None)
        effective = mapped if mapped is not None else address
        if address in _LOCAL_NAT64:  # a site's own translator: its IPv4 side is unknown
            raise UrlRefused(f"{host} is a non-public address ({effective})")
        for judged in (effective, embedded_ipv4(address)):
            if judged is not None and (not judged.is_global or judged.is_multicast):
                raise UrlRefused(f"{host} is a non-public address ({judged})")

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


@dataclass(frozen=True, slots=True)
class Pinned:
    """A request to a checked address: the URL with the address in place of the host, and
    the host kept where HTTP and TLS need it (``Host``, SNI)."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, Any]


def pin(url: str, scheme: str, host: str, port: int, address: IPAddress) -> Pinned:
    """Connect to ``address`` (already checked) for ``url``, whose parts ``split`` gave, so
    that the name cannot resolve elsewhere between the check and the connection."""
    netloc = f"[{address}]" if address.version == 6 else str(address)
    pinned = urlsplit(url)._replace(netloc=f"{netloc}:{port}").geturl()
    default_port = port == (443 if scheme == "https" else 80)
    # On the wire a name is ASCII (IDNA: bücher.de is xn--bcher-kva.de; httpx refuses a
    # header that is not), and an IPv6 literal is bracketed in Host, bare as TLS's name.
    literal = literal_address(host)
    name = host.encode("idna").decode("ascii") if literal is None else str(literal)
    wire = f"[{name}]" if literal is not None and literal.version == 6 else name
    headers = {"Host": wire if default_port else f"{wire}:{port}"}
    extensions: dict[str, Any] = {"sni_hostname": name} if scheme == "https" else {}
    return Pinned(pinned, headers, extensions)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215, local use
_COMPATIBLE = bytes(12)  # ::a.b.c.d, deprecated IPv4-compatible addresses
_TRANSLATED = bytes(8) + b"\xff\xff\x00\x00"  # ::ffff:0:a.b.c.d (RFC 2765 SIIT)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches through a translation or a tunnel (compatible,
    SIIT, NAT64's well-known prefix, 6to4), which the IPv6 address's own class hides."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    packed = address.packed
    if packed[:12] in (_COMPATIBLE, _TRANSLATED) or address in _NAT64:
        return ipaddress.IPv4Address(packed[12:])
    return address.sixtofour


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# RFC 1035's longest name, as a resolver sends it (without the root's dot).
MAX_HOST = 253
_NUMBER = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")


def _check_name(host: str, *, bracketed: bool) -> None:
    """Refuse a host that no URL parser takes for a name, though a resolver might: what the
    gateway passes a worker's parser must pass too (pydantic's ``HttpUrl`` follows WHATWG),
    else the job is accepted only to fail there."""
    if bracketed:  # [v1.x]: an IP literal of a future version, no address of ours
        raise UrlRefused(f"{host!r} is not an IPv6 address")
    if len(host) > MAX_HOST:
        raise UrlRefused(f"the host name is longer than {MAX_HOST} characters")
    if _NUMBER.fullmatch(host.rsplit(".", 1)[-1]):  # 999.1.1.1, 1.2.3.4.5: an IPv4 to WHATWG
        raise UrlRefused(f"{host!r} is not a valid IPv4 address")
    try:  # what the resolver does with the name; an empty or 64-byte label fails
        ascii_name = host.encode("idna")
        ascii_name.decode("idna")  # a Punycode label that decodes to nothing (xn--) fails
    except UnicodeError as exc:
        raise UrlRefused(f"{host!r} is not a valid host name: {exc}") from exc


def literal_address(host: str) -> IPAddress | None:
    """The address a host names literally, in any spelling libc accepts, else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:  # 2130706433, 0x7f.1, 0177.0.0.1, 127.1: what inet_aton (and so connect) accepts
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):  # ValueError: a NUL in it
        return None


def _addresses(infos: Iterable[tuple[Any, ...]]) -> list[IPAddress]:
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (blocking: call from a thread or a child)."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:  # ValueError: a NUL in it
        raise UrlRefused(f"{host} does not resolve: {exc}") from exc
    return _addresses(infos)


async def aresolve(host: str, port: int) -> list[IPAddress]:
    """:func:`resolve` on the event loop's resolver."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:  # ValueError: a NUL in it
        raise UrlRefused(f"{host} does not resolve: {exc}") from exc
    return _addresses(infos)


async def check_url(policy: UrlPolicy, url: str, *, unresolvable: bool = False) -> None:
    """The whole policy for one URL: shape, scheme, then every address its host resolves to.

    With ``unresolvable=True`` a name that does not resolve here passes (the gateway leaves it
    to the worker, which checks again where it connects); otherwise it is refused.
    """
    _, host, port = policy.split(url)
    try:
        addresses = await aresolve(host, port)
    except UrlRefused:
        if unresolvable:
            return
        raise
    policy.check_resolved(host, addresses)


async def check_urls(
    policy: UrlPolicy, urls: Iterable[str], *, limit: int, deadline: float, unresolvable: bool
) -> dict[str, UrlRefused]:
    """Check at most ``limit`` URLs concurrently within ``deadline`` seconds in all; the
    refusals by URL. Past the limit or the deadline every URL left counts as refused."""
    distinct = list(dict.fromkeys(urls))
    if not distinct:
        return {}  # most inputs hold no URL: no timer to arm
    if len(distinct) > limit:
        refusal = UrlRefused(f"more than {limit} URLs in one request")
        return dict.fromkeys(distinct, refusal)

    async def one(url: str) -> UrlRefused | None:
        try:
            await check_url(policy, url, unresolvable=unresolvable)
        except UrlRefused as exc:
            return exc
        return None

    try:
        async with asyncio.timeout(deadline):
            outcomes = await asyncio.gather(*(one(u) for u in distinct))
    except TimeoutError:
        refusal = UrlRefused(f"resolving the URLs took longer than {deadline:g}s")
        return dict.fromkeys(distinct, refusal)
    return {url: exc for url, exc in zip(distinct, outcomes, strict=True) if exc is not None}
