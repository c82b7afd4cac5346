"""Issue 11 on the server: a session resumes on any node of the cluster, and a node drains.

Two in-process nodes on one PostgreSQL and Redis (as ``tests/test_cluster.py`` runs them), real
WebSockets. A resume reaching node B for a session of node A: A parks it when asked (alive),
or it was parked by A's drain, or A is gone (snapshot). Every wait is for an event or a state,
with a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import redis
from nodes import LiveServer, readyz
from test_cluster import QUIET, zone_detail
from test_sessions import (
    FAST_GAME,
    closed_with,
    drain_events,
    hello_frame,
    metric,
    new_user,
    read_events,
    refused,
    resume_frame,
    rows,
    run,
    token,
    wait_until,
)
from waiting import poll
from wsclient import Frame, WSClient, login

from actors.base import find_actor
from config.settings import Settings
from transport.auth import issue_dev_token

GAME = {**FAST_GAME, "view_radius": 64}


# ------------------------------------------------------------------ helpers


def two_nodes(start_server: Callable[..., LiveServer], **over: Any) -> tuple[LiveServer, LiveServer]:
    """Nodes A and B of one cluster, once each lists the other as a peer."""
    a = start_server(game=GAME, cluster=QUIET, **over)
    b = start_server(game=GAME, cluster=QUIET, **over)
    for node, other in ((a, b), (b, a)):
        poll(lambda node=node: zone_detail(node), lambda d, other=other: other.node.node_id in d["peers"])
    return a, b


def session_detail(server: LiveServer, session_id: str) -> dict[str, Any] | None:
    """The session actor's describe() on ``server`` (None when it is not there)."""
    ref = server.call(lambda: server.node.directory.sessions.get(session_id))
    actor = find_actor(ref.actor_urn) if ref is not None else None
    return actor.describe() if actor is not None else None


def has_character(server: LiveServer, cid: str) -> bool:
    """Is a character actor of ``cid`` registered on ``server``?"""
    return server.call(lambda: cid in server.node.directory.characters)


def epoch(server: LiveServer, cid: str) -> int:
    """The character's ownership epoch in PostgreSQL."""
    return rows(server, "SELECT owner_epoch FROM character_profile WHERE character_id = %s", cid)[0][0]


def stored(server: LiveServer, cid: str) -> list[tuple[int, int]]:
    """(seq, how many rows) of every stored action of ``cid``."""
    return rows(server, "SELECT sequence_number, count(*) FROM action_event WHERE character_id = %s"
                " AND sequence_number IS NOT NULL GROUP BY 1 ORDER BY 1", cid)


def logouts(server: LiveServer, cid: str) -> int:
    """How many logout system events ``cid`` has."""
    return rows(server, "SELECT count(*) FROM action_event WHERE character_id = %s AND"
                " action_type = 'system' AND payload_json->>'kind' = 'logout'", cid)[0][0]


def last_event_seq(c: WSClient) -> int:
    """The highest event_seq ``c`` has seen (welcome/resumed included)."""
    return max([int(f["event_seq"]) for f in c.history if f.get("event_seq") is not None] or [0])



async def away(server: LiveServer, c: WSClient) -> None:
    """Close ``c`` (no logout) and wait until its session on ``server`` waits for a resume."""
    c.close()
    sid = c.welcome["session_id"]
    await wait_until(lambda: (session_detail(server, sid) or {}).get("status") == "reconnecting")


async def resumed_on(server: LiveServer, tok: str, rt: str, last: int, next_seq: int) -> tuple[WSClient, Frame]:
    """A new socket to ``server`` resuming with ``rt``; its next action seq is ``next_seq``."""
    c = await WSClient.connect(server.ws_url)
    frame = await c.resume(tok, rt, last)
    c.next_seq = next_seq
    return c, frame


# ------------------------------------------------------------------ (a) owner alive: handed over


