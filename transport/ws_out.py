"""Writing to one player's socket from any thread: the actors' :class:`SocketConnection`, and
the raw WebSocket text frame :mod:`transport.ws` batches into one stream write."""

from __future__ import annotations

import struct
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

from tornado.ioloop import IOLoop

from actors.vocabulary import Feature
from transport.codec import coalesce_events


class SocketConnection:
    """The actors' handle on one socket (``actors.ports.Connection``): safe from any thread.

    Frames queue in a deque; the first frame after a flush schedules one IOLoop callback that
    writes everything queued, so a burst of acks costs one hop, not one per frame. A client
    that asked for ``events`` gets each run of consecutive events of one flush as one frame.
    """

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.loop = IOLoop.current()
        self.closed = False
        self._out: deque[str] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self.features: frozenset[str] = frozenset()
        self._coalesce = False

    def use_features(self, features: Iterable[str]) -> None:
        """The protocol additions the client asked for in its hello/resume (``Feature`` values)."""
        self.features = frozenset(features)
        self._coalesce = Feature.EVENTS in self.features

    def send(self, frame_json: str) -> None:
        """Queue a frame; written on the IOLoop soon after."""
        if self.closed:
            return
        self._out.append(frame_json)
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self.loop.add_callback(self._flush)

    def close(self, code: int, frame_json: str | None = None) -> None:
        """Write what is queued, then ``frame_json``, then close with ``code``."""
        self.loop.add_callback(self._close, code, frame_json)

    def _flush(self) -> None:
        with self._lock:
            self._scheduled = False
        out = self._out
        if self._coalesce and len(out) > 1:
            out = coalesce_events(out)
        self.handler.write_frames(out)

    def _close(self, code: int, frame_json: str | None) -> None:
        self._flush()
        self.handler.close_with(code, frame_json)


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final WebSocket text frame (RFC 6455 5.2), as Tornado would write it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n <= 0xFFFF:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload
