"""A real cluster for a test: ``tilehall serve`` processes on the run's database and Redis prefix,
behind a real HAProxy (the configuration ``tilehall cluster`` ships), and players that play
through it with their own small resume logic.

:class:`Balanced` starts the nodes and HAProxy, reads HAProxy's view of each node from its stats
page, and restarts nodes. :class:`Player` logs in with ``hello``, then acts without pause (one
action in flight); on any close it resumes at once with its reconnect token, resends what was
not answered, and falls back to ``hello`` when the resume is refused (4004, 4029). It counts
every resume by kind (``delta``, ``snapshot``, ``hello``) and the longest time it could not act.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect
from waiting import wait_until

from config.settings import Settings
from config.version import SERVER_VERSION
from transport.cluster_cmd import (
    ClusterError,
    HAProxyProcess,
    NodeProcess,
    find_haproxy,
    free_port,
    render_haproxy_config,
)

ROOT = Path(__file__).resolve().parent.parent
RESUME_REFUSED = (4004, 4029)  # the token is spent: log in again with hello
SERVER_HEADER = "X-Tilehall-Server"  # set by HAProxy: which node answered


def require_haproxy() -> str:
    """The haproxy executable; skip the test without it (fail when ``CI`` is set)."""
    import pytest

    try:
        return find_haproxy()
    except ClusterError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


class Balanced:
    """``n`` nodes (node1, node2, ...) behind HAProxy, on the run's database and key prefix."""

    def __init__(self, settings: Settings, workdir: Path, n: int = 2, **env: str) -> None:
        assert settings.database_url and settings.redis_url
        base = {**os.environ, "TILEHALL_MODE": "dev", "TILEHALL_DATABASE_URL": settings.database_url,
                "TILEHALL_REDIS_URL": settings.redis_url,
                "TILEHALL_REDIS__KEY_PREFIX": settings.redis.key_prefix,
                "TILEHALL_AUTH__DEV_SECRET": settings.auth.dev_secret,
                "TILEHALL_AUTH__DEV_ISSUER": settings.auth.dev_issuer,
                # every simulated player logs in from 127.0.0.1 (through HAProxy, too)
                "TILEHALL_AUTH__LOGIN_RATE_PER_MINUTE": "600000",
                "TILEHALL_AUTH__LOGIN_BURST": "100000",
                "TILEHALL_LOGGING__LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
        self.workdir = workdir
        self.nodes = [
            NodeProcess(f"node{i}", free_port(), {**base, "TILEHALL_VAR_DIR": str(workdir / f"var{i}")},
                        workdir / f"node{i}.log")
            for i in range(1, n + 1)
        ]
        self.port = free_port()
        self.stats_port = free_port()
        self.haproxy = HAProxyProcess(workdir / "haproxy.cfg", workdir / "haproxy.log")

    @property
    def ws_url(self) -> str:
        """The players' URL: through HAProxy."""
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        """The web client's URL: through HAProxy."""
        return f"http://127.0.0.1:{self.port}"

    def node(self, name: str) -> NodeProcess:
        """The node called ``name``."""
        return next(n for n in self.nodes if n.name == name)

    def start(self) -> None:
        """Every node (ready), then HAProxy, until it sees every node UP."""
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            n.wait_ready()
        (self.workdir / "haproxy.cfg").write_text(
            render_haproxy_config([(n.name, n.port) for n in self.nodes], self.port, self.stats_port))
        self.haproxy.start()
        for n in self.nodes:
            self.wait_state(n.name, "UP", 15)

    def states(self) -> dict[str, str]:
        """HAProxy's status of each node (``UP``, ``DOWN``, ``UP 1/2`` ...), from its stats CSV."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return {}
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {r["svname"]: r["status"] for r in rows if r["pxname"] == "tilehall_nodes"}

    def wait_state(self, name: str, state: str, timeout: float = 10.0) -> None:
        """Until HAProxy reports ``state`` (``UP`` or ``DOWN``, exactly) for node ``name``."""
        wait_until(lambda: self.states().get(name) == state, timeout, f"HAProxy sees {name} {state}")

    def terminate(self, name: str, timeout: float = 30.0) -> float:
        """SIGTERM node ``name`` (it drains); wait until HAProxy marks it DOWN and it has exited.
        Returns the seconds until the exit."""
        node, t0 = self.node(name), time.monotonic()
        node.signal(signal.SIGTERM)
        self.wait_state(name, "DOWN", timeout)
        code = node.wait(timeout)
        assert code is not None, f"{name} did not exit within {timeout:g} s of SIGTERM"
        return time.monotonic() - t0

    def kill(self, name: str) -> None:
        """SIGKILL node ``name`` and wait for it; then until HAProxy marks it DOWN."""
        node = self.node(name)
        node.signal(signal.SIGKILL)
        node.wait(10)
        self.wait_state(name, "DOWN", 10)

    def restart(self, name: str) -> None:
        """Start node ``name`` again on its port; until it is ready and HAProxy sees it UP."""
        node = self.node(name)
        node.start()
        node.wait_ready()
        self.wait_state(name, "UP", 15)

    def debug_actors(self, name: str, cls: str) -> list[dict[str, Any]]:
        """The node's live actors of class ``cls`` (``/debug/actors``, loopback: no token)."""
        url = f"{self.node(name).url}/debug/actors?class={cls}&format=json"
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())["actors"]

    def close(self) -> None:
        """HAProxy, then every node (SIGTERM, SIGKILL if it hangs)."""
        self.haproxy.stop()
        for n in self.nodes:
            n.signal(signal.SIGTERM)
        for n in self.nodes:
            n.stop(30)


