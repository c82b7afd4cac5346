"""A smoke run of ``tilehall bench`` through a real server process (kept small: ~15 s)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket
from waiting import async_wait_until

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/ is not an installed package

from bench.client import Player, Stats  # noqa: E402
from bench.loadgen import format_summary, place_players  # noqa: E402
from transport.auth import issue_dev_token  # noqa: E402


def test_placement_keeps_players_apart() -> None:
    """Active players get distinct 2x2 squares in the north, idle ones distinct tiles far south."""
    spots = place_players(50, 30, seed=1)
    active, idle = spots[:50], spots[50:]
    squares = {(x + dx, y + dy) for x, y in active for dx in (0, 1) for dy in (0, 1)}
    assert len(squares) == 4 * 50
    assert len(set(idle)) == 30
    assert max(y for _, y in active) + 1 + 12 < min(y for _, y in idle)


def test_bench_smoke(pg_admin_url: str, redis_url: str, tmp_path: Path) -> None:
    """5 players on two nodes for 2 s: actions are acked, and the report has every field
    docs/perf.md uses."""
    name = f"tilehall_test_bench_{os.getpid()}"
    out = tmp_path / "report.json"
    try:  # in a process of its own, like `tilehall bench` (its asyncio.run stays out of ours)
        proc = subprocess.run(
            [sys.executable, "-m", "bench.loadgen",
             "--players", "5", "--nodes", "2", "--window", "2", "--duration", "2", "--warmup", "0.5",
             "--bound-duration", "1", "--database-url", pg_admin_url, "--redis-url", redis_url,
             "--database-name", name, "--output", str(out), "--quiet"],
            cwd=ROOT, capture_output=True, text=True, timeout=90,
        )
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "durable acked actions/s" in proc.stdout
    report = json.loads(out.read_text())
    run = report["runs"][0]
    assert run["acked"] > 0 and run["acked_per_s"] > 0
    assert run["nodes"] == 2 and run["connected_players"] == 5 and run["server_exit"] == 0
    for key in ("p50_ms", "p95_ms", "p99_ms", "rejects", "fan_out", "server_rss_mib_peak",
                "server_threads_max", "machine_cpu_mean"):
        assert key in run, key
    assert run["storage"]["mean_batch"] >= 1
    assert run["storage"]["action_rows"] >= run["acked"] * 0.9  # acked means durable
    assert run["echo"]["acked_per_s"] > 0
    assert run["insert"]["rows_per_s"] > 0
    assert 0 < run["ratios"]["vs_echo"]
    assert report["median"]["acked_per_s"] > 0
    assert report["machine"]["nproc"] >= 1
    assert "durable acked actions/s" in format_summary(report)


FAST_GAME = {"chats_per_second": 200.0, "moves_per_second": 200.0, "view_radius": 100}


def test_bench_player_resumes_after_a_drop_and_resends(start_server: Callable[..., Any]) -> None:
    """A real server aborts every socket mid-run: the bench player resumes (sync delta) with its
    reconnect token, resends what was unacked, and its closed loop carries on."""
    server = start_server(game=FAST_GAME)

    async def scenario() -> None:
        stats = Stats()
        player = Player(0, issue_dev_token(server.settings, "bench-resume-user"), stats, window=3)
        await player.login(server.ws_url)
        first_token = player.reconnect_token
        player.start_closed_loop()
        await async_wait_until(lambda: stats.acked_total >= 10, 10, "acks before the drop")
        assert await asyncio.to_thread(server.drop_all_sockets) >= 1
        before = stats.acked_total
        await async_wait_until(lambda: stats.resumes["delta"] == 1, 10, "a delta resume")
        await async_wait_until(lambda: stats.acked_total >= before + 10, 10, "acks after the resume")
        assert player.reconnect_token and player.reconnect_token != first_token
        summary = stats.resume_summary()
        assert summary["players"] == 1 and summary["resumes"] == {"delta": 1}
        assert summary["resume_failures"] == 0 and 0 < summary["longest_unable_s"] < 10
        assert summary["actions"] == stats.acked_total
        stats.running = False
        player.close()

    asyncio.run(scenario())


class _DrainingNode(tornado.websocket.WebSocketHandler):
    """A scripted peer (the drain itself is the server's, tested there): welcome, ack the first
    two actions, leave the third unanswered and drain (kicked node_draining + 1012); on the
    next socket answer the resume with resumed (delta) and ack whatever comes."""

    log: list[tuple[float, str, dict[str, Any]]]

    def initialize(self, log: list[tuple[float, str, dict[str, Any]]]) -> None:
        """Shared record of every frame the node got, with its arrival time."""
        self.log = log

    def check_origin(self, origin: str) -> bool:
        """The bench client sends no origin."""
        return True

    def on_message(self, message: str | bytes) -> None:
        """Play the node's side of the protocol."""
        frame = json.loads(message)
        self.log.append((time.monotonic(), frame["type"], frame))
        token = {"reconnect_token": "r" * 43, "reconnect_expires_at": "2999-01-01T00:00:00.000000Z"}
        if frame["type"] == "hello":
            self.write_message({"type": "welcome", "last_action_seq": 0, "event_seq": 0,
                                "heartbeat_interval_ms": 60000, "character": {"character_id": "c"}, **token})
        elif frame["type"] == "resume":
            self.write_message({"type": "resumed", "sync": "delta", "replayed": 0, "event_seq": 4,
                                **token, "reconnect_token": "s" * 43})
        elif frame["type"] == "action":
            drained = any(t == "resume" for _, t, _ in self.log)
            if frame["seq"] == 3 and not drained:
                self.write_message({"type": "kicked", "reason": "node_draining"})
                self.close(1012, "node_draining")
                return
            self.write_message({"type": "ack", "seq": frame["seq"], "action_id": "a", "state": {},
                                "persisted_at": "2024-05-01T12:00:00.000000Z"})


def _draining_nodes(log: list[tuple[float, str, dict[str, Any]]], n: int) -> tuple[list[str], list[Any]]:
    """``n`` scripted nodes on free ports sharing ``log``; their URLs and servers."""
    urls, servers = [], []
    for _ in range(n):
        http = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/ws", _DrainingNode, {"log": log})]))
        sockets = tornado.netutil.bind_sockets(0, address="127.0.0.1")
        http.add_sockets(sockets)
        urls.append(f"ws://127.0.0.1:{sockets[0].getsockname()[1]}/ws")
        servers.append(http)
    return urls, servers


def test_nemesis_player_on_1012_resumes_at_once_on_the_next_node() -> None:
    """The nemesis's player: a 1012 is resumed without its reconnect backoff, on the next node
    (no balancer in front of the nemesis's nodes), and the unanswered action is resent."""
    from bench.nemesis.players import Clock
    from bench.nemesis.players import Player as NemesisPlayer

    async def scenario() -> None:
        log: list[tuple[float, str, dict[str, Any]]] = []
        urls, servers = _draining_nodes(log, 2)
        player = NemesisPlayer("p0", "u0", "jwt", 0, urls, Clock(), seed=1)
        stop = asyncio.Event()
        task = asyncio.create_task(player.run(stop))
        try:
            await async_wait_until(lambda: any(t == "resume" for _, t, _ in log), 10, "the resume")
            await async_wait_until(lambda: player.log.frames["resumed"] == 1 and not player.pending, 10,
                                   "the resent action answered")
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
            for http in servers:
                http.stop()
        kinds = [t for _, t, _ in log]
        at = kinds.index("resume")
        assert kinds[:at] == ["hello", "action", "action", "action"], kinds
        assert log[at][0] - log[at - 1][0] < 0.25, "no backoff after 1012 (it would be 0.3 s)"
        assert log[at][2]["reconnect_token"] == "r" * 43
        assert player.node == 1, "moved off the draining node"
        assert log[at + 1][2]["seq"] == 3, "the unanswered action is resent with its seq"
        assert player.log.frames["kicked node_draining"] == 1 and player.log.frames["close 1012"] == 1

    asyncio.run(scenario())


def test_bench_player_on_1012_resumes_at_once_and_resends_unacked() -> None:
    """Close 1012: the resume (token, reconnect token, last_event_seq) goes out at once, through
    the same URL, and the unacked action is resent with its seq after resumed."""

    async def scenario() -> None:
        log: list[tuple[float, str, dict[str, Any]]] = []
        (url,), (http,) = _draining_nodes(log, 1)
        stats = Stats()
        player = Player(0, "jwt", stats, window=1)
        try:
            await player.login(url)
            player.start_closed_loop()
            await async_wait_until(lambda: stats.resumes["delta"] == 1, 5, "the resume")
            await async_wait_until(lambda: stats.acked_total >= 5, 5, "acks after the resume")
        finally:
            stats.running = False
            player.close()
            http.stop()
        kinds = [t for _, t, _ in log]
        assert kinds[:5] == ["hello", "action", "action", "action", "resume"], kinds
        drained_at = log[3][0]
        resume_at, _, resume = log[4]
        assert resume_at - drained_at < 0.5, "no backoff after 1012"
        assert {k: v for k, v in resume.items() if k != "protocol_version"} == {
            "type": "resume", "token": "jwt", "reconnect_token": "r" * 43, "last_event_seq": 0,
            "features": ["events", "ack_event"]}
        assert log[5][2]["seq"] == 3, "the unacked action is resent first, with its seq"
        assert [f["seq"] for _, t, f in log[5:] if t == "action"][:3] == [3, 4, 5]
        summary = stats.resume_summary()
        assert summary["resumes"] == {"delta": 1} and summary["resent"] == 1
        assert summary["longest_unable_s"] < 0.5

    asyncio.run(scenario())