def test_a_session_dropped_on_a_resumes_on_b_with_the_events_it_missed(start_server: Callable[..., Any]) -> None:
    """Alice drops on A; Bob chats on A; Alice resumes on B: ``resumed`` delta replays Bob's
    chats, A's session and character are gone, B's character owns the row (epoch bumped), her
    next action is acked, no action is stored twice and no logout event was written."""
    a, b = two_nodes(start_server)

    async def scenario() -> None:
        tok = token(a, new_user())
        alice = await login(a.ws_url, tok)
        sid, cid = alice.welcome["session_id"], alice.welcome["character"]["character_id"]
        await alice.answers_for([await alice.chat("one"), await alice.chat("two")])
        bob = await login(a.ws_url, token(a, new_user()))
        await drain_events(alice, lambda e: e["payload"].get("kind") == "login"
                           and e["character_id"] == bob.welcome["character"]["character_id"])
        last = last_event_seq(alice)
        await away(a, alice)
        await bob.answers_for([await bob.chat(f"line {i}") for i in range(3)])
        await wait_until(lambda: (session_detail(a, sid) or {}).get("event_seq", 0) >= last + 3)
        before = epoch(a, cid)
        snapshots = metric(b, "tilehall_state_refresh_forced_total")

        c, resumed = await resumed_on(b, tok, alice.welcome["reconnect_token"], last, 3)
        assert resumed["session_id"] == sid and resumed["sync"] == "delta", resumed
        replay = await read_events(c, resumed["replayed"])
        assert [e["event_seq"] for e in replay] == list(range(last + 1, resumed["event_seq"] + 1))
        assert [e["payload"]["text"] for e in replay if e["action_type"] == "chat"] == [
            "line 0", "line 1", "line 2"]
        await wait_until(lambda: session_detail(a, sid) is None and not has_character(a, cid))
        assert has_character(b, cid) and session_detail(b, sid) is not None
        assert epoch(b, cid) > before
        ack = await c.answer(await c.chat("three"))
        assert ack["type"] == "ack", ack
        await wait_until(lambda: len(stored(b, cid)) == 3)
        assert stored(b, cid) == [(1, 1), (2, 1), (3, 1)]
        assert logouts(b, cid) == 0
        assert metric(b, "tilehall_state_refresh_forced_total") == snapshots
        c.close()
        bob.close()

    run(scenario(), timeout=60)


# ------------------------------------------------------------------ (b) + (e) drain


def test_drain_moves_a_player_mid_play_to_the_other_node(start_server: Callable[..., Any]) -> None:
    """A drains while Alice has an action committing (its row locked): /readyz says 503
    "draining" at once, new hellos on A are refused with kicked node_draining + 1012, the
    in-flight action is acked before the close, Alice gets kicked node_draining + 1012,
    resumes on B with a delta, resends what was unanswered, and every action is stored once."""
    a, b = two_nodes(start_server)

    async def scenario() -> None:
        tok = token(a, new_user())
        alice = await login(a.ws_url, tok)
        cid = alice.welcome["character"]["character_id"]
        await alice.answers_for([await alice.chat("before")])
        done = threading.Event()
        with psycopg.connect(a.settings.database_url) as locker:
            locker.execute("SELECT 1 FROM character_profile WHERE character_id = %s FOR UPDATE", (cid,))
            in_flight = await alice.chat("in flight during the drain")
            drain = asyncio.ensure_future(asyncio.to_thread(lambda: (a.call(a.node.drain(), 60), done.set())))
            await wait_until(lambda: readyz(a)[0] == 503 and "draining" in readyz(a)[1]["problems"])
            assert not done.is_set()  # still waiting for the in-flight commit
            code, frame = await refused(a.ws_url, hello_frame(token(a, new_user())))
            assert (code, frame) == (1012, {"type": "kicked", "reason": "node_draining"})
            locker.rollback()
        code, kicked = await closed_with(alice, 15)
        assert (code, kicked["reason"]) == (1012, "node_draining")
        assert alice.answers[in_flight][0]["type"] == "ack"  # answered before the close
        await drain
        assert readyz(a)[0] == 503
        assert readyz(b)[0] == 200
        c, resumed = await resumed_on(b, tok, alice.welcome["reconnect_token"], last_event_seq(alice), 3)
        assert resumed["sync"] == "delta", resumed
        ack = await c.answer(await c.chat("after"))
        assert ack["type"] == "ack", ack
        await wait_until(lambda: len(stored(b, cid)) == 3)
        assert stored(b, cid) == [(1, 1), (2, 1), (3, 1)]
        assert logouts(b, cid) == 0
        c.close()

    run(scenario(), timeout=60)


