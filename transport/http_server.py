"""The node's listener: Tornado's HTTPServer with a cap on plain HTTP connections.

Tornado's HTTPServer accepts connections without limit; past ``server.max_http_connections``
open plain HTTP connections this one answers a new connection ``503`` (``Retry-After``) and
closes it, so idle or slow HTTP clients cannot exhaust the process's file descriptors. A
connection that upgrades to a WebSocket leaves this count (Tornado detaches it) and is counted by
``server.max_connections`` instead (:meth:`transport.node.Node.register_socket`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from typing import Any

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web
from tornado.ioloop import IOLoop

from actors.vocabulary import ErrorCode
from config.settings import Settings
from transport.worker_role import WorkerRole, bind_listeners

log = logging.getLogger(__name__)

_FULL_BODY = json.dumps({"error": ErrorCode.SERVER_FULL.value,
                         "message": "too many open HTTP connections; try again soon"}).encode()
FULL_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_FULL_BODY)).encode() + b"\r\n\r\n" + _FULL_BODY
)
# How long a refused connection may take to read our 503 before we close it.
REFUSED_LINGER_S = 1.0


class CappedHTTPServer(tornado.httpserver.HTTPServer):
    """An HTTPServer holding at most ``max_http_connections`` plain HTTP connections."""

    def initialize(self, app: tornado.web.Application, *, max_http_connections: int, **kwargs: Any) -> None:
        """Tornado's HTTPServer options, plus the cap (Tornado builds servers with ``initialize``)."""
        super().initialize(app, **kwargs)
        self.max_http_connections = max_http_connections
        self.http_connections = 0
        self.refused = 0

    def handle_stream(self, stream: tornado.iostream.IOStream, address: tuple) -> None:
        """Serve the connection, or answer 503 and close it when the cap is reached."""
        if self.http_connections >= self.max_http_connections:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("HTTP connection cap (%d) reached: %d connections refused so far",
                            self.max_http_connections, self.refused)
            IOLoop.current().spawn_callback(_refuse, stream)
            return
        self.http_connections += 1
        super().handle_stream(stream, address)

    def on_close(self, server_conn: object) -> None:
        """A connection closed or was detached (a WebSocket upgrade): it leaves the count."""
        self.http_connections -= 1
        super().on_close(server_conn)


async def _refuse(stream: tornado.iostream.IOStream) -> None:
    """Write the 503, stop sending, and read what the client sent (briefly) before closing, so
    the close does not reset the connection before the client read the answer."""
    try:
        await stream.write(FULL_RESPONSE)
        stream.socket.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + REFUSED_LINGER_S
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.wait_for(stream.read_bytes(64 * 1024, partial=True), left)
    except (tornado.iostream.StreamClosedError, TimeoutError, OSError):
        pass
    finally:
        stream.close()


def listen(
    app: tornado.web.Application, settings: Settings, role: WorkerRole | None = None
) -> tuple[CappedHTTPServer, int]:
    """Bind ``server.host:server.port`` (shared with the other workers, plus the worker's own
    port, when ``role`` is a worker's) and serve ``app`` there; the server and its port."""
    s = settings.server
    server = CappedHTTPServer(
        app,
        max_http_connections=s.max_http_connections,
        idle_connection_timeout=s.idle_connection_timeout_s,
        body_timeout=s.body_timeout_s,
        max_header_size=16 * 1024,
        max_body_size=64 * 1024,
        xheaders=False,  # remote_ip is the TCP peer: see transport.peers
    )
    sockets, port = bind_listeners(s, role)
    server.add_sockets(sockets)
    return server, port
