"""The login rate limit: a token bucket per client address (``auth.login_rate_per_minute``,
``auth.login_burst``), for WebSocket ``hello`` logins, ``POST /auth/dev-login`` and the
console's ``POST /debug/sign-in``.

One node's own count (in memory, IOLoop thread only): behind a balancer each node limits what
reaches it. The table is bounded: past ``MAX_ADDRESSES`` addresses, the ones whose bucket has
refilled are forgotten (they are indistinguishable from new ones). IPv6 clients count per /64.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable

import tornado.httputil
import tornado.web

from config.settings import Settings
from transport.peers import client_address, trusted_networks

MAX_ADDRESSES = 100_000


class LoginRateLimiter:
    """``allow(address)`` spends one login from that address's bucket, or says how long to wait."""

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0  # logins per second
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def allow(self, address: str) -> float:
        """0.0 when a login from ``address`` may go ahead (and is counted), else the seconds
        until it may."""
        address = address_key(address)
        now = self._clock()
        tokens, at = self._buckets.get(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            return (1.0 - tokens) / self.rate
        if address not in self._buckets and len(self._buckets) >= MAX_ADDRESSES:
            self._forget_refilled(now)
        self._buckets[address] = (tokens - 1.0, now)
        return 0.0

    def _forget_refilled(self, now: float) -> None:
        full = [a for a, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst]
        for address in full:
            del self._buckets[address]
        # Still nearly full (many addresses at once): the longest-known go first, down to 90%,
        # so the scan above runs at most once per tenth of the table, not on every new address.
        while len(self._buckets) > MAX_ADDRESSES * 9 // 10:
            del self._buckets[next(iter(self._buckets))]


def address_key(address: str) -> str:
    """The bucket of ``address``: itself for IPv4, its /64 for IPv6 (one host gets a whole /64)."""
    try:
        addr = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(getattr(addr, "ipv4_mapped", None) or addr)


class LoginGate:
    """The node's login limit: the client's address (behind ``server.trusted_proxies``, from
    their forwarding header) and its bucket. IOLoop thread only."""

    def __init__(self, settings: Settings) -> None:
        a = settings.auth
        self.limiter = LoginRateLimiter(a.login_rate_per_minute, a.login_burst)
        self.trusted = trusted_networks(settings.server.trusted_proxies)

    def wait_s(self, request: tornado.httputil.HTTPServerRequest) -> float:
        """0.0 when this request's client may log in now (counted), else seconds to wait."""
        return self.limiter.allow(client_address(request, self.trusted))

    def refusal(self, request: tornado.httputil.HTTPServerRequest, what: str = "logins") -> str | None:
        """None when this request's client may log in now (counted); else what to tell it."""
        wait = self.wait_s(request)
        return None if wait <= 0 else _too_many(what, math.ceil(wait))

    def refuse_http(self, handler: tornado.web.RequestHandler, what: str = "logins") -> str | None:
        """:meth:`refusal` for an HTTP login: when refused, the handler's status is 429 with
        ``Retry-After`` set, and the message is returned for the handler's own body."""
        wait = self.wait_s(handler.request)
        if wait <= 0:
            return None
        seconds = math.ceil(wait)
        handler.set_status(429)
        handler.set_header("Retry-After", str(seconds))
        return _too_many(what, seconds)


def _too_many(what: str, seconds: int) -> str:
    return f"too many {what} from your address; try again in {seconds} s"