def test_drain_with_pipelined_actions_loses_no_ack(start_server: Callable[..., Any]) -> None:
    """Ten chats pipelined, then A drains: whatever was acked before the close is stored; the
    rest, resent after the resume on B, is answered there; each seq stored exactly once."""
    a, b = two_nodes(start_server)

    async def scenario() -> None:
        tok = token(a, new_user())
        alice = await login(a.ws_url, tok)
        cid = alice.welcome["character"]["character_id"]
        frames = [{"type": "action", "seq": s, "action_type": "chat", "payload": {"text": f"m{s}"}}
                  for s in range(1, 11)]
        for f in frames:
            await alice.send(f)
        parked = await asyncio.to_thread(lambda: a.call(a.node.drain(), 60))
        assert parked == 1
        code, kicked = await closed_with(alice, 15)
        assert (code, kicked["reason"]) == (1012, "node_draining")
        acked_on_a = {s for s, fs in alice.answers.items() if fs[0]["type"] == "ack"}
        c, resumed = await resumed_on(b, tok, alice.welcome["reconnect_token"], last_event_seq(alice), 11)
        assert resumed["sync"] == "delta", resumed
        for f in frames:
            if f["seq"] not in alice.answers:
                await c.send(f)
        answers = await c.answers_for([s for s in range(1, 11) if s not in alice.answers])
        assert all(f["type"] == "ack" for f in answers.values()), answers
        await wait_until(lambda: len(stored(b, cid)) == 10)
        assert stored(b, cid) == [(s, 1) for s in range(1, 11)]
        assert acked_on_a <= {s for s, _ in stored(b, cid)}
        c.close()

    run(scenario(), timeout=60)


def test_admin_drain_endpoint_and_readyz(start_server: Callable[..., Any]) -> None:
    """POST /admin/drain (loopback, no admin token configured) answers once drained, asks the
    process to stop, and /readyz says 503 "draining"; a resume on the drained node is moved."""
    a = start_server()

    async def scenario() -> None:
        tok = token(a, new_user())
        alice = await login(a.ws_url, tok)
        request = urllib.request.Request(a.url + "/admin/drain", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=30) as resp:
            body = json.loads(resp.read())
        assert resp.status == 200 and body["status"] == "drained" and body["parked"] == 1, body
        assert a.call(a.node.stop_requested.is_set)
        code, kicked = await closed_with(alice)
        assert (code, kicked["reason"]) == (1012, "node_draining")
        status, ready = readyz(a)
        assert status == 503 and "draining" in ready["problems"], ready
        code, frame = await refused(a.ws_url, resume_frame(tok, alice.welcome["reconnect_token"]))
        assert (code, frame["reason"]) == (1012, "node_draining")

    run(scenario(), timeout=60)


# ------------------------------------------------------------------ (c) owner gone


def test_resume_after_the_owner_node_is_gone_gets_a_snapshot(start_server: Callable[..., Any]) -> None:
    """A goes away without draining (it says bye, its actors die): a resume on B starts the
    session from the database with a snapshot, counts tilehall_state_refresh_forced_total, and
    the next action is acked by B's new owner (epoch bumped)."""
    a, b = two_nodes(start_server)

    async def scenario() -> None:
        tok = token(a, new_user())
        alice = await login(a.ws_url, tok)
        sid, cid = alice.welcome["session_id"], alice.welcome["character"]["character_id"]
        await alice.answers_for([await alice.chat("one")])
        await away(a, alice)
        before = epoch(a, cid)
        a.call(a.node.cluster.stop)  # "bye": B forgets A at once
        await asyncio.to_thread(poll, lambda: zone_detail(b), lambda d: a.node.node_id not in d["peers"])
        for ref in a.call(lambda: [a.node.directory.sessions[sid], a.node.directory.characters[cid]]):
            ref.stop()  # A's actors die without parking anything
        snapshots = metric(b, "tilehall_state_refresh_forced_total")
        c, resumed = await resumed_on(b, tok, alice.welcome["reconnect_token"], last_event_seq(alice), 2)
        assert resumed["session_id"] == sid and resumed["sync"] == "snapshot", resumed
        assert cid in {ch["character_id"] for ch in resumed["world"]["characters"]}
        assert metric(b, "tilehall_state_refresh_forced_total") == snapshots + 1
        ack = await c.answer(await c.chat("two"))
        assert ack["type"] == "ack", ack
        assert epoch(b, cid) > before
        await wait_until(lambda: len(stored(b, cid)) == 2)
        assert stored(b, cid) == [(1, 1), (2, 1)]
        c.close()

    run(scenario(), timeout=60)