class Player:
    """One player through the balancer: acts continuously, resumes on any close."""

    def __init__(self, index: int, token: str, url: str, pace_s: float = 0.15) -> None:
        self.index, self.token, self.url, self.pace_s = index, token, url, pace_s
        self.running = False
        self.conn: WebSocketClientConnection | None = None
        self.served_by: str | None = None
        self.avoid: str | None = None  # the next socket must reach another node than this one
        self.sockets: list[str | None] = []  # the node of each socket that was used, in order
        self.reconnect_token = ""
        self.character_id: str | None = None
        self.last_event_seq = 0
        self.next_seq = 1
        self.unacked: dict[int, str] = {}  # seq -> the frame sent
        self.acks: dict[int, str] = {}  # seq -> action_id
        self.ack_conflicts: list[str] = []
        self.rejects: Counter[str] = Counter()
        self.resumes: Counter[str] = Counter()  # delta / snapshot / hello (a fresh login)
        self.closes: Counter[int | None] = Counter()
        self.errors: Counter[str] = Counter()
        self.answers = 0
        self.last_answer_at = 0.0
        self.longest_gap = 0.0
        self.moves_in_a_row = 0
        self.logged_in = asyncio.Event()

    # ---------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Connect, play, and reconnect until :meth:`stop`."""
        self.running = True
        first = True
        while self.running:
            try:
                conn = await websocket_connect(self.url, connect_timeout=2)
            except Exception:  # noqa: BLE001 - balancer without a node, or a refused upgrade
                self.errors["connect"] += 1
                await asyncio.sleep(0.05)
                continue
            served = (conn.headers or {}).get(SERVER_HEADER)
            if self.avoid is not None and served == self.avoid:
                conn.close()  # before any frame: round-robin sends the next one elsewhere
                continue
            self.avoid, self.conn, self.served_by = None, conn, served
            self.sockets.append(served)
            await self._play(conn, first)
            first = False
            self.closes[conn.close_code] += 1
            if conn.close_code in RESUME_REFUSED:
                self.reconnect_token = ""
            moved = conn.close_code == 1012
            self.moves_in_a_row = self.moves_in_a_row + 1 if moved else 0
            if self.running and (not moved or self.moves_in_a_row > 3):
                # 1012 is "move now" (a draining node refuses us too, until HAProxy marks it
                # down); anything else, or 1012 over and over, a breath first.
                await asyncio.sleep(0.02)

    def stop(self) -> None:
        """End the loop (the socket closes; no logout)."""
        self.running = False
        if self.conn is not None:
            self.conn.close()

    def drop(self, avoid_node: bool = False) -> None:
        """Close the socket as a network drop would (no logout); with ``avoid_node`` the next
        socket is dropped until it reaches another node."""
        if avoid_node:
            self.avoid = self.served_by
        stream = getattr(getattr(self.conn, "protocol", None), "stream", None)
        if stream is not None:
            stream.close()  # the TCP connection ends; no close frame
        elif self.conn is not None:
            self.conn.close()

    def unable_s(self) -> float:
        """The longest time this player could not act so far (including now)."""
        now = time.monotonic()
        return max(self.longest_gap, now - self.last_answer_at if self.last_answer_at else 0.0)

    async def _play(self, conn: WebSocketClientConnection, first: bool) -> None:
        if self.reconnect_token:
            await conn.write_message(json.dumps({
                "type": "resume", "protocol_version": SERVER_VERSION, "token": self.token,
                "reconnect_token": self.reconnect_token, "last_event_seq": self.last_event_seq}))
        else:
            await conn.write_message(json.dumps(
                {"type": "hello", "protocol_version": SERVER_VERSION, "token": self.token}))
        while True:
            message = await conn.read_message()
            if message is None:
                return
            self._on_frame(conn, json.loads(message), first)

    # ---------------------------------------------------------------- frames in

    def _on_frame(self, conn: WebSocketClientConnection, f: dict[str, Any], first: bool) -> None:
        kind = f.get("type")
        if kind == "event":
            self.last_event_seq = max(self.last_event_seq, int(f["event_seq"]))
        elif kind in ("ack", "reject"):
            self._answered(conn, f)
        elif kind == "welcome":
            if not first:
                self.resumes["hello"] += 1
            self.reconnect_token = f["reconnect_token"]
            self.character_id = f["character"]["character_id"]
            self.last_event_seq = 0
            last = int(f["last_action_seq"])
            # Above last_action_seq nothing was stored: those actions are simply not taken.
            self.unacked = {s: fr for s, fr in self.unacked.items() if s <= last}
            self.next_seq = last + 1
            self.logged_in.set()
            self._resend_or_act(conn)
        elif kind == "resumed":
            self.resumes[f["sync"]] += 1
            self.reconnect_token = f["reconnect_token"]
            if f["sync"] == "snapshot":
                self.last_event_seq = int(f["event_seq"])
            self._resend_or_act(conn)
        elif kind == "resync_required":
            expected = int(f["expected_seq"])
            self.unacked = {s: fr for s, fr in self.unacked.items() if s < expected}
            self.next_seq = expected
            self._resend_or_act(conn)
        elif kind == "error":
            self.errors[f.get("code", "?")] += 1
        elif kind == "kicked":
            self.errors["kicked " + str(f.get("reason"))] += 1

    def _answered(self, conn: WebSocketClientConnection, f: dict[str, Any]) -> None:
        seq = int(f["seq"])
        if f["type"] == "ack":
            known = self.acks.setdefault(seq, f["action_id"])
            if known != f["action_id"]:
                self.ack_conflicts.append(f"seq {seq}: {known} then {f['action_id']}")
        else:
            self.rejects[f.get("code", "?")] += 1
        if self.unacked.pop(seq, None) is None:
            return  # an answer sent again
        now = time.monotonic()
        if self.last_answer_at:
            self.longest_gap = max(self.longest_gap, now - self.last_answer_at)
        self.last_answer_at = now
        self.answers += 1
        if not self.unacked:
            asyncio.get_running_loop().call_later(self.pace_s, self._act, conn)

    def _resend_or_act(self, conn: WebSocketClientConnection) -> None:
        if self.unacked:
            for seq in sorted(self.unacked):
                _write(conn, self.unacked[seq])
        else:
            self._act(conn)

    def _act(self, conn: WebSocketClientConnection) -> None:
        """The next action on ``conn`` if it is still this player's open socket: a step back
        and forth (every fourth action a chat line)."""
        if not self.running or conn is not self.conn or conn.protocol is None or self.unacked:
            return
        seq = self.next_seq
        self.next_seq += 1
        if seq % 4 == 0:
            frame = {"type": "action", "seq": seq, "action_type": "chat",
                     "payload": {"text": f"player {self.index} action {seq}"}}
        else:
            frame = {"type": "action", "seq": seq, "action_type": "move",
                     "payload": {"dx": 1 if seq % 2 else -1, "dy": 0}}
        self.unacked[seq] = json.dumps(frame)
        _write(conn, self.unacked[seq])


