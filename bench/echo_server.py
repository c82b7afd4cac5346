"""The bare bound: a minimal Tornado WebSocket server that echoes every text frame back.

``python -m bench.echo_server [PORT]`` listens on 127.0.0.1 (0: a free port) and prints
``ready <port>`` when it accepts connections. Same Tornado, same settings that matter
(TCP_NODELAY, no compression) as tilehall's ``/ws``, none of its work.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket


class EchoSocket(tornado.websocket.WebSocketHandler):
    """Echo each frame back as it arrives."""

    def check_origin(self, origin: str) -> bool:
        """Any origin: the bench client sends none."""
        return True

    def open(self) -> None:
        """Disable Nagle, as tilehall does."""
        self.set_nodelay(True)

    def on_message(self, message: str | bytes) -> None:
        """Write the frame straight back."""
        self.write_message(message, binary=isinstance(message, bytes))


async def serve(port: int) -> None:
    """Listen until SIGTERM/SIGINT."""
    app = tornado.web.Application([(r"/ws", EchoSocket)], websocket_max_message_size=64 * 1024)
    server = tornado.httpserver.HTTPServer(app)
    sockets = tornado.netutil.bind_sockets(port, address="127.0.0.1", backlog=1024)
    server.add_sockets(sockets)
    print(f"ready {sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