# ------------------------------------------------------------------ (d) single use, ended sessions


def test_a_token_used_once_is_refused_on_every_node(start_server: Callable[..., Any]) -> None:
    """The token that resumed the session on B is spent: on A and on B it gives 4004. A token
    of a session that logged out on A is refused on B (A says it is gone), 4004."""
    a, b = two_nodes(start_server)

    async def scenario() -> None:
        tok = token(a, new_user())
        alice = await login(a.ws_url, tok)
        rt = alice.welcome["reconnect_token"]
        await away(a, alice)
        c, _ = await resumed_on(b, tok, rt, last_event_seq(alice), 1)
        for server in (a, b):
            code, err = await refused(server.ws_url, resume_frame(tok, rt))
            assert (code, err["code"]) == (4004, "reconnect_invalid"), server.node.node_id
        c.close()

        tok2 = token(a, new_user())
        bob = await login(a.ws_url, tok2)
        await bob.send({"type": "logout"})
        await bob.wait_closed()
        code, err = await refused(b.ws_url, resume_frame(tok2, bob.welcome["reconnect_token"]))
        assert (code, err["code"]) == (4004, "reconnect_invalid")

    run(scenario(), timeout=60)


# ------------------------------------------------------------------ the process: SIGTERM, tilehall drain


def _serve(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Any) -> Any:
    from test_durability import ServerProcess, server_env

    server = ServerProcess(server_env(database_url, redis_url, redis_prefix, tmp_path), Path.cwd())
    server.wait_url()
    return server


def _dev_settings(tmp_path: Any) -> Settings:
    from test_durability import dev_settings

    return dev_settings(tmp_path)


def _parked(redis_url: str, redis_prefix: str, session_id: str) -> dict[str, Any] | None:
    from storage.redis.parked_sessions import ParkedSessions

    return ParkedSessions(redis.Redis.from_url(redis_url), redis_prefix, 60).take(session_id)


def test_sigterm_drains_then_exits(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Any) -> None:
    """``tilehall serve`` on SIGTERM: its player gets kicked node_draining + 1012, the session
    is parked in Redis (with its events), and the process exits 0."""
    server = _serve(database_url, redis_url, redis_prefix, tmp_path)
    try:
        async def scenario() -> dict[str, Any] | None:
            settings = _dev_settings(tmp_path)
            alice = await login(server.ws_url, issue_dev_token(settings, new_user()))
            await alice.answers_for([await alice.chat("hello")])
            server.proc.send_signal(signal.SIGTERM)
            code, kicked = await closed_with(alice, 30)
            assert (code, kicked["reason"]) == (1012, "node_draining")
            return _parked(redis_url, redis_prefix, alice.welcome["session_id"])

        state = run(scenario(), timeout=60)
        assert state is not None and state["last_action_seq"] == 1 and state["events"], state
        assert server.proc.wait(30) == 0, server.output()
    finally:
        server.reap()


def test_tilehall_drain_command(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Any) -> None:
    """``tilehall drain --url URL`` drains the node (its player moves: 1012) and the node's
    process exits; a node that is not there makes the command fail (1)."""
    from transport.cli import cmd_drain

    def drain(url: str, timeout: float = 60.0) -> int:  # (main() would reconfigure this process's logging)
        return cmd_drain(Settings(mode="dev"), argparse.Namespace(url=url, admin_token=None, timeout=timeout))

    server = _serve(database_url, redis_url, redis_prefix, tmp_path)
    try:
        async def scenario() -> None:
            alice = await login(server.ws_url, issue_dev_token(_dev_settings(tmp_path), new_user()))
            assert await asyncio.to_thread(drain, server.url) == 0
            code, kicked = await closed_with(alice, 10)
            assert (code, kicked["reason"]) == (1012, "node_draining")

        run(scenario(), timeout=60)
        assert server.proc.wait(30) == 0, server.output()
        assert drain(server.url, 2) == 1
    finally:
        server.reap()
