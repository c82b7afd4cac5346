"""``tilehall serve --workers 2`` as an operator runs it: real processes, one shared port.

The supervisor runs on this run's database and Redis prefix; two worker processes listen on the
same port (SO_REUSEPORT) and each on its own ops port. Players connect to the shared port only
and play without pause with the balancer tests' client (it resumes on any close). Checked:
both workers take players (their /debug/actors on the own ports name different node ids and
hold different characters), a SIGKILLed worker is started again by the supervisor while the
port keeps serving and its players resume, a worker drained on its own port moves its players
(delta resumes) and is started again, SIGTERM drains every worker (1012) and the supervisor
exits 0; nothing acked is lost and no (character, seq) is stored twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from balancer import Player, acting_for, all_play_again, figures, lost_and_doubled
from waiting import wait_until

from config.settings import Settings, SettingsError, load_settings
from transport.auth import issue_dev_token
from transport.cluster_cmd import http_status

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PLAYERS = 16  # all on one worker by chance: 2 ** -15


def _free_run(n: int) -> int:
    """A port p with p .. p + n all free right now (the shared port and each worker's own),
    below the ephemeral range, where outgoing connections of parallel test runs cannot take one
    of them between this check and the supervisor's bind."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]) \
        if Path("/proc/sys/net/ipv4/ip_local_port_range").exists() else 32768
    for _ in range(200):
        base = random.randrange(max(1024, low - 12000), low - n - 1)
        try:
            for p in range(base, base + n + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free ports")


class Supervised:
    """``tilehall serve --workers N`` in a process, its output (and its workers') in a file."""

    def __init__(self, settings: Settings, workdir: Path, n: int = 2) -> None:
        assert settings.database_url and settings.redis_url
        self.n = n
        self.port = _free_run(n)
        self.log_path = workdir / "supervisor.log"
        self.env = {**os.environ, "TILEHALL_MODE": "dev", "TILEHALL_DATABASE_URL": settings.database_url,
                    "TILEHALL_REDIS_URL": settings.redis_url,
                    "TILEHALL_REDIS__KEY_PREFIX": settings.redis.key_prefix,
                    "TILEHALL_AUTH__DEV_SECRET": settings.auth.dev_secret,
                    "TILEHALL_AUTH__DEV_ISSUER": settings.auth.dev_issuer,
                    "TILEHALL_VAR_DIR": str(workdir / "var"),
                    "TILEHALL_SERVER__PORT": str(self.port),
                    "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc: subprocess.Popen | None = None

    @property
    def ws_url(self) -> str:
        """The one URL every player uses: the shared port."""
        return f"ws://127.0.0.1:{self.port}/ws"

    def ops_url(self, i: int) -> str:
        """Worker ``i``'s own port (the default: shared port + i)."""
        return f"http://127.0.0.1:{self.port + i}"

    def start(self, timeout: float = 90.0) -> None:
        """Start it and wait for its one ``tilehall is running`` line (every worker ready)."""
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "transport.cli", "serve", "--workers", str(self.n)],
                                         env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        wait_until(lambda: "tilehall is running" in self.log() or self.proc.poll() is not None,
                   timeout, "the supervisor says it is running")
        assert self.proc.poll() is None, self.log()[-3000:]
        assert self.log().count("tilehall is running") == 1

    def log(self) -> str:
        """Everything the supervisor and its workers wrote."""
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> dict[int, int]:
        """Worker index → pid of the live worker processes (children of the supervisor)."""
        assert self.proc is not None
        pids = {}
        for child in psutil.Process(self.proc.pid).children():
            try:
                argv = child.cmdline()
                if child.status() != psutil.STATUS_ZOMBIE and "--worker-index" in argv:
                    pids[int(argv[argv.index("--worker-index") + 1])] = child.pid
            except psutil.Error:
                continue
        return pids

    def actors(self, i: int, cls: str) -> dict[str, Any]:
        """Worker ``i``'s ``/debug/actors?class=cls`` (its own port: loopback, no token)."""
        with urllib.request.urlopen(f"{self.ops_url(i)}/debug/actors?class={cls}&format=json", timeout=3) as r:
            return json.loads(r.read())

    def close(self) -> None:
        """SIGTERM, SIGKILL (the supervisor and its workers) if it hangs."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            workers = list(self.worker_pids().values())
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                for pid in workers:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def supervised(settings: Settings, tmp_path: Path) -> Iterator[Supervised]:
    """``serve --workers 2``, every worker ready."""
    s = Supervised(settings, tmp_path)
    try:
        s.start()
        yield s
    finally:
        s.close()


def _players(settings: Settings, url: str, n: int = PLAYERS) -> list[Player]:
    return [Player(i, issue_dev_token(settings, f"wrk-{i}-{uuid.uuid4().hex[:8]}"), url) for i in range(n)]


async def _start(players: list[Player]) -> list[asyncio.Task]:
    tasks = [asyncio.create_task(p.run()) for p in players]
    await asyncio.wait_for(asyncio.gather(*(p.logged_in.wait() for p in players)), 30)
    await acting_for(players, 1.0)
    return tasks


async def _stop(players: list[Player], tasks: list[asyncio.Task]) -> None:
    for p in players:
        p.stop()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)


def _nothing_lost(settings: Settings, players: list[Player]) -> None:
    lost, doubled = lost_and_doubled(settings.database_url or "", players)
    assert lost == [], f"acknowledged actions missing from action_event: {lost[:10]}"
    assert doubled == [], f"(character, seq) stored twice: {doubled[:10]}"
    assert [c for p in players for c in p.ack_conflicts] == []


def test_two_workers_share_the_port_and_a_killed_one_comes_back(supervised: Supervised, settings: Settings) -> None:
    """Players on the shared port land on both workers; SIGKILL worker 1: the supervisor starts
    a new one (a new node id, ready on its own port), its players resume and play on."""
    old_pid = supervised.worker_pids()[1]

    async def scenario() -> tuple[list[Player], dict[int, dict[str, Any]], dict[str, Any]]:
        players = _players(settings, supervised.ws_url)
        tasks = await _start(players)
        try:
            seen = {i: await asyncio.to_thread(supervised.actors, i, "CharacterActor") for i in (1, 2)}
            on_w1 = {a["entity_id"] for a in seen[1]["actors"]}
            victims = [p for p in players if p.character_id in on_w1]
            t0 = time.monotonic()
            os.kill(old_pid, signal.SIGKILL)
            await asyncio.to_thread(wait_until, lambda: supervised.worker_pids().get(1) not in (None, old_pid),
                                    15, "the supervisor starts worker 1 again")
            await asyncio.to_thread(wait_until, lambda: http_status(supervised.ops_url(1) + "/readyz") == 200,
                                    30, "the new worker 1 is ready")
            back_s = time.monotonic() - t0
            await all_play_again(players, time.monotonic(), timeout=10)
            await acting_for(players, 1.0)
            after = await asyncio.to_thread(supervised.actors, 1, "CharacterActor")
        finally:
            await _stop(players, tasks)
        figs = figures("workers sigkill", players, on_killed_worker=len(victims), worker_back_s=round(back_s, 2))
        return players, seen, {"victims": victims, "after": after, "figures": figs}

    players, seen, out = asyncio.run(asyncio.wait_for(scenario(), 120))
    ids = [seen[1]["node_id"], seen[2]["node_id"]]
    assert "-w1-" in ids[0] and "-w2-" in ids[1], ids
    held = [{a["entity_id"] for a in seen[i]["actors"]} for i in (1, 2)]
    assert held[0] and held[1], f"one worker took every player: {[len(h) for h in held]}"
    assert held[0] | held[1] == {p.character_id for p in players}
    assert not held[0] & held[1]
    assert out["after"]["node_id"] != ids[0] and "-w1-" in out["after"]["node_id"]
    # Each player of the killed worker resumed (on worker 2, or on the new worker 1).
    assert all(p.resumes["delta"] + p.resumes["snapshot"] >= 1 for p in out["victims"]), out["figures"]
    assert out["figures"]["acks"] > PLAYERS * 5, "the players hardly played"
    assert "restart 1 of this supervisor" in supervised.log()
    _nothing_lost(settings, players)


def test_sigterm_drains_every_worker_and_exits_0(supervised: Supervised, settings: Settings) -> None:
    """SIGTERM the supervisor: every worker drains (each player is closed with 1012), every
    worker exits, then the supervisor, with 0."""
    workers = supervised.worker_pids()
    assert sorted(workers) == [1, 2]

    async def scenario() -> list[Player]:
        players = _players(settings, supervised.ws_url, 8)
        tasks = await _start(players)
        try:
            assert supervised.proc is not None
            supervised.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(supervised.proc.wait, 60)
            assert code == 0, supervised.log()[-3000:]
        finally:
            await _stop(players, tasks)
        return players

    players = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert all(p.closes[1012] >= 1 for p in players), [dict(p.closes) for p in players]
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in workers.values())
    assert "'w1': 0, 'w2': 0" in supervised.log()
    _nothing_lost(settings, players)


def test_a_taken_worker_port_is_refused_in_one_line(settings: Settings, tmp_path: Path) -> None:
    """Worker 2's own port already held: the supervisor says so and exits 1 before any worker."""
    s = Supervised(settings, tmp_path)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", s.port + 2))
        blocker.listen()
        done = subprocess.run([sys.executable, "-m", "transport.cli", "serve", "--workers", "2"], env=s.env,
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert f"port {s.port + 2} (worker w2's own port) is not free" in done.stderr
    assert "worker w1 started" not in done.stderr


def test_workers_setting() -> None:
    """``server.workers``: 1 by default (a plain serve), a count, or ``auto`` (one per CPU)."""
    assert Settings().server.worker_count() == 1
    auto = Settings(server={"workers": "auto"})
    assert auto.server.worker_count() == (os.cpu_count() or 1)
    assert Settings(server={"workers": 3}).server.worker_count() == 3
    with pytest.raises(SettingsError, match="workers"):
        load_settings(None, server={"workers": 0})
    done = subprocess.run([sys.executable, "-m", "transport.cli", "serve", "--workers", "zero"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--workers" in done.stderr


def test_draining_one_worker_on_its_own_port_restarts_it(supervised: Supervised, settings: Settings) -> None:
    """``POST /admin/drain`` on worker 2's own port: its players are moved (1012, each resumes
    with a delta on worker 1), it exits, and the supervisor starts it again."""
    old_pid = supervised.worker_pids()[2]

    async def scenario() -> tuple[list[Player], list[Player], dict[str, Any]]:
        players = _players(settings, supervised.ws_url, 12)
        tasks = await _start(players)
        try:
            on_w2 = {a["entity_id"] for a in (await asyncio.to_thread(supervised.actors, 2, "CharacterActor"))["actors"]}
            moved = [p for p in players if p.character_id in on_w2]
            request = urllib.request.Request(supervised.ops_url(2) + "/admin/drain", data=b"", method="POST")
            answer = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(request, timeout=30).read()))
            await asyncio.to_thread(wait_until, lambda: supervised.worker_pids().get(2) not in (None, old_pid),
                                    15, "the supervisor starts worker 2 again")
            await all_play_again(players, time.monotonic(), timeout=10)
            await acting_for(players, 0.5)
        finally:
            await _stop(players, tasks)
        return players, moved, answer

    players, moved, answer = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert moved, "the kernel put no player on worker 2"
    assert answer["status"] == "drained" and answer["parked"] == len(moved), answer
    assert all(p.closes[1012] >= 1 and p.resumes["delta"] >= 1 for p in moved), [dict(p.resumes) for p in moved]
    wait_until(lambda: http_status(supervised.ops_url(2) + "/readyz") == 200, 30, "the new worker 2 is ready")
    assert "worker w2 exited (0)" in supervised.log()
    _nothing_lost(settings, players)