def _write(conn: WebSocketClientConnection, text: str) -> None:
    """Send ``text``; a socket that closed meanwhile is the reconnect loop's business."""
    try:
        conn.write_message(text)
    except WebSocketClosedError:
        pass


def figures(label: str, players: list[Player], **extra: Any) -> dict[str, Any]:
    """Print and return a scenario's figures: players, actions, acks, resumes by kind, the
    longest time a player could not act."""
    resumes: Counter[str] = Counter()
    closes: Counter[Any] = Counter()
    rejects: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for p in players:
        resumes.update(p.resumes)
        closes.update(p.closes)
        rejects.update(p.rejects)
        errors.update(p.errors)
    out = {
        "players": len(players),
        "actions": sum(p.next_seq - 1 for p in players),
        "acks": sum(len(p.acks) for p in players),
        "rejects": dict(rejects),
        "resumes": {k: resumes.get(k, 0) for k in ("delta", "snapshot", "hello")},
        "closes": {str(k): v for k, v in closes.items()},
        "errors": dict(errors),
        "longest_unable_s": round(max(p.unable_s() for p in players), 3),
        **extra,
    }
    line = f"[{label}] " + json.dumps(out, sort_keys=True)
    print("\n" + line, flush=True)
    if path := os.environ.get("TILEHALL_TEST_FIGURES"):  # CI prints them after the run
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return out


