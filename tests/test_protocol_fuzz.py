"""Property: whatever a client throws at a live session, the server answers it and stays sane.

Hypothesis builds frames from valid ones (every client frame type) by deleting, retyping or
adding fields, blowing strings up, or replacing the whole frame by random text or bytes, and
sends each to a live session on a real server (PostgreSQL, Redis, Tornado). For every frame:

- the server answers: an ``error``/``reject`` for a bad frame, the frame's normal answer for a
  valid one (``ack``/``reject``/``resync_required``, ``pong``, ``error unexpected_frame``), or a
  close with a protocol close code (never 1011);
- nothing from a bad frame is persisted: the character's client action rows grow by exactly
  the number of new acks;
- afterwards a fresh login still works and nothing was logged at ERROR (no uncaught exception).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsclient import WSClient, is_type, login

from config.version import SERVER_VERSION
from transport.auth import issue_dev_token
from transport.client_frames import FrameError, parse_client_frame

Frame = dict[str, Any]
BARRIER_T = -987654321.5  # the t of our own ping after each fuzz frame
CLOSE_CODES = {1000, 1008, 1009, 4001, 4002}

BASES: dict[str, Callable[[Any], Frame]] = {
    "hello": lambda c: {"type": "hello", "protocol_version": SERVER_VERSION, "token": c.token},
    "resume": lambda c: {"type": "resume", "protocol_version": SERVER_VERSION, "token": c.token,
                         "reconnect_token": "r" * 43, "last_event_seq": 0},
    "move": lambda c: {"type": "action", "seq": c.seq, "action_type": "move", "payload": {"dx": 1, "dy": 0}},
    "chat": lambda c: {"type": "action", "seq": c.seq, "action_type": "chat", "payload": {"text": "hi"}},
    "ability": lambda c: {"type": "action", "seq": c.seq, "action_type": "ability",
                          "payload": {"name": "heal", "target_id": None}},
    "ping": lambda c: {"type": "ping", "t": 1.5},
    "reauth": lambda c: {"type": "reauth", "token": c.token},
    "logout": lambda c: {"type": "logout"},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
mutations = st.one_of(
    st.tuples(st.just("none")),
    st.tuples(st.just("delete"), st.integers(0, 10)),
    st.tuples(st.just("retype"), st.integers(0, 10), json_values),
    st.tuples(st.just("extra"), st.text(min_size=1, max_size=12), json_values),
    st.tuples(st.just("huge"), st.integers(0, 10), st.sampled_from([300, 5000])),
    st.tuples(st.just("text"), st.text(max_size=200)),
    st.tuples(st.just("bytes"), st.binary(max_size=200)),
)


def _paths(frame: Frame, prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in frame.items():
        out.append(prefix + (key,))
        if isinstance(value, dict):
            out.extend(_paths(value, prefix + (key,)))
    return out


def _set(frame: Frame, path: tuple, value: Any, delete: bool = False) -> None:
    for key in path[:-1]:
        frame = frame[key]
    if delete:
        del frame[path[-1]]
    else:
        frame[path[-1]] = value


def mutate(base: Frame, mutation: tuple) -> str | bytes:
    """The wire form of ``base`` after ``mutation``."""
    kind = mutation[0]
    if kind == "text":
        return mutation[1]
    if kind == "bytes":
        return mutation[1]
    frame = json.loads(json.dumps(base))
    paths = _paths(frame)
    if kind == "delete":
        _set(frame, paths[mutation[1] % len(paths)], None, delete=True)
    elif kind == "retype":
        _set(frame, paths[mutation[1] % len(paths)], mutation[2])
    elif kind == "extra":
        frame[mutation[1]] = mutation[2]
    elif kind == "huge":
        _set(frame, paths[mutation[1] % len(paths)], "x" * mutation[2])
    return json.dumps(frame)


@dataclass
class Player:
    """The fuzzed session: its socket, token, character and the seq the server expects."""

    server: Any
    user: str
    token: str = ""
    client: WSClient | None = None
    character_id: str = ""
    seq: int = 1
    closes: list[int] = field(default_factory=list)

    async def ensure_connected(self) -> WSClient:
        """The open session, logging in again (taking over) after a close."""
        if self.client is None or self.client.closed:
            self.client = await login(self.server.ws_url, self.token)
            self.character_id = self.client.welcome["character"]["character_id"]
            self.seq = self.client.welcome["last_action_seq"] + 1
        return self.client

    def action_rows(self) -> int:
        """Client action rows of the character (system events excluded)."""
        with psycopg.connect(self.server.settings.database_url, autocommit=True) as conn:
            return conn.execute(
                "SELECT count(*) FROM action_event WHERE character_id = %s AND sequence_number IS NOT NULL",
                (self.character_id,)).fetchone()[0]


def _expected_answer(wire: str | bytes) -> Callable[[list[Frame]], bool] | None:
    """What answers this frame (None: a valid reauth, answered by silence)."""
    try:
        frame = parse_client_frame(wire)
    except FrameError:
        return lambda got: any(f["type"] in ("error", "reject") for f in got)
    if frame.type == "action":
        return lambda got: any(f["type"] in ("ack", "reject", "resync_required") for f in got)
    if frame.type == "ping":
        return lambda got: any(f["type"] == "pong" and f["t"] != BARRIER_T for f in got)
    if frame.type in ("hello", "resume"):
        return lambda got: any(f["type"] == "error" and f["code"] == "unexpected_frame" for f in got)
    if frame.type == "logout":
        return lambda got: False  # answered by kicked + close 1000
    return None


async def throw(player: Player, base_name: str, mutation: tuple) -> None:
    """Send one mutated frame to the live session and check the answer and the database."""
    c = await player.ensure_connected()
    wire = mutate(BASES[base_name](player), mutation)
    expected = _expected_answer(wire)
    rows_before = await asyncio.to_thread(player.action_rows)
    seq_before = player.seq
    start = len(c.history)
    if isinstance(wire, bytes):
        await c.conn.write_message(wire, binary=True)
    else:
        await c.send(wire)
    if not c.closed:
        try:
            await c.ping(BARRIER_T)
        except Exception:  # the server closed the socket under us: judged below
            pass
    deadline = time.monotonic() + 5.0
    while True:
        got = c.history[start:]
        barrier = any(f["type"] == "pong" and f.get("t") == BARRIER_T for f in got)
        if c.closed or (barrier and (expected is None or expected(got))):
            break
        assert time.monotonic() < deadline, f"no answer to {wire[:200]!r}; got {got}"
        try:
            await c._read_one(max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            pass
    got = c.history[start:]
    if c.closed:
        assert c.close_code in CLOSE_CODES, (c.close_code, wire[:200], got)
        assert any(f["type"] in ("error", "kicked") for f in got), (c.close_code, got)
        player.closes.append(c.close_code)
    new_acks = [f for f in got if f["type"] == "ack" and f["seq"] == seq_before]
    if any(f["type"] in ("ack", "reject") and f["seq"] == seq_before for f in got):
        player.seq = seq_before + 1
    assert await asyncio.to_thread(player.action_rows) == rows_before + len(new_acks), (wire[:200], got)
    c.inbox.clear()


@pytest.fixture(scope="module")
def fuzz_player(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Player, asyncio.AbstractEventLoop]]:
    """One server for the module (the property, then the fresh-login check after it), with a
    huge malformed budget and frame rate so each example is judged on its own."""
    from nodes import LiveServer, make_settings

    server = LiveServer(make_settings(
        database_url, redis_url, redis_prefix, tmp_path_factory.mktemp("fuzz"),
        session={"malformed_frame_budget": 1_000_000, "max_frames_per_second": 100_000},
        game={"moves_per_second": 200.0, "chats_per_second": 200.0},
    ))
    player = Player(server, f"fuzz-{uuid.uuid4().hex[:10]}")
    player.token = issue_dev_token(server.settings, player.user)
    loop = asyncio.new_event_loop()
    yield player, loop
    if player.client is not None:

        async def close(c: WSClient) -> None:
            c.close()

        loop.run_until_complete(close(player.client))  # tornado needs its loop to close
    loop.close()
    server.stop()


@settings(max_examples=60, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(base=st.sampled_from(sorted(BASES)), mutation=mutations)
def test_any_frame_is_answered_and_nothing_bad_persists(
    fuzz_player: Any, base: str, mutation: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    """Every mutated frame gets an answer or a protocol close; only valid actions persist."""
    player, loop = fuzz_player
    caplog.set_level(logging.ERROR)
    loop.run_until_complete(asyncio.wait_for(throw(player, base, mutation), 15))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_fresh_login_after_fuzzing(fuzz_player: Any) -> None:
    """After the property ran on the same server: a fixed battery of nasty frames, then a new
    user and the fuzzed user log in and play."""
    player, loop = fuzz_player

    async def scenario() -> None:
        player.closes.clear()
        for base, mutation in [("chat", ("huge", 4, 5000)), ("move", ("retype", 4, "1")),
                               ("hello", ("bytes", b"\xff\x00")), ("reauth", ("retype", 1, "a")),
                               ("logout", ("none",)), ("chat", ("none",))]:
            await throw(player, base, mutation)
        assert player.closes == [1009, 4001, 1000]
        fresh = await login(player.server.ws_url, issue_dev_token(player.server.settings, "fresh-" + player.user))
        seq = await fresh.chat("still here")
        assert (await fresh.answer(seq))["type"] == "ack"
        fresh.close()
        again = await login(player.server.ws_url, player.token)
        seq = await again.move(0, 1)
        assert (await again.read_until(is_type("ack", "reject")))["seq"] == seq
        again.close()

    loop.run_until_complete(asyncio.wait_for(scenario(), 20))
