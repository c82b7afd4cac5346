"""The Tornado application: every HTTP and WebSocket route in one table."""

from __future__ import annotations

import tornado.web

from transport.http_faults import fault_routes
from transport.http_ops import ops_routes
from transport.http_probes import HealthHandler, ReadyHandler
from transport.http_web import web_routes
from transport.ws import GameSocket


def make_app(node) -> tornado.web.Application:
    """Build the application for ``node`` (handlers reach it as ``self.application.settings['node']``)."""
    routes = [
        (r"/healthz", HealthHandler),
        (r"/readyz", ReadyHandler),
        (r"/ws", GameSocket),
        *ops_routes(),
        *web_routes(node.settings.mode),
        *fault_routes(node.settings),
    ]
    s = node.settings.server
    return tornado.web.Application(
        routes,
        node=node,
        websocket_max_message_size=64 * 1024,
        websocket_ping_interval=s.websocket_ping_interval_s,
        websocket_ping_timeout=s.websocket_ping_timeout_s,
    )