def lost_and_doubled(database_url: str, players: list[Player]) -> tuple[list[str], list[tuple]]:
    """The acked action_ids missing from ``action_event``, and every (character, seq) stored
    more than once, for these players."""
    acked = [aid for p in players for aid in p.acks.values()]
    chars = [p.character_id for p in players if p.character_id]
    with psycopg.connect(database_url, autocommit=True) as conn:
        stored = {r[0] for r in conn.execute(
            "SELECT action_id::text FROM action_event WHERE action_id = ANY(%s::uuid[])", (acked,))}
        doubled = conn.execute(
            "SELECT character_id::text, sequence_number, count(*) FROM action_event"
            " WHERE character_id = ANY(%s::uuid[]) AND sequence_number IS NOT NULL"
            " GROUP BY 1, 2 HAVING count(*) > 1", (chars,)).fetchall()
    return [a for a in acked if a not in stored], [tuple(r) for r in doubled]


async def all_play_again(players: list[Player], since: float, timeout: float = 10.0) -> None:
    """Until every player has had an answer after ``since`` (monotonic)."""
    deadline = time.monotonic() + timeout
    while True:
        behind = [p.index for p in players if p.last_answer_at <= since]
        if not behind:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"players {behind} did not act again within {timeout:g} s")
        await asyncio.sleep(0.02)


async def acting_for(players: list[Player], seconds: float) -> None:
    """Let the players play for ``seconds`` of wall clock, then check each acted meanwhile."""
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    await all_play_again(players, t0, timeout=5)
