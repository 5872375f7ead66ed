"""What a pinned request carries: the checked address to connect to, and the host as the wire
takes it."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from worker_sdk.wire.urls import pin

IDN = "例え.テスト"
PUNY = "xn--bcher-kva.de"
V6 = "2001:db8::1"
ADDRESS = "93.184.216.34"


@pytest.mark.parametrize(
    ("url", "host", "port", "address", "header", "sni"),
    [
        ("https://bücher.de/a", "bücher.de", 443, ADDRESS, PUNY, PUNY),
        (f"http://{IDN}:8080/x", IDN, 8080, ADDRESS, "xn--r8jz45g.xn--zckzah:8080", None),
        (f"https://[{V6}]:8443/", V6, 8443, V6, f"[{V6}]:8443", V6),
        ("http://example.org/x", "example.org", 80, ADDRESS, "example.org", None),
    ],
)
def test_the_host_goes_on_the_wire_in_ascii_and_an_ipv6_literal_in_brackets(
    url: str, host: str, port: int, address: str, header: str, sni: str | None
) -> None:
    pinned = pin(url, url.split(":")[0], host, port, ipaddress.ip_address(address))
    assert pinned.headers == {"Host": header}
    assert pinned.extensions == ({"sni_hostname": sni} if sni else {})
    # httpx takes it: a Host header that is not ASCII made it raise UnicodeEncodeError
    request = httpx.Request("GET", pinned.url, headers=pinned.headers)
    assert request.headers["host"] == header
