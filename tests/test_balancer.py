"""Players behind a real HAProxy while nodes restart, die and hand sessions over (issue 11).

Two ``tilehall serve`` processes on this run's database and Redis prefix, HAProxy in front of
them with the configuration ``tilehall cluster`` ships (round-robin, no stickiness, /readyz
checks every 500 ms), and 10 players playing through it without pause. After each scenario:
no acknowledged action is missing from ``action_event``, no (character, seq) is stored twice,
every player played again within seconds, and (rolling restart, handover to a live node) every
resume was a delta. Each test prints its figures.

Without ``haproxy`` the tests are skipped, unless ``CI`` is set: then they fail.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from balancer import (
    Balanced,
    Player,
    acting_for,
    all_play_again,
    figures,
    lost_and_doubled,
    require_haproxy,
)
from waiting import wait_until

from config.settings import Settings
from transport.auth import issue_dev_token
from transport.cluster_cmd import free_port, http_status

pytestmark = pytest.mark.slow

PLAYERS = 10
MAX_UNABLE_S = 5.0  # "every player plays again within a few seconds"


@pytest.fixture
def haproxy() -> str:
    """The haproxy executable (skip without it, fail in CI)."""
    return require_haproxy()


@pytest.fixture
def cluster(haproxy: str, settings: Settings, tmp_path: Path) -> Iterator[Balanced]:
    """node1 and node2 behind HAProxy, both UP."""
    c = Balanced(settings, tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.close()


def play(cluster: Balanced, settings: Settings, label: str,
         fault: Callable[[list[Player]], Awaitable[dict[str, Any]]]) -> tuple[list[Player], dict[str, Any]]:
    """PLAYERS players log in through HAProxy and play; ``fault`` runs while they do; then
    each must play again, and they play on for a second. Returns the players and the figures
    (printed), after checking nothing acked is lost and nothing is stored twice."""

    async def scenario() -> tuple[list[Player], dict[str, Any]]:
        players = [Player(i, issue_dev_token(settings, f"bal-{i}-{uuid.uuid4().hex[:8]}"), cluster.ws_url)
                   for i in range(PLAYERS)]
        tasks = [asyncio.create_task(p.run()) for p in players]
        try:
            await asyncio.wait_for(asyncio.gather(*(p.logged_in.wait() for p in players)), 30)
            await acting_for(players, 1.0)
            t0 = time.monotonic()
            extra = await fault(players)
            extra["fault_s"] = round(time.monotonic() - t0, 2)
            await all_play_again(players, time.monotonic(), timeout=MAX_UNABLE_S)
            await acting_for(players, 1.0)
        finally:
            for p in players:
                p.stop()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        return players, figures(label, players, **extra)

    players, figs = asyncio.run(asyncio.wait_for(scenario(), 90))
    lost, doubled = lost_and_doubled(settings.database_url or "", players)
    assert lost == [], f"acknowledged actions missing from action_event: {lost[:10]}"
    assert doubled == [], f"(character, seq) stored twice: {doubled[:10]}"
    assert [c for p in players for c in p.ack_conflicts] == []
    assert figs["acks"] > PLAYERS * 5, "the players hardly played"
    assert figs["longest_unable_s"] <= MAX_UNABLE_S, figs
    return players, figs


def test_rolling_restart_through_haproxy(cluster: Balanced, settings: Settings) -> None:
    """SIGTERM node1 (it drains; HAProxy marks it DOWN; it exits), restart it, wait until UP;
    then the same for node2. Every resume is a delta: nobody logs in again, no snapshot."""

    async def rolling(players: list[Player]) -> dict[str, Any]:
        took = {}
        for name in ("node1", "node2"):
            took[f"{name}_drain_s"] = round(await asyncio.to_thread(cluster.terminate, name), 2)
            await asyncio.to_thread(cluster.restart, name)
        return took

    players, figs = play(cluster, settings, "rolling restart", rolling)
    assert figs["resumes"]["snapshot"] == 0 and figs["resumes"]["hello"] == 0, figs
    # Every player was on node1 or node2, so every one of them moved at least once.
    assert all(p.resumes["delta"] >= 1 for p in players), figs


def test_sigkill_one_node_through_haproxy(cluster: Balanced, settings: Settings) -> None:
    """SIGKILL node1 while its players play, then restart it: its players carry on on node2
    (a fresh session or a snapshot: the dead node's buffer is gone), nothing acked is lost."""
    victims: list[int] = []

    async def sigkill(players: list[Player]) -> dict[str, Any]:
        victims.extend(p.index for p in players if p.served_by == "node1")
        await asyncio.to_thread(cluster.kill, "node1")
        await all_play_again(players, time.monotonic(), timeout=MAX_UNABLE_S)
        await asyncio.to_thread(cluster.restart, "node1")
        return {"on_killed_node": len(victims)}

    players, figs = play(cluster, settings, "sigkill", sigkill)
    assert victims, "round-robin put no player on node1"
    # Each of them came back (on node2, or on node1 once it was up again).
    assert all(sum(players[i].resumes.values()) >= 1 for i in victims), figs


def test_resume_lands_on_the_other_live_node(cluster: Balanced, settings: Settings) -> None:
    """Every player's socket drops; its next socket is made to reach the other node (dropped
    before any frame until round-robin sends it there) while the first node is alive: the
    session moves over and every resume is a delta."""
    before: dict[int, tuple[int, str | None]] = {}

    async def handover(players: list[Player]) -> dict[str, Any]:
        before.update({p.index: (len(p.sockets), p.served_by) for p in players})
        for p in players:
            p.drop(avoid_node=True)
        await all_play_again(players, time.monotonic(), timeout=MAX_UNABLE_S)
        return {}

    players, figs = play(cluster, settings, "resume on the other node", handover)
    # The first socket after the drop reached the other node.
    moved = {p.index: p.sockets[before[p.index][0]] for p in players}
    assert all(moved[i] not in (None, node) for i, (_, node) in before.items()), (before, moved)
    assert figs["resumes"]["snapshot"] == 0 and figs["resumes"]["hello"] == 0, figs
    assert all(p.resumes["delta"] >= 1 for p in players), figs


def test_tilehall_cluster_command(haproxy: str, settings: Settings, tmp_path: Path) -> None:
    """``tilehall cluster`` on the run's database and Redis: two nodes behind HAProxy answer
    through its port; a node that dies is restarted; SIGTERM stops everything (exit 0)."""
    port = free_port()
    env = {**os.environ, "TILEHALL_MODE": "dev", "TILEHALL_DATABASE_URL": settings.database_url or "",
           "TILEHALL_REDIS_URL": settings.redis_url or "",
           "TILEHALL_REDIS__KEY_PREFIX": settings.redis.key_prefix,
           "TILEHALL_VAR_DIR": str(tmp_path / "var"), "TILEHALL_LOGGING__LEVEL": "WARNING"}
    out = tmp_path / "cluster.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "transport.cli", "cluster", "--nodes", "2",
                                 "--port", str(port)], env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "tilehall cluster is running" in out.read_text() or proc.poll() is not None,
                   90, "the cluster's URL")
        assert proc.poll() is None, out.read_text()
        assert f"http://127.0.0.1:{port}" in out.read_text()
        wait_until(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200, 15, "ready via HAProxy")
        def nodes() -> list[psutil.Process]:
            """The cluster's live node processes (not a zombie the supervisor has not reaped)."""
            alive = []
            for c in psutil.Process(proc.pid).children():
                try:
                    if "serve" in c.cmdline():
                        alive.append(c)
                except psutil.Error:
                    pass
            return alive

        assert len(nodes()) == 2
        first = nodes()[0]
        first.send_signal(signal.SIGKILL)
        wait_until(lambda: len(nodes()) == 2 and first.pid not in [c.pid for c in nodes()], 20,
                   "the killed node restarted")
        wait_until(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200, 15, "ready via HAProxy")
        children = [c.pid for c in psutil.Process(proc.pid).children()]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0, out.read_text()
        assert not [p for p in children if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    finally:
        if proc.poll() is None:
            for c in psutil.Process(proc.pid).children():
                c.kill()
            proc.kill()
            proc.wait()
