"""The simulated players: Tornado WebSocket clients on one asyncio loop.

A :class:`Player` logs in with ``hello`` and then walks (a 2x2 square: right, down, left, up,
so it stays where it was placed) and chats (every fourth action), either in a *closed loop*
(at most ``window`` actions unacked: each answer releases the next action) or in an *open
loop* (``rate`` actions per second on a fixed schedule, whatever the answers). An idle player
only sends ``ping`` at the heartbeat interval. Latency is measured from the write of the
``action`` frame to the arrival of its ``ack`` (or ``reject``) on the client.

Against the echo bound (``echo=True``) the same frames are sent and the echoed ``action``
frame counts as the ack (the echoed ``hello`` as the welcome).

A player whose socket is closed by the server with 1012 (its node drains), 1001 (going away)
or without a close frame resumes like the web client: at once after a 1012 (a repeat backs
off), with its reconnect token and ``last_event_seq`` through the same URL, and resends its
unacked actions after ``resumed``; a refused resume (4004) falls back to a fresh ``hello``
(the unacked actions above its ``last_action_seq`` are numbered anew). :class:`Stats` counts
the resumes by ``resumed.sync`` and the longest time a player could not act.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from typing import Any

from tornado.websocket import WebSocketClientConnection, websocket_connect

from actors.vocabulary import CloseCode
from config.version import SERVER_VERSION

_STEPS = ((1, 0), (0, 1), (-1, 0), (0, -1))
# An action frame is '{"type":"action","seq":N,' + its tail: kept per unacked seq to resend it.
_ACTION = '{"type":"action","seq":%d,%s'
_MOVE = '"action_type":"move","payload":{"dx":%d,"dy":%d}}'
_CHAT = '"action_type":"chat","payload":{"text":"hello from bench player %d"}}'
_EVENT_PREFIX = '{"type":"event"'
_EVENT_SEQ_PREFIX = '{"type":"event","event_seq":'
_EVENTS_PREFIX = '{"type":"events",'
_SEQ_KEY = '"event_seq":'  # outside a JSON string only: a string's quotes are escaped
# The protocol additions the bench asks for (docs/protocol.md section 4.1); --plain-frames: none.
FEATURES = ["events", "ack_event"]
# Closes after which a player resumes: the node drains or goes away, or the socket just died.
_RESUME_CODES = frozenset({CloseCode.SERVICE_RESTART, CloseCode.GOING_AWAY, None})
_RESUME_ATTEMPTS = 40
_HANDSHAKE_TIMEOUT_S = 10.0


class LoginFailed(Exception):
    """The server refused or dropped a login."""

    def __init__(self, message: str, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


class Stats:
    """Counters shared by every player of one load run (one thread: the event loop)."""

    def __init__(self) -> None:
        self.measuring = False
        self.running = True
        self.acked = 0  # answered with ack while measuring
        self.acked_total = 0
        self.rejected = 0
        self.rejects: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.events = 0  # events received while measuring (alone, in ``events`` or in an ack)
        self.frames = 0  # frames of any type received while measuring
        self.events_total = 0
        self.sent = 0
        self.latencies: list[float] = []  # seconds, acks while measuring
        self.second: list[float] = []  # latencies since the last progress line
        self.second_acks = 0
        self.closed = 0
        self.pongs = 0
        self.players = 0  # players that got a first welcome
        self.resumes: Counter[str] = Counter()  # resumed.sync (delta | snapshot), or "fresh" (hello again)
        self.resume_failures = 0  # players that gave up resuming
        self.resent = 0  # unacked actions sent again after a resume
        self.longest_unable_s = 0.0  # the longest close-to-resumed span of any player

    def resume_summary(self) -> dict[str, Any]:
        """Players, acked actions, resumes by kind and the longest time a player could not act."""
        return {
            "players": self.players,
            "actions": self.acked_total,
            "resumes": dict(self.resumes),
            "resume_failures": self.resume_failures,
            "resent": self.resent,
            "longest_unable_s": round(self.longest_unable_s, 3),
        }

    def take_second(self) -> tuple[int, list[float]]:
        """Acks and latencies since the previous call (for the progress line)."""
        acks, lat = self.second_acks, self.second
        self.second_acks, self.second = 0, []
        return acks, lat


class Player:
    """One simulated player on one WebSocket."""

    def __init__(self, index: int, token: str, stats: Stats, *, window: int = 4, echo: bool = False,
                 resume: bool = True, features: list[str] | None = None) -> None:
        self.index = index
        self.features = FEATURES if features is None else features
        self.token = token
        self.stats = stats
        self.window = window
        self.echo = echo
        self.conn: WebSocketClientConnection | None = None
        self.seq = 0
        self.actions = 0
        self.steps = 0
        self.sent_at: dict[int, float] = {}
        self.closed_loop = False
        self.heartbeat_ms = 5000
        self.attempt = 0
        self.welcomed = False  # ever welcomed
        self.ready = False  # welcomed or resumed on the current socket
        self.resume = resume
        self.url = ""
        self.reconnect_token = ""
        self.last_event_seq = 0
        self.unacked: dict[int, str] = {}  # seq -> the frame's tail after "seq":N,
        self.resuming = False
        self.closing = False
        self.last_sync: str | None = None
        self._resume_task: asyncio.Task | None = None
        self._welcome: asyncio.Future | None = None

    async def login(self, url: str, timeout: float = 30.0) -> None:
        """Open the socket, send ``hello``, wait for ``welcome``."""
        self.url = url
        self.closing = False
        await self._handshake(url, self._hello(), timeout)

    def _hello(self) -> dict[str, Any]:
        frame = {"type": "hello", "protocol_version": SERVER_VERSION, "token": self.token}
        if self.features:
            frame["features"] = self.features
        return frame

    async def _handshake(self, url: str, frame: dict[str, Any], timeout: float) -> None:
        """Open a socket, send ``frame`` (hello or resume), wait for welcome/resumed."""
        loop = asyncio.get_running_loop()
        self._welcome = loop.create_future()
        self.attempt += 1
        attempt = self.attempt
        self.ready = False

        def route(message: str | bytes | None) -> None:
            if attempt == self.attempt:  # not a late close of an earlier attempt's socket
                self.on_message(message)

        self.conn = await websocket_connect(url, connect_timeout=timeout, on_message_callback=route)
        stream = getattr(getattr(self.conn, "protocol", None), "stream", None)
        if stream is not None:
            stream.set_nodelay(True)
        self.conn.write_message(json.dumps(frame))
        await asyncio.wait_for(self._welcome, timeout)

    def start_closed_loop(self) -> None:
        """Send ``window`` actions; each answer sends the next one."""
        self.closed_loop = True
        for _ in range(self.window):
            self.send_action()

    async def run_open_loop(self, rate: float) -> None:
        """Send ``rate`` actions per second on a fixed schedule until the run stops."""
        loop = asyncio.get_running_loop()
        interval = 1.0 / rate
        next_at = loop.time() + random.random() * interval
        stats = self.stats
        while stats.running:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if not stats.running:
                break
            self.send_action()
            next_at += interval

    def ping(self) -> None:
        """A heartbeat (once logged in)."""
        if self.conn is not None and self.conn.protocol is not None and self.ready:
            self.conn.write_message(f'{{"type":"ping","t":{int(time.time() * 1000)}}}')

    def send_action(self) -> None:
        """Send the next action: three steps of the square walk, then a chat line."""
        conn = self.conn
        if conn is None or conn.protocol is None or not self.ready:
            return  # not while resuming: the player cannot act (its unacked ones wait)
        self.seq += 1
        seq = self.seq
        self.actions += 1
        if self.actions % 4 == 0:
            tail = _CHAT % self.index
        else:
            dx, dy = _STEPS[self.steps % 4]
            self.steps += 1
            tail = _MOVE % (dx, dy)
        self.sent_at[seq] = time.perf_counter()
        if self.resume:
            self.unacked[seq] = tail
        self.stats.sent += 1
        conn.write_message(_ACTION % (seq, tail))

    def close(self) -> None:
        """Close the socket (no logout: the server keeps the session for its reconnect window)."""
        self.closing = True
        if self._resume_task is not None:
            self._resume_task.cancel()
        if self.conn is not None:
            self.conn.close()

    # ---------------------------------------------------------------- frames in

    def on_message(self, message: str | bytes | None) -> None:
        """Route one server frame."""
        stats = self.stats
        if message is None:
            stats.closed += 1
            code = self.conn.close_code if self.conn is not None else None
            self.conn = None
            self.ready = False
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_exception(LoginFailed(f"socket closed before welcome ({code})", code))
            elif (self.resume and self.welcomed and not self.resuming and not self.closing
                  and stats.running and code in _RESUME_CODES):
                self._resume_task = asyncio.get_running_loop().create_task(self._resume_after(code))
            return
        if isinstance(message, bytes):
            message = message.decode()
        if stats.measuring:
            stats.frames += 1
        if message.startswith(_EVENT_PREFIX) or message.startswith(_EVENTS_PREFIX):
            n = 1
            if message.startswith(_EVENT_SEQ_PREFIX):
                start = len(_EVENT_SEQ_PREFIX)
                self.last_event_seq = max(self.last_event_seq, int(message[start:message.index(",", start)]))
            elif message.startswith(_EVENTS_PREFIX):  # in order: the last event_seq is the highest
                n = message.count(_SEQ_KEY)
                start = message.rindex(_SEQ_KEY) + len(_SEQ_KEY)
                self.last_event_seq = max(self.last_event_seq, int(message[start:message.index(",", start)]))
            stats.events_total += n
            if stats.measuring:
                stats.events += n
            return
        frame: dict[str, Any] = json.loads(message)
        kind = frame["type"]
        if kind == "ack" or (self.echo and kind == "action"):
            own = frame.get("event")
            if own is not None:  # feature ack_event: the action's own event rides in the ack
                self.last_event_seq = max(self.last_event_seq, own["event_seq"])
                stats.events_total += 1
                if stats.measuring:
                    stats.events += 1
            self._answered(frame["seq"], None)
        elif kind == "reject":
            self._answered(frame["seq"], frame.get("code", "?"))
        elif kind == "pong":
            stats.pongs += 1
        elif kind == "welcome" or (self.echo and kind == "hello"):
            self._renumber(frame.get("last_action_seq", 0))
            self.heartbeat_ms = frame.get("heartbeat_interval_ms", 5000)
            self.reconnect_token = frame.get("reconnect_token") or ""
            self.last_event_seq = frame.get("event_seq", 0)
            if not self.welcomed:
                stats.players += 1
            self.welcomed = self.ready = True
            self.last_sync = "fresh"
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_result(None)
        elif kind == "resumed":
            self.reconnect_token = frame.get("reconnect_token") or ""
            self.last_sync = frame.get("sync", "?")
            if self.last_sync == "snapshot":  # everything up to event_seq is in the snapshot
                self.last_event_seq = frame.get("event_seq", self.last_event_seq)
            self.ready = True
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_result(None)

        elif kind == "error":
            stats.errors[frame.get("code", "?")] += 1
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_exception(LoginFailed(f"{frame.get('code')}: {frame.get('message')}"))
        else:
            stats.errors[kind] += 1

    def _answered(self, seq: int, reject_code: str | None) -> None:
        stats = self.stats
        sent = self.sent_at.pop(seq, None)
        if sent is None:
            return
        self.unacked.pop(seq, None)
        latency = time.perf_counter() - sent
        if reject_code is None:
            stats.acked_total += 1
            if stats.measuring:
                stats.acked += 1
                stats.latencies.append(latency)
                stats.second_acks += 1
                stats.second.append(latency)
        else:
            stats.rejected += 1
            if stats.measuring:
                stats.rejects[reject_code] += 1
        if self.closed_loop and stats.running:
            self.send_action()

    # ---------------------------------------------------------------- resuming

    async def _resume_after(self, code: int | None) -> None:
        """The server closed the socket: resume (1012: at once), resend the unacked actions."""
        stats = self.stats
        self.resuming = True
        down_since = time.perf_counter()
        failures = 0 if code == CloseCode.SERVICE_RESTART else 1
        try:
            for _ in range(_RESUME_ATTEMPTS):
                if failures:
                    await asyncio.sleep(min(2.0, 0.1 * 2 ** (failures - 1)) * (0.5 + random.random() / 2))
                if self.closing or not stats.running:
                    return
                if self.reconnect_token:
                    frame = {"type": "resume", "protocol_version": SERVER_VERSION, "token": self.token,
                             "reconnect_token": self.reconnect_token, "last_event_seq": self.last_event_seq}
                    if self.features:
                        frame["features"] = self.features
                else:
                    frame = self._hello()
                try:
                    await self._handshake(self.url, frame, _HANDSHAKE_TIMEOUT_S)
                except LoginFailed as exc:
                    if exc.close_code == CloseCode.RECONNECT_INVALID:
                        self.reconnect_token = ""  # resume refused: a fresh hello, at once
                        continue
                    failures += 1
                    continue
                except Exception:  # noqa: BLE001 - refused, timed out, no backend (HTTP 503): retry
                    if self.conn is not None:
                        self.conn.close()
                    failures += 1
                    continue
                stats.resumes[self.last_sync or "?"] += 1
                if self.conn is None:  # closed again right after resumed: go round once more
                    failures += 1
                    continue
                stats.longest_unable_s = max(stats.longest_unable_s, time.perf_counter() - down_since)
                self._resend()
                return
            stats.resume_failures += 1
        finally:
            self.resuming = False

    def _renumber(self, last_action_seq: int) -> None:
        """After a welcome (or a resync) the server has every seq up to ``last_action_seq``:
        unacked actions above it follow on from it, those at or below are resent as they are."""
        later = sorted(s for s in self.unacked if s > last_action_seq)
        nxt = last_action_seq + 1
        tails = {s: self.unacked.pop(s) for s in later}
        sent = {s: self.sent_at.pop(s, time.perf_counter()) for s in later}
        for s in later:
            self.unacked[nxt], self.sent_at[nxt] = tails[s], sent[s]
            nxt += 1
        self.seq = nxt - 1

    def _resend(self) -> None:
        """Send every unacked action again, in seq order (a resent seq gets its original answer)."""
        conn = self.conn
        if conn is None:
            return
        for seq in sorted(self.unacked):
            self.stats.resent += 1
            conn.write_message(_ACTION % (seq, self.unacked[seq]))


async def login_all(players: list[Player], urls: list[str], concurrency: int = 32, attempts: int = 3) -> list[str]:
    """Log every player in, ``concurrency`` at a time, each up to ``attempts`` times (a
    swamped server may time a hello out); player i goes to node ``urls[i % len(urls)]``.
    Returns the messages of the logins that failed."""
    sem = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def one(p: Player) -> None:
        async with sem:
            for attempt in range(attempts):
                try:
                    await p.login(urls[p.index % len(urls)])
                    return
                except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                    p.close()
                    if attempt == attempts - 1:
                        failures.append(f"player {p.index}: {exc!r}")
                    else:
                        await asyncio.sleep(0.5)

    await asyncio.gather(*(one(p) for p in players))
    return failures


async def heartbeat(players: list[Player], stats: Stats, interval_s: float) -> None:
    """Ping every logged-in player once per ``interval_s``, spread evenly over the interval
    (start it before the logins: a player must ping while the others are still logging in).
    The pings due are counted from the clock, not from ticks: when this process's loop lags
    (5,000 sockets on a busy machine) a tick comes late and sends the pings it owes, so no
    player goes quiet past the server's idle timeout because the load generator fell behind."""
    if not players:
        return
    loop = asyncio.get_running_loop()
    tick = 0.05
    per_second = len(players) / interval_s
    start = loop.time()
    i = 0
    while stats.running:
        due = int((loop.time() - start) * per_second)
        while i < due:
            players[i % len(players)].ping()
            i += 1
        await asyncio.sleep(tick)


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values`` by nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[k]
