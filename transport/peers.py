"""Who is on the other end of an HTTP request: the peer, whether it is local, and the client's
address behind a trusted reverse proxy.

The HTTPServer is built without Tornado's ``xheaders``, so ``request.remote_ip`` is always the
TCP peer, never a header's claim. A request that carries a proxy's forwarding header
(``X-Forwarded-For``, ``Forwarded``, ``X-Real-IP``) came through a proxy, even from loopback (a
proxy on the same host is a loopback peer): it is never local.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import tornado.httputil

PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped or addr


def is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback addresses."""
    addr = _address(ip)
    return addr is not None and addr.is_loopback


def is_proxied(request: tornado.httputil.HTTPServerRequest) -> bool:
    """True when the request carries a reverse proxy's forwarding header."""
    return any(h in request.headers for h in PROXY_HEADERS)


def is_direct_local(request: tornado.httputil.HTTPServerRequest) -> bool:
    """True for a request from a loopback peer that no proxy forwarded."""
    return is_loopback(request.remote_ip or "") and not is_proxied(request)


def trusted_networks(cidrs: Iterable[str]) -> list[Network]:
    """``server.trusted_proxies`` as networks (validated by the settings)."""
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def client_address(request: tornado.httputil.HTTPServerRequest, trusted: list[Network]) -> str:
    """The client's address: the TCP peer, or, when the peer is a trusted proxy, the nearest
    address in ``X-Forwarded-For`` (then ``X-Real-IP``) that is not itself a trusted proxy."""
    peer = request.remote_ip or ""

    def is_trusted(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(addr in net for net in trusted)

    addr = _address(peer)
    if addr is None or not trusted or not is_trusted(addr):
        return peer
    hops = [h for part in request.headers.get_list("X-Forwarded-For") for h in part.split(",")]
    if not hops and (real := request.headers.get("X-Real-IP")):
        hops = [real]
    for hop in reversed(hops):
        hop_addr = _address(hop)
        if hop_addr is None:
            break  # a mangled entry: the proxy nearest it is the last address we can trust
        if not is_trusted(hop_addr):
            return str(hop_addr)
        peer = str(hop_addr)
    return peer
