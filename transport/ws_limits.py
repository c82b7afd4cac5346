"""The frame-size cap of ``/ws`` at the protocol level: Tornado's WebSocket protocol 13, except
that a frame over Tornado's read cap is answered like any frame over ``session.max_frame_bytes``
(an ``error frame_too_large`` frame, then close 1009) instead of a connection reset.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, cast

import tornado.iostream
import tornado.websocket
from tornado.ioloop import IOLoop

from actors.vocabulary import CloseCode, ErrorCode
from transport.ports import NodePort
from transport.ws_read import BufferedReadProtocol

# A frame over Tornado's read cap (the application's websocket_max_message_size) is never held
# in memory: its bytes are read and dropped, at most this many within this time, so the client
# can read our error frame and close 1009 (closing with unread data would reset the connection
# and lose them).
DRAIN_MAX_BYTES = 16 * 1024 * 1024
DRAIN_MAX_S = 5.0
DRAIN_CHUNK = 64 * 1024
_TORNADO_TOO_BIG = "message too big"


class _Handler(Protocol):
    """What the protocol needs of its handler (:class:`transport.ws.GameSocket`)."""

    node: NodePort

    def fail(self, code: int, err: str, message: str) -> None:
        """An ``error`` frame, then close with ``code``."""


class CappedProtocol(BufferedReadProtocol):
    """Tornado's protocol 13, except that a frame over the read cap is answered like any frame
    over ``session.max_frame_bytes``: an ``error frame_too_large`` frame and close 1009.

    Tornado (6.x) answers such a frame by closing with *message too big* and at once ``_abort()``,
    which closes the socket while the rest of the frame is still unread: the peer gets a TCP
    reset and usually neither our close frame nor any error. Here the close goes out with our
    error frame first, then the rest of the frame is drained (bounded) before the socket closes.
    """

    _too_big = False
    _draining = False

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Tornado's close, except for its own "message too big" close (see the class)."""
        if code == CloseCode.TOO_LARGE and reason == _TORNADO_TOO_BIG and not self.server_terminated:
            self._too_big = True
            cap = self.params.max_message_size
            handler = cast(_Handler, self.handler)
            handler.fail(CloseCode.TOO_LARGE, ErrorCode.FRAME_TOO_LARGE,
                         f"frames are limited to {handler.node.settings.session.max_frame_bytes} bytes;"
                         f" this one had more than {cap}")
            if not self.server_terminated:  # the handler had already let go of this connection
                super().close(int(CloseCode.TOO_LARGE), ErrorCode.FRAME_TOO_LARGE)
            return
        super().close(code, reason)

    def _abort(self) -> None:
        if self._too_big and not self._draining and not self.stream.closed():
            self._draining = True
            self.client_terminated = True  # ends the read loop; the drain reads from now on
            IOLoop.current().spawn_callback(self._drain)
            return
        super()._abort()

    async def _drain(self) -> None:
        """Read and drop what the client still sends (bounded), then close the socket."""
        deadline = time.monotonic() + DRAIN_MAX_S
        dropped = 0
        try:
            while dropped < DRAIN_MAX_BYTES and (left := deadline - time.monotonic()) > 0:
                chunk = await asyncio.wait_for(self.stream.read_bytes(DRAIN_CHUNK, partial=True), left)
                dropped += len(chunk)
        except (tornado.iostream.StreamClosedError, TimeoutError):
            pass
        finally:
            super()._abort()
