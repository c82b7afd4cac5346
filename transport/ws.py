"""``/ws``: protocol v1 over Tornado WebSockets, feeding the actors (DESIGN sections 3 and 4).

Everything here runs on the IOLoop thread and never waits for an actor: frames are parsed and
validated here, then *told* to the SessionActor; actors write back through a
:class:`SocketConnection`, which hops onto the IOLoop with ``add_callback``. ``on_message``
returns nothing awaitable (DESIGN rule 7), so one client can have many actions in flight.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pykka
import tornado.iostream
import tornado.websocket
from tornado.ioloop import IOLoop

from actors.messages import (
    ClientAction,
    ConnectionLost,
    Heartbeat,
    Kick,
    Logout,
    MalformedAction,
)
from config.version import SERVER_VERSION
from storage.postgres.characters import CharacterNotOwned
from transport.auth import AuthError
from transport.client_frames import FrameError, parse_client_frame
from transport.codec import pong_json
from transport.frames import CloseCode
from transport.server_frames import server_frame_json

if TYPE_CHECKING:
    from transport.node import Node

log = logging.getLogger(__name__)


class SocketConnection:
    """The actors' handle on one socket (``actors.ports.Connection``): safe from any thread.

    Frames queue in a deque; the first frame after a flush schedules one IOLoop callback that
    writes everything queued, so a burst of acks costs one hop, not one per frame.
    """

    def __init__(self, handler: GameSocket) -> None:
        self.handler = handler
        self.loop = IOLoop.current()
        self.closed = False
        self._out: deque[str] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

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
        self.handler.write_frames(self._out)

    def _close(self, code: int, frame_json: str | None) -> None:
        self._flush()
        self.handler.close_with(code, frame_json)


class GameSocket(tornado.websocket.WebSocketHandler):
    """One player's socket: hello/resume, then actions, pings, reauth, logout."""

    node: Node

    def initialize(self) -> None:
        self.node = self.application.settings["node"]
        self.conn: SocketConnection | None = None
        self.session: Any = None
        self.identity: Any = None
        self.phase = "hello"  # hello → authenticating → session → closed
        self.opened_at = time.monotonic()
        self.last_frame_at = self.opened_at
        self.bad_frames = 0
        self._window_start = self.opened_at
        self._window_frames = 0

    # ---------------------------------------------------------------- handshake

    def check_origin(self, origin: str) -> bool:
        """Same origin by default; else the configured allow-list. A browser-less client (no
        Origin header) is let through: the token, not the origin, authenticates."""
        allowed = self.node.settings.server.allowed_origins
        if "*" in allowed:
            return True
        if origin in allowed:
            return True
        return urlsplit(origin).netloc.lower() == self.request.host.lower()

    def get_compression_options(self) -> None:
        """permessage-deflate stays off (it costs ~150 KiB per connection)."""
        return None

    def open(self) -> None:
        """Accept the socket (within the connection cap) and wait for hello."""
        self.set_nodelay(True)
        self.conn = SocketConnection(self)
        stream = self.ws_connection.stream if self.ws_connection else None
        if stream is not None:
            stream.max_write_buffer_size = self.node.settings.server.max_write_buffer_bytes
        if not self.node.register_socket(self):
            self.fail(1013, "server_full", "the server is at its connection limit; try again soon")

    def on_close(self) -> None:
        """The socket is gone: an attached session waits for a resume."""
        self.phase = "closed"
        self.node.unregister_socket(self)
        if self.conn is not None:
            self.conn.closed = True
        if self.session is not None:
            self._tell(ConnectionLost(self.conn))

    # ---------------------------------------------------------------- frames

    def on_message(self, message: str | bytes) -> None:
        """Validate one frame and route it; never returns an awaitable (DESIGN rule 7)."""
        if self.node.stopping:
            return  # no new work while the node drains: the client resends it after reconnecting
        now = time.monotonic()
        self.last_frame_at = now
        self.node.metrics.frames_in.inc()
        s = self.node.settings.session
        size = _frame_bytes(message, s.max_frame_bytes)
        if size > s.max_frame_bytes:
            self.fail(CloseCode.TOO_LARGE, "frame_too_large",
                      f"frames are limited to {s.max_frame_bytes} bytes; this one had {size}")
            return
        if now - self._window_start >= 1.0:
            self._window_start, self._window_frames = now, 0
        self._window_frames += 1
        if self._window_frames > s.max_frames_per_second:
            self.fail(CloseCode.TOO_MANY, "too_many_frames",
                      f"more than {s.max_frames_per_second:g} frames per second")
            return
        try:
            frame = parse_client_frame(message)
        except FrameError as exc:
            self._bad_frame(exc)
            return
        kind = frame.type
        if self.phase == "session":
            if kind == "action":
                self._tell(
                    ClientAction(frame.seq, frame.action_type, frame.payload.model_dump(), time.perf_counter())
                )
            elif kind == "ping":
                self.write_frame(pong_json(frame.t, int(time.time() * 1000)))
                self._tell(Heartbeat(time.time()))
            elif kind == "reauth":
                IOLoop.current().spawn_callback(self._reauth, frame)
            elif kind == "logout":
                self._tell(Logout())
            else:
                self._unexpected(f"{kind} is only valid as the first frame")
        elif self.phase == "hello":
            if kind in ("hello", "resume"):
                self.phase = "authenticating"
                handler = self._hello if kind == "hello" else self._resume
                IOLoop.current().spawn_callback(handler, frame)
            else:
                self.fail(CloseCode.POLICY, "hello_required", "the first frame must be hello or resume")
        elif self.phase == "authenticating":
            self.write_frame(server_frame_json(
                "error", code="unexpected_frame", message="wait for welcome before sending actions"))

    def _bad_frame(self, exc: FrameError) -> None:
        if self.phase != "session":
            self.fail(CloseCode.POLICY, "bad_frame", exc.message)
            return
        if self._over_budget(exc.message):
            return
        if exc.seq is not None:
            self._tell(MalformedAction(exc.seq, exc.message))
        else:
            self.write_frame(server_frame_json("error", code="bad_frame", message=exc.message))

    def _unexpected(self, message: str) -> None:
        """A valid frame that has no place in an active session: answered, counted."""
        if not self._over_budget(message):
            self.write_frame(server_frame_json("error", code="unexpected_frame", message=message))

    def _over_budget(self, message: str) -> bool:
        """Count one bad frame; past the budget close the socket (1008) and say True."""
        self.bad_frames += 1
        if self.bad_frames <= self.node.settings.session.malformed_frame_budget:
            return False
        self.fail(CloseCode.POLICY, "too_many_bad_frames", f"too many malformed frames; last: {message}")
        return True

    def _tell(self, message: Any) -> None:
        """Tell the session. One that just ended (kicked, crashed) has already queued this
        socket's close with its own code, so a frame racing that close is dropped."""
        _tell_quietly(self.session, message)

    # ---------------------------------------------------------------- login, resume, reauth

    async def _hello(self, frame: Any) -> None:
        self.node.metrics.connect_attempts.inc()
        identity = await self._authenticate(frame)
        if identity is None:
            return
        try:
            session = await self.node.open_session(identity, frame.character_id, self.conn, frame.protocol_version)
        except CharacterNotOwned:
            self.fail(CloseCode.CHARACTER_NOT_OWNED, "character_not_owned", "that character is not one of yours")
            return
        except Exception as exc:
            log.warning("login failed: %s", exc, extra={"user_id": identity.user_id})
            self.fail(CloseCode.INTERNAL, "unavailable", "the server cannot start your session right now")
            return
        self._attach(session, identity)
        self.node.metrics.connect_success.inc()

    async def _resume(self, frame: Any) -> None:
        self.node.metrics.reconnect_attempts.inc()
        identity = await self._authenticate(frame)
        if identity is None:
            return
        try:
            session = await self.node.resume_session(identity, frame.reconnect_token, self.conn, frame.last_event_seq)
        except Exception as exc:
            log.warning("resume failed: %s", exc, extra={"user_id": identity.user_id})
            self.fail(CloseCode.INTERNAL, "unavailable", "reconnecting is unavailable right now; log in again")
            return
        if session is None:
            self.fail(CloseCode.RECONNECT_INVALID, "reconnect_invalid",
                      "the reconnect token is invalid, expired or already used; log in again")
            return
        self._attach(session, identity)
        self.node.metrics.reconnect_success.inc()

    async def _authenticate(self, frame: Any) -> Any:
        if frame.protocol_version != SERVER_VERSION:
            self.node.metrics.version_reject.inc()
            self.fail(CloseCode.VERSION_MISMATCH, "version_mismatch",
                      f"this server speaks protocol {SERVER_VERSION}, not {frame.protocol_version}; reload the page")
            return None
        try:
            return await self.node.verifier.verify_async(frame.token)
        except AuthError as exc:
            code = CloseCode.TOKEN_EXPIRED if exc.code == "token_expired" else CloseCode.BAD_TOKEN
            self.fail(code, exc.code, exc.message)
            return None

    def _attach(self, session: Any, identity: Any) -> None:
        self.session, self.identity = session, identity
        if self.phase == "closed":  # the socket went away while we were logging in
            _tell_quietly(session, ConnectionLost(self.conn))
        else:
            self.phase = "session"

    async def _reauth(self, frame: Any) -> None:
        try:
            identity = await self.node.verifier.verify_async(frame.token)
            if self.phase != "session":  # ended while the token was being checked
                return
        except AuthError as exc:
            if self.phase != "session":
                return
            code = CloseCode.TOKEN_EXPIRED if exc.code == "token_expired" else CloseCode.BAD_TOKEN
            self._end_session(code, exc.code, exc.message)
            return
        if identity.user_id != self.identity.user_id:
            self._end_session(CloseCode.BAD_TOKEN, "bad_token", "reauth must use a token of the same user")
            return
        self.identity = identity

    # ---------------------------------------------------------------- liveness (node timer)

    def check_liveness(self, now: float, wall: float) -> None:
        """Close a socket that never said hello, went idle, or whose token expired."""
        s = self.node.settings.session
        if self.phase in ("hello", "authenticating") and now - self.opened_at > s.hello_timeout_s:
            self.fail(CloseCode.IDLE_TIMEOUT, "idle_timeout", f"no hello within {s.hello_timeout_s:g} s")
        elif self.phase == "session" and now - self.last_frame_at > s.idle_timeout_s:
            self._end_session(CloseCode.IDLE_TIMEOUT, "idle_timeout", f"nothing received for {s.idle_timeout_s:g} s")
        elif self.phase == "session" and wall > self.identity.expires_at + self.node.settings.auth.leeway_s:
            self._end_session(CloseCode.TOKEN_EXPIRED, "token_expired", "your login expired; log in again")

    def _end_session(self, code: int, err: str, message: str) -> None:
        """End the session (not just the socket): the player must log in again."""
        self.phase = "closed"
        if not _tell_quietly(self.session, Kick(err, int(code), message, kicked=False)):
            self.fail(code, err, message)

    # ---------------------------------------------------------------- writing

    def fast_path(self) -> bool:
        """True when frames can go straight to the stream (protocol 13, no compression)."""
        ws = self.ws_connection
        # Private Tornado attributes: if a release renames them, fall back to write_message.
        return (type(ws) is tornado.websocket.WebSocketProtocol13
                and getattr(ws, "_compressor", "unknown") is None
                and getattr(ws, "mask_outgoing", True) is False
                and getattr(ws, "stream", None) is not None)

    def write_frames(self, out: deque[str]) -> None:
        """Write every queued frame with one stream write: Tornado's ``write_message`` wraps
        each frame in an asyncio Task and a write syscall, the largest cost per frame under
        load (see docs/perf.md). Same bytes on the wire; falls back to ``write_frame``."""
        ws = self.ws_connection
        if ws is None or ws.is_closing():
            out.clear()
            return
        if not self.fast_path():
            while out:
                if not self.write_frame(out.popleft()):
                    out.clear()
            return
        parts = []
        n = 0
        while out:
            parts.append(_text_frame(out.popleft().encode("utf-8")))
            n += 1
        try:
            ws.stream.write(b"".join(parts))
        except (tornado.iostream.StreamClosedError, tornado.iostream.StreamBufferFullError):
            self.close(CloseCode.POLICY, "client is not reading")
            return
        self.node.metrics.frames_out.inc(n)

    def write_frame(self, frame_json: str) -> bool:
        """Write one frame; False (and the socket closed) when it is gone or not reading."""
        ws = self.ws_connection
        if ws is None or ws.is_closing():
            return False
        try:
            self.write_message(frame_json)
        except (tornado.websocket.WebSocketClosedError, tornado.iostream.StreamBufferFullError):
            self.close(CloseCode.POLICY, "client is not reading")
            return False
        self.node.metrics.frames_out.inc()
        return True

    def fail(self, code: int, err: str, message: str) -> None:
        """An ``error`` frame a person can read, then close with ``code``."""
        self.close_with(int(code), server_frame_json("error", code=err, message=message))

    def close_with(self, code: int, frame_json: str | None) -> None:
        """Write ``frame_json`` if given, then close with ``code``."""
        if self.conn is not None:
            self.conn._flush()  # frames the actors queued (acks) go out before the close
        if frame_json is not None:
            self.write_frame(frame_json)
        if self.phase != "session" or self.session is None:
            self.phase = "closed"
        self.close(code, _reason(frame_json))


def _tell_quietly(ref: Any, message: Any) -> bool:
    """Tell an actor; False (nothing raised) when it is no longer alive."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        return False
    return True


def _frame_bytes(message: str | bytes, limit: int) -> int:
    """The frame's size in bytes (UTF-8 for text), encoding only when it might matter."""
    if isinstance(message, bytes) or len(message) * 4 <= limit:
        return len(message)
    if len(message) > limit:
        return len(message)  # already too large, whatever the encoding
    return len(message.encode("utf-8", "surrogatepass"))


def _text_frame(payload: bytes) -> bytes:
    """One unmasked, final WebSocket text frame (RFC 6455 5.2), as Tornado would write it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n <= 0xFFFF:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def _reason(frame_json: str | None) -> str:
    if not frame_json:
        return ""
    data = json.loads(frame_json)
    return str(data.get("code") or data.get("reason") or "")[:100]
