"""The Tornado application: every HTTP and WebSocket route in one table.

Handlers receive the node as ``initialize(node=...)`` (typed :class:`transport.ports.NodePort`),
so no handler module imports :mod:`transport.node`.
"""

from __future__ import annotations

import tornado.web

from transport.http_admin import admin_routes
from transport.http_auth import auth_routes
from transport.http_console import console_routes
from transport.http_faults import fault_routes
from transport.http_methods import allow_header_transform
from transport.http_operator import operator_routes
from transport.http_ops import ops_routes
from transport.http_probes import HealthHandler, ReadyHandler
from transport.http_web import web_routes
from transport.ports import NodePort
from transport.ws import GameSocket


def make_app(node: NodePort) -> tornado.web.Application:
    """Build the application for ``node``."""
    given = {"node": node}
    routes = [
        (r"/healthz", HealthHandler),
        (r"/readyz", ReadyHandler),
        (r"/ws", GameSocket, given),
        *ops_routes(given),
        *admin_routes(given),
        *console_routes(given),
        *operator_routes(given),
        *web_routes(node.settings.mode, given),
        *auth_routes(node.settings),
        *fault_routes(node.settings, given),
    ]
    s = node.settings.server
    app = tornado.web.Application(
        routes,
        node=node,  # for the probes, which read it from the application settings
        websocket_max_message_size=64 * 1024,
        websocket_ping_interval=s.websocket_ping_interval_s,
        websocket_ping_timeout=s.websocket_ping_timeout_s,
    )
    app.add_transform(allow_header_transform(routes))
    return app
