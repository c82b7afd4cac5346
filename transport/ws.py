"""``/ws``: protocol v1 over Tornado WebSockets, feeding the actors (DESIGN sections 3 and 4).

Everything here runs on the IOLoop thread and never waits for an actor: frames are parsed and
validated here, then *told* to the SessionActor; actors write back through a
:class:`~transport.ws_out.SocketConnection`, which hops onto the IOLoop with ``add_callback``.
``on_message`` returns nothing awaitable (DESIGN rule 7), so one client can have many actions in
flight. Logins and resumes go to the node's :class:`~transport.sessions.SessionDirectory`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import tornado.iostream
import tornado.websocket
from tornado.ioloop import IOLoop

from actors.base import tell_if_alive
from actors.messages import (
    ClientAction,
    ConnectionLost,
    Kick,
    Logout,
    MalformedAction,
)
from actors.vocabulary import CloseCode, ErrorCode, KickReason
from config.version import SERVER_VERSION
from storage.postgres.characters import CharacterNotOwned
from transport.auth import AuthError
from transport.client_frames import FrameError, parse_client_frame
from transport.codec import pong_json
from transport.handover import SessionMoving
from transport.ports import NodePort
from transport.server_frames import server_frame_json
from transport.ws_limits import CappedProtocol
from transport.ws_out import SocketConnection, text_frame, write_now

log = logging.getLogger(__name__)


class GameSocket(tornado.websocket.WebSocketHandler):
    """One player's socket: hello/resume, then actions, pings, reauth, logout."""

    def initialize(self, node: NodePort) -> None:
        self.node = node
        self.conn: SocketConnection | None = None
        self.session: Any = None
        self.identity: Any = None
        self.phase = "hello"  # hello → authenticating → session → closed
        self.opened_at = time.monotonic()
        self.last_frame_at = self.opened_at
        self.bad_frames = 0
        self._fast_path = False
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

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        """Protocol 13 with frames over the read cap answered 1009 (:class:`CappedProtocol`)."""
        make_params = getattr(tornado.websocket, "_WebSocketParams", None)  # private in Tornado 6
        if make_params is None or self.request.headers.get("Sec-WebSocket-Version") != "13":
            return super().get_websocket_protocol()
        params = make_params(
            ping_interval=self.ping_interval, ping_timeout=self.ping_timeout,
            max_message_size=self.max_message_size, compression_options=self.get_compression_options(),
        )
        return CappedProtocol(self, False, params)

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
            self.fail(CloseCode.TRY_AGAIN_LATER, ErrorCode.SERVER_FULL, "the server is at its connection limit; try again soon")

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
            self.fail(CloseCode.TOO_LARGE, ErrorCode.FRAME_TOO_LARGE,
                      f"frames are limited to {s.max_frame_bytes} bytes; this one had {size}")
            return
        if now - self._window_start >= 1.0:
            self._window_start, self._window_frames = now, 0
        self._window_frames += 1
        if self._window_frames > s.max_frames_per_second:
            self.fail(CloseCode.TOO_MANY, ErrorCode.TOO_MANY_FRAMES,
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
            elif kind == "ping":  # liveness is last_frame_at: no actor needs to hear of it
                wall = time.time()
                self.conn.last_heartbeat_at = wall
                self.conn.send_now(pong_json(frame.t, int(wall * 1000)))
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
                self.fail(CloseCode.POLICY, ErrorCode.HELLO_REQUIRED, "the first frame must be hello or resume")
        elif self.phase == "authenticating":
            self.write_frame(server_frame_json(
                "error", code=ErrorCode.UNEXPECTED_FRAME, message="wait for welcome before sending actions"))

    def _bad_frame(self, exc: FrameError) -> None:
        if self.phase == "hello" and exc.only_token_missing():
            self.fail(CloseCode.BAD_TOKEN, ErrorCode.BAD_TOKEN, "a token is required")
            return
        if self.phase != "session":
            self.fail(CloseCode.POLICY, ErrorCode.BAD_FRAME, exc.message)
            return
        if self._over_budget(exc.message):
            return
        if exc.seq is not None:
            self._tell(MalformedAction(exc.seq, exc.message))
        else:
            self.write_frame(server_frame_json("error", code=ErrorCode.BAD_FRAME, message=exc.message))

    def _unexpected(self, message: str) -> None:
        """A valid frame that has no place in an active session: answered, counted."""
        if not self._over_budget(message):
            self.write_frame(server_frame_json("error", code=ErrorCode.UNEXPECTED_FRAME, message=message))

    def _over_budget(self, message: str) -> bool:
        """Count one bad frame; past the budget close the socket (1008) and say True."""
        self.bad_frames += 1
        if self.bad_frames <= self.node.settings.session.malformed_frame_budget:
            return False
        self.fail(CloseCode.POLICY, ErrorCode.MALFORMED_BUDGET, f"too many malformed frames; last: {message}")
        return True

    def _tell(self, message: Any) -> None:
        """Tell the session. One that just ended (kicked, crashed) has already queued this
        socket's close with its own code, so a frame racing that close is dropped."""
        tell_if_alive(self.session, message)

    # ---------------------------------------------------------------- login, resume, reauth

    async def _hello(self, frame: Any) -> None:
        self.node.metrics.connect_attempts.inc()
        if (refused := self.node.login_gate.refusal(self.request)) is not None:
            self.fail(CloseCode.TOO_MANY, ErrorCode.RATE_LIMITED, refused)
            return
        self.conn.use_features(frame.features)
        identity = await self._authenticate(frame)
        if identity is None:
            return
        try:
            session = await self.node.directory.open_session(identity, frame.character_id, self.conn, frame.protocol_version)
        except CharacterNotOwned:
            self.fail(CloseCode.CHARACTER_NOT_OWNED, ErrorCode.CHARACTER_NOT_OWNED, "that character is not one of yours")
            return
        except Exception as exc:
            log.warning("login failed: %s", exc, extra={"user_id": identity.user_id})
            self.fail(CloseCode.INTERNAL, ErrorCode.UNAVAILABLE, "the server cannot start your session right now")
            return
        self._attach(session, identity)  # success is counted when the session sends its welcome

    async def _resume(self, frame: Any) -> None:
        self.node.metrics.reconnect_attempts.inc()
        self.conn.use_features(frame.features)
        identity = await self._authenticate(frame)
        if identity is None:
            return
        try:
            session = await self.node.directory.resume_session(identity, frame.reconnect_token, self.conn, frame.last_event_seq)
        except SessionMoving:  # parked this very moment: the client resumes again and finds it
            self.close_with(CloseCode.SERVICE_RESTART, server_frame_json("kicked", reason=KickReason.NODE_DRAINING))
            return
        except Exception as exc:
            log.warning("resume failed: %s", exc, extra={"user_id": identity.user_id})
            self.fail(CloseCode.INTERNAL, ErrorCode.UNAVAILABLE, "reconnecting is unavailable right now; log in again")
            return
        if session is None:
            self.fail(CloseCode.RECONNECT_INVALID, ErrorCode.RECONNECT_INVALID,
                      "the reconnect token is invalid, expired or already used; log in again")
            return
        self._attach(session, identity)  # success is counted when the session sends resumed

    async def _authenticate(self, frame: Any) -> Any:
        if self.node.draining:  # the balancer sends the client to another node on its retry
            self.close_with(CloseCode.SERVICE_RESTART, server_frame_json("kicked", reason=KickReason.NODE_DRAINING))
            return None
        if self.node.broken:
            self.fail(CloseCode.INTERNAL, ErrorCode.INTERNAL,
                      "this server lost an internal component; try again (another server may take you)")
            return None
        if frame.protocol_version != SERVER_VERSION:
            self.node.metrics.version_reject.inc()
            self.fail(CloseCode.VERSION_MISMATCH, ErrorCode.VERSION_MISMATCH,
                      f"this server speaks protocol {SERVER_VERSION}, not {frame.protocol_version}; reload the page")
            return None
        try:
            return await self.node.verifier.verify_async(frame.token)
        except AuthError as exc:
            code = CloseCode.TOKEN_EXPIRED if exc.code == ErrorCode.TOKEN_EXPIRED else CloseCode.BAD_TOKEN
            self.fail(code, exc.code, exc.message)
            return None

    def _attach(self, session: Any, identity: Any) -> None:
        self.session, self.identity = session, identity
        if self.phase == "closed":  # the socket went away while we were logging in
            tell_if_alive(session, ConnectionLost(self.conn))
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
            code = CloseCode.TOKEN_EXPIRED if exc.code == ErrorCode.TOKEN_EXPIRED else CloseCode.BAD_TOKEN
            self.node.metrics.reauths.labels("refused").inc()
            self._end_session(code, exc.code, exc.message)
            return
        if identity.user_id != self.identity.user_id:
            self.node.metrics.reauths.labels("refused").inc()
            self._end_session(CloseCode.BAD_TOKEN, ErrorCode.BAD_TOKEN, "reauth must use a token of the same user")
            return
        self.node.metrics.reauths.labels("accepted").inc()
        self.identity = identity
        self.node.liveness.watch(self, time.monotonic())  # its expiry may have moved: look again

    # ---------------------------------------------------------------- liveness (node timer)

    def check_liveness(self, now: float, wall: float) -> float | None:
        """Close a socket that never said hello, went idle, or whose token expired; else
        return when to look again (monotonic), for the node's :mod:`transport.liveness` wheel."""
        s = self.node.settings.session
        if self.phase in ("hello", "authenticating"):
            if now - self.opened_at > s.hello_timeout_s:
                self.fail(CloseCode.IDLE_TIMEOUT, ErrorCode.IDLE_TIMEOUT, f"no hello within {s.hello_timeout_s:g} s")
                return None
            return self.opened_at + s.hello_timeout_s
        if self.phase != "session":
            return None
        if now - self.last_frame_at > s.idle_timeout_s:
            self._end_session(CloseCode.IDLE_TIMEOUT, ErrorCode.IDLE_TIMEOUT, f"nothing received for {s.idle_timeout_s:g} s")
            return None
        expires_in = self.identity.expires_at + self.node.settings.auth.leeway_s - wall
        if expires_in < 0:
            self._end_session(CloseCode.TOKEN_EXPIRED, ErrorCode.TOKEN_EXPIRED, "your login expired; log in again")
            return None
        return min(self.last_frame_at + s.idle_timeout_s, now + expires_in)

    def _end_session(self, code: int, err: str, message: str) -> None:
        """End the session (not just the socket): the player must log in again."""
        self.phase = "closed"
        if not tell_if_alive(self.session, Kick(err, int(code), message, kicked=False)):
            self.fail(code, err, message)

    # ---------------------------------------------------------------- writing

    def fast_path(self) -> bool:
        """True when frames can go straight to the stream (protocol 13, no compression);
        settled once per connection (the first True is kept: neither can change)."""
        if self._fast_path:
            return True
        self._fast_path = self._fast_path_now()
        return self._fast_path

    def _fast_path_now(self) -> bool:
        ws = self.ws_connection
        # Private Tornado attributes: if a release renames them, fall back to write_message.
        return (isinstance(ws, tornado.websocket.WebSocketProtocol13)
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
        if not out:
            return
        parts = []
        n = 0
        while out:
            parts.append(text_frame(out.popleft().encode("utf-8")))
            n += 1
        try:
            write_now(ws.stream, b"".join(parts))
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


def _frame_bytes(message: str | bytes, limit: int) -> int:
    """The frame's size in bytes (UTF-8 for text), encoding only when it might matter."""
    if isinstance(message, bytes) or len(message) * 4 <= limit:
        return len(message)
    if len(message) > limit:
        return len(message)  # already too large, whatever the encoding
    return len(message.encode("utf-8", "surrogatepass"))


def _reason(frame_json: str | None) -> str:
    if not frame_json:
        return ""
    data = json.loads(frame_json)
    return str(data.get("code") or data.get("reason") or "")[:100]
