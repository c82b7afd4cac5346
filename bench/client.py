"""The simulated players: Tornado WebSocket clients on one asyncio loop.

A :class:`Player` logs in with ``hello`` and then walks (a 2x2 square: right, down, left, up,
so it stays where it was placed) and chats (every fourth action), either in a *closed loop*
(at most ``window`` actions unacked: each answer releases the next action) or in an *open
loop* (``rate`` actions per second on a fixed schedule, whatever the answers). An idle player
only sends ``ping`` at the heartbeat interval. Latency is measured from the write of the
``action`` frame to the arrival of its ``ack`` (or ``reject``) on the client.

Against the echo bound (``echo=True``) the same frames are sent and the echoed ``action``
frame counts as the ack (the echoed ``hello`` as the welcome).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from typing import Any

from tornado.websocket import WebSocketClientConnection, websocket_connect

from config.version import SERVER_VERSION

_STEPS = ((1, 0), (0, 1), (-1, 0), (0, -1))
_MOVE = '{"type":"action","seq":%d,"action_type":"move","payload":{"dx":%d,"dy":%d}}'
_CHAT = '{"type":"action","seq":%d,"action_type":"chat","payload":{"text":"hello from bench player %d"}}'
_EVENT_PREFIX = '{"type":"event"'


class LoginFailed(Exception):
    """The server refused or dropped a login."""


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
        self.events = 0  # event frames received while measuring
        self.events_total = 0
        self.sent = 0
        self.latencies: list[float] = []  # seconds, acks while measuring
        self.second: list[float] = []  # latencies since the last progress line
        self.second_acks = 0
        self.closed = 0
        self.pongs = 0

    def take_second(self) -> tuple[int, list[float]]:
        """Acks and latencies since the previous call (for the progress line)."""
        acks, lat = self.second_acks, self.second
        self.second_acks, self.second = 0, []
        return acks, lat


class Player:
    """One simulated player on one WebSocket."""

    def __init__(self, index: int, token: str, stats: Stats, *, window: int = 4, echo: bool = False) -> None:
        self.index = index
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
        self.welcomed = False
        self._welcome: asyncio.Future | None = None

    async def login(self, url: str, timeout: float = 30.0) -> None:
        """Open the socket, send ``hello``, wait for ``welcome``."""
        loop = asyncio.get_running_loop()
        self._welcome = loop.create_future()
        self.attempt += 1
        attempt = self.attempt

        def route(message: str | bytes | None) -> None:
            if attempt == self.attempt:  # not a late close of an earlier attempt's socket
                self.on_message(message)

        self.conn = await websocket_connect(url, connect_timeout=timeout, on_message_callback=route)
        stream = getattr(getattr(self.conn, "protocol", None), "stream", None)
        if stream is not None:
            stream.set_nodelay(True)
        self.conn.write_message(json.dumps(
            {"type": "hello", "protocol_version": SERVER_VERSION, "token": self.token}))
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
        if self.conn is not None and self.conn.protocol is not None and self.welcomed:
            self.conn.write_message(f'{{"type":"ping","t":{int(time.time() * 1000)}}}')

    def send_action(self) -> None:
        """Send the next action: three steps of the square walk, then a chat line."""
        conn = self.conn
        if conn is None or conn.protocol is None:
            return
        self.seq += 1
        seq = self.seq
        self.actions += 1
        if self.actions % 4 == 0:
            frame = _CHAT % (seq, self.index)
        else:
            dx, dy = _STEPS[self.steps % 4]
            self.steps += 1
            frame = _MOVE % (seq, dx, dy)
        self.sent_at[seq] = time.perf_counter()
        self.stats.sent += 1
        conn.write_message(frame)

    def close(self) -> None:
        """Close the socket (no logout: the server keeps the session for its reconnect window)."""
        if self.conn is not None:
            self.conn.close()

    # ---------------------------------------------------------------- frames in

    def on_message(self, message: str | bytes | None) -> None:
        """Route one server frame."""
        stats = self.stats
        if message is None:
            stats.closed += 1
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_exception(LoginFailed("socket closed before welcome"))
            return
        if isinstance(message, bytes):
            message = message.decode()
        if message.startswith(_EVENT_PREFIX):
            stats.events_total += 1
            if stats.measuring:
                stats.events += 1
            return
        frame: dict[str, Any] = json.loads(message)
        kind = frame["type"]
        if kind == "ack" or (self.echo and kind == "action"):
            self._answered(frame["seq"], None)
        elif kind == "reject":
            self._answered(frame["seq"], frame.get("code", "?"))
        elif kind == "pong":
            stats.pongs += 1
        elif kind == "welcome" or (self.echo and kind == "hello"):
            self.seq = frame.get("last_action_seq", 0)
            self.heartbeat_ms = frame.get("heartbeat_interval_ms", 5000)
            self.welcomed = True
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
    (start it before the logins: a player must ping while the others are still logging in)."""
    if not players:
        return
    tick = 0.05
    per_tick = max(1, round(len(players) * tick / interval_s))
    i = 0
    while stats.running:
        for _ in range(per_tick):
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
