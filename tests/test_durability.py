"""Jepsen-style durability (issue 3, DESIGN section 9): SIGKILL the server under load, lose no ack.

Many players send moves and chats over real WebSockets, each keeping a few actions unacknowledged
in flight, while the ``tilehall serve`` process is killed with SIGKILL at a random moment. Every
action sent and every answer received is recorded. Then PostgreSQL is checked against what the
players saw:

- every acknowledged ``(character, seq)`` has exactly one row, with the ack's ``action_id`` and
  ``persisted_at``;
- every non-system row was sent by that character's player, with the same type and payload, and
  was not rejected;
- no ``(character_id, sequence_number)`` is stored twice;
- ``character_profile.last_action_seq`` is at least the highest acked (and stored) seq.

Finally the server is restarted on the same database: every player logs in again, is told a
``last_action_seq`` at least its highest acked seq, and its next action is acked.

The kill moment is drawn from a seeded RNG; the seed is printed. Replay a failure with
``TILEHALL_DURABILITY_SEED=<seed>``.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from config.settings import Settings
from config.version import SERVER_VERSION
from transport.auth import issue_dev_token

PLAYERS = 20
WINDOW = 4  # unacknowledged actions each player keeps in flight
KILL_AFTER_S = (1.0, 3.0)  # the kill moment, drawn after every player is in play
STEPS = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0)]
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


# ---------------------------------------------------------------- the server process


class ServerProcess:
    """``python -m transport.cli serve`` as a child process; its output is drained by a thread
    (so logging can never block the server) and its URL announced through an event."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "transport.cli", "serve"],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.url: str | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=200)
        self._announced = threading.Event()
        self._reader = threading.Thread(target=self._drain, name="server-output", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self.tail.append(line)
                if self.url is None and line.startswith("tilehall is running: open "):
                    self.url = line.split("open ", 1)[1].strip()
                    self._announced.set()
        finally:
            self._announced.set()  # EOF: the process died before (or after) announcing

    def wait_url(self, timeout: float = 60.0) -> str:
        """The announced URL; fails with the server's output if it does not come in time."""
        self._announced.wait(timeout)
        assert self.url, f"server announced no URL within {timeout} s:\n{self.output()}"
        return self.url

    @property
    def ws_url(self) -> str:
        """The ``/ws`` endpoint of the announced URL."""
        assert self.url
        return "ws://" + self.url.split("://", 1)[1].rstrip("/") + "/ws"

    def descendants(self) -> list[psutil.Process]:
        """Every process this server started (none expected: PostgreSQL and Redis are external)."""
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no flush, no goodbye."""
        os.kill(self.proc.pid, signal.SIGKILL)

    def stop(self, timeout: float = 30.0) -> int:
        """Graceful stop (SIGINT, as Ctrl-C); returns the exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def reap(self) -> None:
        """Make sure the process is gone and its output thread finished."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)

    def output(self) -> str:
        """The last lines the server printed."""
        return "".join(self.tail)


# ---------------------------------------------------------------- the players


@dataclass
class Player:
    """One player's log: everything it sent and every answer it got."""

    index: int
    user: str
    token: str
    rng: random.Random
    character_id: str = ""
    welcome_seq: int = 0
    sent: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    acks: dict[int, tuple[str, str]] = field(default_factory=dict)  # seq → (action_id, persisted_at)
    rejects: dict[int, str] = field(default_factory=dict)  # seq → code
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    closed_before_kill: bool = False

    def next_action(self) -> tuple[str, dict[str, Any]]:
        """A random move (one step in 8 directions) or a chat whose text is unique."""
        if self.rng.random() < 0.5:
            dx, dy = self.rng.choice(STEPS)
            return "move", {"dx": dx, "dy": dy}
        return "chat", {"text": f"p{self.index} #{len(self.sent)} {self.rng.getrandbits(48):x}"}

    @property
    def max_acked(self) -> int:
        """The highest seq this player saw acknowledged (0: none)."""
        return max(self.acks, default=0)


async def connect(ws_url: str, token: str) -> tuple[WebSocketClientConnection, dict[str, Any]]:
    """Open a socket, send ``hello`` and return it with the ``welcome``."""
    conn = await websocket_connect(HTTPRequest(ws_url, connect_timeout=10, request_timeout=10))
    conn.write_message(json.dumps({"type": "hello", "protocol_version": SERVER_VERSION, "token": token}))
    while True:
        message = await asyncio.wait_for(conn.read_message(), timeout=15)
        assert message is not None, "socket closed before welcome"
        frame = json.loads(message)
        if frame["type"] == "welcome":
            return conn, frame
        assert frame["type"] == "event", f"expected welcome, got {frame}"


async def play(player: Player, ws_url: str, welcomed: Callable[[], None], killed: asyncio.Event) -> None:
    """Closed loop: keep WINDOW actions unanswered; on every answer, send the next; stop when the
    socket dies. Each action is recorded before it is written, so nothing reaches the server
    unrecorded."""
    conn, welcome = await connect(ws_url, player.token)
    player.character_id = welcome["character"]["character_id"]
    player.welcome_seq = welcome["last_action_seq"]
    next_seq = player.welcome_seq + 1
    welcomed()

    def send_next() -> bool:
        nonlocal next_seq
        action_type, payload = player.next_action()
        player.sent[next_seq] = (action_type, payload)
        frame = {"type": "action", "seq": next_seq, "action_type": action_type, "payload": payload}
        next_seq += 1
        try:
            conn.write_message(json.dumps(frame))
        except WebSocketClosedError:
            return False
        return True

    for _ in range(WINDOW):
        if not send_next():
            break
    while True:
        message = await conn.read_message()
        if message is None:
            player.closed_before_kill = not killed.is_set()
            return
        frame = json.loads(message)
        kind = frame["type"]
        if kind == "ack":
            player.acks[frame["seq"]] = (frame["action_id"], frame["persisted_at"])
        elif kind == "reject":
            player.rejects[frame["seq"]] = frame["code"]
        elif kind != "event":
            player.unexpected.append(frame)
            continue
        if kind in ("ack", "reject"):
            send_next()  # False: the socket is closing; keep reading until it reports closed


async def load_then_kill(server: ServerProcess, players: list[Player], kill_after: float) -> float:
    """Run every player; once all are in play, SIGKILL the server ``kill_after`` s later.
    Returns how many seconds the players had been playing when the kill landed."""
    killed = asyncio.Event()
    in_play = asyncio.Event()
    count = 0

    def welcomed() -> None:
        nonlocal count
        count += 1
        if count == len(players):
            in_play.set()

    tasks = [asyncio.create_task(play(p, server.ws_url, welcomed, killed)) for p in players]
    ready = asyncio.create_task(in_play.wait())
    done, _ = await asyncio.wait([ready, *tasks], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        ready.cancel()
        for t in tasks:
            t.cancel()
        errors = [repr(t.exception()) for t in done if t is not ready and t.exception()]
        pytest.fail(f"players not in play within 30 s ({count}/{len(players)}): {errors}\n{server.output()}")
    started = time.monotonic()
    # The deliberately chosen, seeded kill moment: the one wait in this test that is not for an event.
    await asyncio.sleep(kill_after)
    killed.set()
    server.kill()
    played = time.monotonic() - started
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)
    return played


async def play_on(player: Player, ws_url: str) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """After the restart: log in again and send one chat; returns (welcome, its seq, its answer)."""
    conn, welcome = await connect(ws_url, player.token)
    seq = welcome["last_action_seq"] + 1
    payload = {"text": f"p{player.index} after the restart"}
    player.sent[seq] = ("chat", payload)
    player.rejects.pop(seq, None)  # a seq rejected before the kill may be reused now
    conn.write_message(json.dumps({"type": "action", "seq": seq, "action_type": "chat", "payload": payload}))
    try:
        while True:
            message = await asyncio.wait_for(conn.read_message(), timeout=15)
            assert message is not None, f"{player.user}: socket closed before the answer to seq {seq}"
            frame = json.loads(message)
            if frame["type"] in ("ack", "reject", "resync_required", "error") and frame.get("seq", seq) == seq:
                return welcome, seq, frame
    finally:
        conn.close()


# ---------------------------------------------------------------- checks against PostgreSQL


@dataclass(frozen=True)
class Row:
    """One ``action_event`` row."""

    character_id: str
    seq: int | None
    action_id: str
    action_type: str
    payload: dict[str, Any]
    persisted_at: dt.datetime


def read_rows(database_url: str) -> tuple[list[Row], dict[str, int]]:
    """Every action_event row and every character's ``last_action_seq``."""
    with psycopg.connect(database_url) as conn:
        rows = [
            Row(c, s, a, t, p, at)
            for c, s, a, t, p, at in conn.execute(
                "SELECT character_id::text, sequence_number, action_id::text, action_type::text,"
                " payload_json, persisted_at FROM action_event"
            )
        ]
        profiles = dict(conn.execute("SELECT character_id::text, last_action_seq FROM character_profile"))
    return rows, profiles


def parse_ts(text: str) -> dt.datetime:
    """A protocol timestamp (``...123456Z``) as an aware datetime."""
    return dt.datetime.strptime(text, TS_FORMAT).replace(tzinfo=dt.UTC)


def durability_problems(players: list[Player], rows: list[Row], profiles: dict[str, int]) -> list[str]:
    """Every way the database disagrees with what the players sent and were told (empty: none)."""
    problems: list[str] = []
    by_character = {p.character_id: p for p in players}
    stored: dict[tuple[str, int], list[Row]] = collections.defaultdict(list)
    for row in rows:
        player = by_character.get(row.character_id)
        if player is None:
            problems.append(f"row of a character no player plays: {row}")
            continue
        if row.seq is None:
            if row.action_type != "system":
                problems.append(f"{player.user}: non-system row without seq: {row}")
            continue
        stored[(row.character_id, row.seq)].append(row)
        if row.seq not in player.sent:
            problems.append(f"{player.user}: row for seq {row.seq} that was never sent: {row}")
            continue
        if row.seq in player.rejects:
            problems.append(f"{player.user}: seq {row.seq} was rejected ({player.rejects[row.seq]}) but stored")
        action_type, payload = player.sent[row.seq]
        if row.action_type != action_type:
            problems.append(f"{player.user}: seq {row.seq} sent as {action_type}, stored as {row.action_type}")
        elif action_type == "move" and (row.payload.get("dx"), row.payload.get("dy")) != (
            payload["dx"], payload["dy"]
        ):
            problems.append(f"{player.user}: seq {row.seq} sent {payload}, stored {row.payload}")
        elif action_type == "chat" and row.payload.get("text") != payload["text"]:
            problems.append(f"{player.user}: seq {row.seq} sent {payload}, stored {row.payload}")
    for (character_id, seq), same in stored.items():
        if len(same) > 1:
            problems.append(f"{by_character[character_id].user}: seq {seq} stored {len(same)} times")
    for player in players:
        for seq, (action_id, persisted_at) in sorted(player.acks.items()):
            found = stored.get((player.character_id, seq), [])
            if not found:
                problems.append(f"{player.user}: acked seq {seq} ({action_id}) is missing")
            elif len(found) == 1 and (found[0].action_id, found[0].persisted_at) != (
                action_id, parse_ts(persisted_at)
            ):
                problems.append(
                    f"{player.user}: acked seq {seq} as {action_id} at {persisted_at}, stored {found[0]}"
                )
        highest_stored = max((s for (c, s) in stored if c == player.character_id), default=0)
        last = profiles.get(player.character_id)
        if last is None:
            problems.append(f"{player.user}: no character_profile row")
        elif last < max(player.max_acked, highest_stored):
            problems.append(
                f"{player.user}: last_action_seq {last} < acked {player.max_acked} / stored {highest_stored}"
            )
    return problems


# ---------------------------------------------------------------- the test


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Every server process the test starts; afterwards none of them (or their children) lives."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.reap()


def server_env(database_url: str, redis_url: str, prefix: str, tmp_path: Path) -> dict[str, str]:
    """The serve command's environment: this test's database and Redis prefix, generous game rate
    limits (the load is meant for the commit path, not for ``too_fast``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILEHALL_")}
    env.update(
        TILEHALL_MODE="dev",
        TILEHALL_DATABASE_URL=database_url,
        TILEHALL_REDIS_URL=redis_url,
        TILEHALL_REDIS__KEY_PREFIX=prefix,
        TILEHALL_SERVER__PORT="0",
        TILEHALL_VAR_DIR=str(tmp_path / "var"),
        TILEHALL_RETENTION__ARCHIVE_DIR=str(tmp_path / "archive"),
        TILEHALL_GAME__MOVES_PER_SECOND="256",
        TILEHALL_GAME__CHATS_PER_SECOND="256",
        TILEHALL_SESSION__MAX_FRAMES_PER_SECOND="100000",
        TILEHALL_LOGGING__LEVEL="WARNING",
        TILEHALL_AUTH__LOGIN_RATE_PER_MINUTE="600000",  # every player logs in from 127.0.0.1
        TILEHALL_AUTH__LOGIN_BURST="100000",
    )
    return env


def dev_settings(tmp_path: Path) -> Settings:
    """Dev settings of the install :func:`server_env` describes: tokens they sign are the
    server's (both read the dev secret in ``tmp_path / "var"``)."""
    return Settings(mode="dev", var_dir=tmp_path / "var")


@pytest.mark.slow
def test_no_acknowledged_action_lost_on_sigkill(
    make_database: Callable[..., str],
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    servers: list[ServerProcess],
) -> None:
    seed = int(os.environ.get("TILEHALL_DURABILITY_SEED") or random.SystemRandom().randrange(1 << 32))
    rng = random.Random(seed)
    kill_after = rng.uniform(*KILL_AFTER_S)
    print(f"durability seed {seed} (replay: TILEHALL_DURABILITY_SEED={seed}); kill after {kill_after:.3f} s")

    database_url = make_database()
    env = server_env(database_url, redis_url, f"{redis_prefix}durability-{uuid.uuid4().hex[:6]}:", tmp_path)
    settings = dev_settings(tmp_path)
    run = uuid.uuid4().hex[:6]
    players = [
        Player(i, f"dur-{run}-{i}", issue_dev_token(settings, f"dur-{run}-{i}"), random.Random(f"{seed}-{i}"))
        for i in range(PLAYERS)
    ]

    # 1. Load, then SIGKILL at the chosen moment.
    server = ServerProcess(env, tmp_path)
    servers.append(server)
    server.wait_url()
    children = server.descendants()
    played = asyncio.run(load_then_kill(server, players, kill_after))
    assert server.proc.wait(10) == -signal.SIGKILL, server.output()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"the killed server left processes behind: {alive}"

    sent = sum(len(p.sent) for p in players)
    acked = sum(len(p.acks) for p in players)
    rejected = sum(len(p.rejects) for p in players)
    unanswered = sent - acked - rejected
    print(f"killed after {played:.2f} s of play: {sent} sent, {acked} acked, {rejected} rejected "
          f"({collections.Counter(c for p in players for c in p.rejects.values())}), {unanswered} unanswered")
    for p in players:
        assert not p.unexpected, f"{p.user} got unexpected frames: {p.unexpected[:5]}"
        assert not p.closed_before_kill, f"{p.user}'s socket closed before the kill"
        assert p.acks, f"{p.user} got no ack before the kill: the load never reached the commit path"
    assert unanswered > 0, "nothing was in flight when the server died: the kill did not land under load"

    # 2. The database against the players' logs.
    rows, profiles = read_rows(database_url)
    problems = durability_problems(players, rows, profiles)
    acks_of = {p.character_id: p.acks for p in players}
    stored_unacked = sum(1 for r in rows if r.seq is not None and r.seq not in acks_of.get(r.character_id, {}))
    print(f"{len(rows)} rows stored; {stored_unacked} committed whose ack never arrived")
    assert not problems, f"seed {seed}: {len(problems)} problem(s):\n" + "\n".join(problems[:30])

    # 3. Restart on the same database: play continues where the acks left off.
    server = ServerProcess(env, tmp_path)
    servers.append(server)
    server.wait_url()

    async def everyone_plays_on() -> list[tuple[dict[str, Any], int, dict[str, Any]]]:
        return await asyncio.gather(*(play_on(p, server.ws_url) for p in players))

    results = asyncio.run(everyone_plays_on())
    for player, (welcome, seq, answer) in zip(players, results, strict=True):
        assert welcome["character"]["character_id"] == player.character_id
        assert welcome["last_action_seq"] >= player.max_acked, (
            f"{player.user}: welcome.last_action_seq {welcome['last_action_seq']} < acked {player.max_acked}"
        )
        assert answer["type"] == "ack", f"{player.user}: seq {seq} after the restart got {answer}"
        player.acks[seq] = (answer["action_id"], answer["persisted_at"])
    children = server.descendants()
    assert server.stop() == 0, server.output()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"the server left processes behind: {alive}"

    rows, profiles = read_rows(database_url)
    problems = durability_problems(players, rows, profiles)
    assert not problems, f"seed {seed}, after the restart:\n" + "\n".join(problems[:30])

