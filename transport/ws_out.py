"""Writing to one player's socket from any thread: the actors' :class:`SocketConnection`, and
the raw WebSocket text frame :mod:`transport.ws` batches into one stream write."""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import tornado.iostream
from tornado.ioloop import IOLoop

from actors.vocabulary import Feature
from transport.codec import coalesce_events

log = logging.getLogger(__name__)


class _Outbox:
    """The sockets of one IOLoop with frames queued, written by one IOLoop callback.

    Waking the IOLoop from another thread costs a syscall (``add_callback`` writes to its
    self-pipe): one event seen by 100 sessions would wake it 100 times. Here the first socket
    that becomes ready schedules the callback; the others join the list it writes.
    """

    def __init__(self, loop: IOLoop) -> None:
        self.loop = loop
        self._ready: deque[SocketConnection] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def ready(self, conn: SocketConnection) -> None:
        """``conn`` has frames queued: write them in the next callback (any thread)."""
        with self._lock:
            self._ready.append(conn)
            if self._scheduled:
                return
            self._scheduled = True
        self.loop.add_callback(self._flush)

    def _flush(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, deque()
            self._scheduled = False
        for conn in ready:
            try:
                conn._flush()
            except Exception:  # one broken socket must not keep the others' frames back
                log.exception("writing to a socket failed")


def _outbox_of(loop: IOLoop) -> _Outbox:
    """The outbox of ``loop`` (IOLoop thread: where sockets open), made on first use."""
    box = getattr(loop, "_tilehall_outbox", None)
    if box is None:
        box = _Outbox(loop)
        loop._tilehall_outbox = box  # type: ignore[attr-defined]  # lives and dies with its loop
    return box


class SocketConnection:
    """The actors' handle on one socket (``actors.ports.Connection``): safe from any thread.

    Frames queue in a deque; the first frame after a flush puts the socket in its IOLoop's
    outbox, whose one callback writes every ready socket's frames: a burst of acks, or one
    event to many sessions, costs one IOLoop wake-up, not one per frame or per socket. A client
    that asked for ``events`` gets each run of consecutive events of one flush as one frame.
    """

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.loop = IOLoop.current()
        self._outbox = _outbox_of(self.loop)
        self.closed = False
        self.last_heartbeat_at = time.time()
        """Wall time of the client's last ping (IOLoop thread writes, the session reads it)."""
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
        self._outbox.ready(self)

    def send_now(self, frame_json: str) -> None:
        """Write a frame at once, after whatever is queued (IOLoop thread only): the pong,
        without the callback hop nor Tornado's per-frame ``write_message`` task."""
        if self.closed:
            return
        self._out.append(frame_json)
        self.handler.write_frames(self._out)

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


def write_now(stream: tornado.iostream.BaseIOStream, data: bytes) -> None:
    """Write ``data`` to ``stream``: straight to the socket when nothing is pending in the
    stream's buffer, the rest (if the socket took only part) through ``stream.write``.

    ``IOStream.write`` costs a Future, a buffer append, peek and advance and a done callback
    per call, more than the ``send`` itself (docs/perf.md); with an empty buffer nothing can be
    overtaken, so one ``send`` is the same bytes in the same order. Anything unusual (a TLS or
    connecting stream, pending bytes, an error) goes Tornado's way, which also handles the
    error: a reset socket closes the stream there, ``StreamClosedError`` is raised as before.
    """
    sent = 0
    if (type(stream) is tornado.iostream.IOStream and not stream._write_buffer
            and not stream._connecting and not stream.closed()):
        try:
            sent = stream.socket.send(data)
        except OSError:  # EAGAIN, or an error the stream must see: its write meets it again
            sent = 0
        if sent == len(data):
            return
    stream.write(memoryview(data)[sent:] if sent else data)


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final WebSocket text frame (RFC 6455 5.2), as Tornado would write it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n <= 0xFFFF:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload
