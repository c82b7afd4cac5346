"""The nemesis's players: WebSocket clients that keep their own seq bookkeeping the way the web
client does (``webclient/js/protocol.js``): actions stay pending until answered, a ``welcome``
renumbers pending actions past ``last_action_seq``, a ``resumed`` resends them with their
seqs, a ``resync_required`` renumbers from ``expected_seq``. A close 1012 (the node drains and
parked the session) is resumed at once, with no backoff (a repeat backs off); with one URL per
node the player moves to the next node, as a balancer in front would. Every frame is recorded."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import time
from typing import Any

from tornado.websocket import WebSocketClientConnection, websocket_connect

from actors.vocabulary import CloseCode
from bench.nemesis.records import Answer, PlayerLog, Transmission
from config.version import SERVER_VERSION

_DIRS = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy]
WINDOW = 3  # unanswered actions at most
INTERVAL_S = 0.25  # between new actions


class Clock:
    """Seconds since the run started."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.t0


class Player:
    """One player: a user, a home node, its bookkeeping and its record (:class:`PlayerLog`)."""

    def __init__(self, name: str, user: str, token: str, node: int, urls: list[str],
                 clock: Clock, seed: int) -> None:
        self.log = PlayerLog(name, user, node)
        self.token = token
        self.urls = urls
        self.node = node
        self.clock = clock
        self.rng = random.Random(seed)
        self.conn: WebSocketClientConnection | None = None
        self.attempt = 0
        self.active = False
        self.reconnect_token = ""
        self.last_event_seq = 0
        self.next_seq = 1
        # last_action_seq of every welcome: a seq above it is numbered anew (a new action), so an
        # answer belongs to the generation of its seq (how many welcomes reused that number).
        self.welcome_lasts: list[int] = []
        self.pending: dict[int, dict[str, Any]] = {}  # seq → {action_type, payload}
        self.inflight: dict[int, Transmission] = {}  # seq → its latest transmission
        self.paused_until = 0.0
        self.failures = 0  # closes since the last welcome/resumed (the reconnect backoff)
        self.sending = True
        self.actions = 0
        self._down_since: float | None = 0.0
        self._handshake: asyncio.Future | None = None

    # ------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, act, reconnect after every close, until ``stop``."""
        next_action = 0.0
        while not stop.is_set():
            now = self.clock.now()
            if self.conn is None and now >= self.paused_until:
                await self._connect()
            elif self.active and self.sending and now >= next_action and len(self.pending) < WINDOW:
                self._new_action()
                next_action = now + INTERVAL_S * (0.5 + self.rng.random())
            await asyncio.sleep(0.05)
        self._mark_down()

    async def _connect(self) -> None:
        self.attempt += 1
        attempt = self.attempt
        loop = asyncio.get_running_loop()
        self._handshake = loop.create_future()

        def route(message: str | bytes | None) -> None:
            if attempt == self.attempt:
                self._on_message(message)

        try:
            conn = await websocket_connect(self.urls[self.node], connect_timeout=3,
                                           on_message_callback=route)
        except Exception:  # noqa: BLE001 - refused or timed out: the node is down, retry
            self.log.frames["connect_failed"] += 1
            self.failures += 1
            self.paused_until = self.clock.now() + self._backoff()
            return
        if attempt != self.attempt:
            conn.close()
            return
        self.conn = conn
        if self.reconnect_token:
            conn.write_message(json.dumps({
                "type": "resume", "protocol_version": SERVER_VERSION, "token": self.token,
                "reconnect_token": self.reconnect_token, "last_event_seq": self.last_event_seq}))
        else:
            conn.write_message(json.dumps(
                {"type": "hello", "protocol_version": SERVER_VERSION, "token": self.token}))
        try:
            await asyncio.wait_for(asyncio.shield(self._handshake), 5.0)
        except TimeoutError:
            self.log.frames["handshake_timeout"] += 1
            self.drop()

    def _new_action(self) -> None:
        self.actions += 1
        if self.actions % 5 == 0:
            action = {"action_type": "chat", "payload": {"text": f"{self.log.name} says {self.actions}"}}
        else:
            dx, dy = self.rng.choice(_DIRS)
            action = {"action_type": "move", "payload": {"dx": dx, "dy": dy}}
        seq = self.next_seq
        self.next_seq += 1
        self.pending[seq] = action
        self._transmit(seq, first=True)

    def _transmit(self, seq: int, first: bool = False) -> None:
        action = self.pending[seq]
        self.log.sent.setdefault(seq, [])
        if (action["action_type"], action["payload"]) not in self.log.sent[seq]:
            self.log.sent[seq].append((action["action_type"], action["payload"]))
        tx = Transmission(self.clock.now(), seq, self.node, first or not action.get("sent"))
        action["sent"] = True
        self.log.transmissions.append(tx)
        earlier = self.inflight.get(seq)
        if earlier is not None:  # resent on the same socket (resync): the earlier wait ends
            earlier.closed_at = tx.t
        self.inflight[seq] = tx
        assert self.conn is not None
        self.conn.write_message(json.dumps({"type": "action", "seq": seq, **{
            k: action[k] for k in ("action_type", "payload")}}))

    # ------------------------------------------------------------ frames in

    def _on_message(self, message: str | bytes | None) -> None:
        now = self.clock.now()
        if message is None:
            code = self.conn.close_code if self.conn is not None else None
            self.log.frames[f"close {code}"] += 1
            self._closed(code)
            return
        frame = json.loads(message)
        kind = frame.get("type")
        self.log.frames[kind] += 1
        if kind == "event":
            self.last_event_seq = max(self.last_event_seq, frame.get("event_seq", 0))
        elif kind in ("ack", "reject"):
            seq = frame["seq"]
            mine = self.pending.get(seq)
            self.log.answers.append(Answer(
                now, seq, kind, self.log.character_id, frame.get("action_id"), frame.get("code"), self.node,
                (mine["action_type"], mine["payload"]) if mine else None,
                sum(1 for last in self.welcome_lasts if last < seq)))
            if kind == "reject":
                self.log.frames[f"reject {frame.get('code')}"] += 1
            tx = self.inflight.pop(seq, None)
            if tx is not None:
                tx.answered_at, tx.answer = now, "ack" if kind == "ack" else frame.get("code")
            self.pending.pop(seq, None)
        elif kind == "welcome":
            self.log.character_id = frame["character"]["character_id"]
            self._established(frame)
            last = frame["last_action_seq"]
            self.welcome_lasts.append(last)
            actions = [self.pending[s] for s in sorted(self.pending)]
            olds = sorted(self.pending)
            self.pending = {}
            nxt = last + 1
            for s, a in zip(olds, actions, strict=True):
                if s > last:
                    s, nxt = nxt, nxt + 1
                self.pending[s] = a
            self.next_seq = nxt
            self.last_event_seq = frame.get("event_seq", 0)
            self._resend()
        elif kind == "resumed":
            self._established(frame)
            self._resend()
        elif kind == "resync_required":
            expected = frame["expected_seq"]
            later = [self.pending.pop(s) for s in sorted(self.pending) if s >= expected]
            for i, a in enumerate(later):
                self.pending[expected + i] = a
            self.next_seq = expected + len(later)
            for i in range(len(later)):
                self._transmit(expected + i)
        elif kind == "error":
            self.log.frames[f"error {frame.get('code')}"] += 1
        elif kind == "kicked":
            self.log.frames[f"kicked {frame.get('reason')}"] += 1

    def _established(self, frame: dict[str, Any]) -> None:
        self.reconnect_token = frame.get("reconnect_token") or ""
        self.active = True
        self.failures = 0
        if self._down_since is not None:
            self.log.down.append((self._down_since, self.clock.now()))
            self._down_since = None
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_result(None)

    def _resend(self) -> None:
        for seq in sorted(self.pending):
            self._transmit(seq)

    def _closed(self, code: int | None) -> None:
        now = self.clock.now()
        for tx in self.inflight.values():
            tx.closed_at = now
        self.inflight.clear()
        self.conn = None
        self.active = False
        self._mark_down()
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_result(None)
        if code in (4004, 4009, 4029, 1008):  # resume impossible, replaced, throttled: log in again
            self.reconnect_token = ""
        if code == CloseCode.SERVICE_RESTART and len(self.urls) > 1:
            self.node = (self.node + 1) % len(self.urls)  # the draining node is going away
        if code is not None:
            at_once = code == CloseCode.SERVICE_RESTART and self.failures == 0
            self.failures += 1
            if not at_once:
                self.paused_until = max(self.paused_until, now + (3.0 if code == 4029 else self._backoff()))

    def _backoff(self) -> float:
        """Seconds before the next attempt: 0.3 s, growing to 3 s while attempts keep failing."""
        return min(3.0, 0.3 * self.failures)

    def _mark_down(self) -> None:
        if self._down_since is None:
            self._down_since = self.clock.now()

    def finish(self) -> None:
        """The run is over: close the down span still open."""
        if self._down_since is not None:
            self.log.down.append((self._down_since, self.clock.now()))
            self._down_since = None

    # ------------------------------------------------------------ faults

    async def burst(self, gap_s: float) -> None:
        """Fill the window with new actions, then wait ``gap_s``: a fault right after leaves
        them in flight (the server may have them, their answers are lost)."""
        while self.active and self.sending and len(self.pending) < WINDOW:
            self._new_action()
        await asyncio.sleep(gap_s)

    def drop(self, resume: bool = True) -> None:
        """Abrupt TCP drop (RST, no close frame); the loop reconnects at once: with ``resume``,
        or with a fresh ``hello`` (keeping its pending actions, as the client does when it has
        no usable reconnect token)."""
        conn = self.conn
        self.attempt += 1  # frames of the dropped socket are not ours any more
        if conn is not None:
            stream = getattr(getattr(conn, "protocol", None), "stream", None)
            sock = getattr(stream, "socket", None)
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            if stream is not None:
                stream.close()
            else:
                conn.close()
        self._closed(None)
        if not resume:
            self.reconnect_token = ""

    def reload(self, delay_s: float, node: int | None = None) -> None:
        """A page reload: the browser closes the socket (1001 going away), the page forgets
        everything (pending actions, reconnect token, the seq); a fresh hello ``delay_s``
        later, optionally on another node."""
        conn = self.conn
        self.attempt += 1
        if conn is not None:
            conn.close(1001, "page reload")
        self._closed(None)
        self.pending.clear()
        self.reconnect_token = ""
        self.paused_until = self.clock.now() + delay_s
        if node is not None:
            self.node = node


async def ghost_login(url: str, token: str, hold_s: float, clock: Clock) -> list[str]:
    """A second login of a user (another tab, another device): hello, stay ``hold_s``, drop.
    Returns what it saw (frame types, close code)."""
    seen: list[str] = []
    closed = asyncio.Event()

    def on(message: str | bytes | None) -> None:
        if message is None:
            closed.set()
            return
        frame = json.loads(message)
        seen.append(f"{frame.get('type')} {frame.get('reason') or frame.get('code') or ''}".strip())

    try:
        conn = await websocket_connect(url, connect_timeout=3, on_message_callback=on)
    except Exception as exc:  # noqa: BLE001 - the node may be down: recorded
        return [f"connect failed: {type(exc).__name__}"]
    conn.write_message(json.dumps({"type": "hello", "protocol_version": SERVER_VERSION, "token": token}))
    try:
        await asyncio.wait_for(closed.wait(), hold_s)
    except TimeoutError:
        pass
    conn.close()
    if conn.close_code is not None:
        seen.append(f"close {conn.close_code}")
    return seen
