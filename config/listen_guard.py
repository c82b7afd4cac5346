"""Dev mode listens on loopback only, unless the operator says otherwise.

Dev mode hands a token for any name to anyone who asks (``/auth/dev-login``) and accepts HS256
tokens signed with the install's dev secret: exposed on a network, anyone could play as anyone.
"""

from __future__ import annotations

import ipaddress
import socket

from config.settings import Settings


def _is_loopback_host(host: str) -> bool:
    """True when every address ``host`` names is a loopback address ("" and 0.0.0.0 are not)."""
    if host in ("", "0.0.0.0", "::", "*"):
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%", 1)[0]).is_loopback for i in infos)


def remote_dev_refusal(settings: Settings) -> str | None:
    """Why this server must not listen as configured (one line), or None when it may."""
    host = settings.server.host
    if settings.mode != "dev" or settings.server.allow_remote_dev or _is_loopback_host(host):
        return None
    return (
        f"dev mode listens on loopback only, and server.host is {host or 'every address'!r}: dev mode"
        " gives a token for any name to anyone who asks. Use mode = \"production\" with your"
        " identity provider, or, if you mean it, pass --allow-remote-dev"
        " (server.allow_remote_dev = true, TILEHALL_SERVER__ALLOW_REMOTE_DEV=true)"
    )
