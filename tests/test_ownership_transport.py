"""Issue 10 in the transport: one session per user, ownership taken at the right moment, metrics
counted when the promise is kept, DESIGN section 4's close codes, and a node that turns unready
(and closes its sessions 1011) when a shared actor dies.

Real PostgreSQL, Redis and WebSockets; every wait is for an event, with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from nodes import readyz
from test_sessions import (
    closed_with,
    hello_frame,
    metric,
    new_user,
    refused,
    resume_frame,
    run,
    token,
)
from tornado.websocket import WebSocketClosedError
from waiting import async_wait_until
from wsclient import FrameTimeout, WSClient, is_type, login

from actors.base import live_actors
from transport.node import _StorageObserver

# ------------------------------------------------------------------ helpers



async def wait_unready(server: Any, naming: str, timeout: float = 10.0) -> list[str]:
    """Poll /readyz until it says 503 with a problem containing ``naming``; its problems."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = await asyncio.to_thread(readyz, server)
        if status == 503 and any(naming in p for p in body["problems"]):
            return body["problems"]
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz never named {naming!r}: {status} {body}")
        await asyncio.sleep(0.05)



# ------------------------------------------------------------------ one session per user


@pytest.mark.parametrize("attempt", range(4))
def test_simultaneous_hellos_of_one_user_leave_one_live_session(live_server: Any, attempt: int) -> None:
    """A user in play sends two hellos at the same moment (two tabs): the older session and
    one of the two new ones are kicked session_replaced (4009); exactly one session stays live,
    and the character has one actor. (Before: both new sessions read the same "old" session
    and neither replaced the other, so two live sessions shared one character.)"""
    user = new_user()

    async def scenario() -> None:
        tok = token(live_server, user)
        first = await login(live_server.ws_url, tok)
        cid = first.welcome["character"]["character_id"]
        a, b = await WSClient.connect(live_server.ws_url), await WSClient.connect(live_server.ws_url)
        await asyncio.gather(a.send(hello_frame(tok)), b.send(hello_frame(tok)))
        code, kick = await closed_with(first)
        assert (code, kick["reason"]) == (4009, "session_replaced")
        welcomes = await asyncio.gather(*(c.read_until(is_type("welcome"), 10) for c in (a, b)))
        assert len({w["session_id"] for w in welcomes}) == 2
        for c, w in zip((a, b), welcomes, strict=True):
            c.welcome, c.next_seq = w, int(w["last_action_seq"]) + 1
        # Exactly one of the two is replaced by the other: the one the directory does not name.
        directory = live_server.node.directory
        current = live_server.call(lambda: directory.session_of_user.get(user))
        assert current in {w["session_id"] for w in welcomes}
        loser, winner = (a, b) if welcomes[1]["session_id"] == current else (b, a)
        code, kick = await closed_with(loser)
        assert (code, kick["reason"]) == (4009, "session_replaced")
        await winner.expect_none(is_type("kicked", "error"), 0.5)
        assert not winner.closed
        seq = await winner.chat("still here")
        assert (await winner.answer(seq))["type"] == "ack"
        assert live_server.call(lambda: directory.session_of_user.get(user)) == current
        await async_wait_until(
            lambda: [x["entity_id"] for x in live_actors() if x["class"] == "SessionActor"
                     and x["entity_id"] in {first.welcome["session_id"], loser.welcome["session_id"]}] == [],
            timeout=10, what="the replaced sessions stopped",
        )
        assert len([x for x in live_actors() if x["class"] == "CharacterActor" and x["entity_id"] == cid]) == 1
        assert live_server.call(lambda: len(directory._logins)) == 0, "login locks are dropped when unused"
        winner.close()

    run(scenario())


# ------------------------------------------------------------------ ownership at actor creation


def test_relogin_on_another_node_starts_from_the_row_after_the_old_owners_commit(
    start_server: Callable[..., Any],
) -> None:
    """The player's action on node A is still committing (its row is locked) when they log in
    on node B. B's new character actor must start from the row after A's commit landed or was
    fenced off, never from a row read before: B's next action is acked, never ``conflict``.

    Holds only once ownership is one UPDATE that waits for the row lock (``take_ownership`` of
    the storage branch); this branch's stand-in re-reads the row without waiting.
    """
    a = start_server()
    b = start_server()
    user = new_user()

    async def scenario() -> None:
        tok = token(a, user)
        on_a = await login(a.ws_url, tok)
        cid = on_a.welcome["character"]["character_id"]
        with psycopg.connect(a.settings.database_url) as locker:
            locker.execute("SELECT 1 FROM character_profile WHERE character_id = %s FOR UPDATE", (cid,))
            await on_a.chat("committing while the player logs in elsewhere")
            on_b = await WSClient.connect(b.ws_url)
            await on_b.send(hello_frame(tok))
            welcome = None
            try:  # a new owner that waits for the row lock sends no welcome while it is held
                welcome = await on_b.read_until(is_type("welcome"), 2)
            except FrameTimeout:
                pass
            locker.rollback()
        welcome = welcome or await on_b.read_until(is_type("welcome"), 15)
        on_b.welcome, on_b.next_seq = welcome, int(welcome["last_action_seq"]) + 1
        await async_wait_until(lambda: a.call(lambda: cid not in a.node.directory.characters),
                               timeout=15, what="node A's character actor gone")
        seq = await on_b.chat("after the takeover")
        answer = await on_b.answer(seq, 10)
        assert answer["type"] == "ack", answer
        on_b.close()

    run(scenario(), timeout=60)


# ------------------------------------------------------------------ metrics at the right moment


def test_a_resume_the_session_refuses_counts_no_reconnect_success(start_server: Callable[..., Any]) -> None:
    """The session refuses a resume (too many reconnects: 4029): an attempt, but no success.
    (Before: the socket counted a success as soon as it handed the resume to the session.)"""
    server = start_server(session={"reconnect_max_attempts": 1})

    async def scenario() -> float:
        tok = token(server, new_user())
        c = await login(server.ws_url, tok)
        c.close()
        d = await WSClient.connect(server.ws_url)
        rt = (await d.resume(tok, c.welcome["reconnect_token"]))["reconnect_token"]
        d.close()
        # The session counts its success right after it sent ``resumed``: wait for that count.
        await async_wait_until(lambda: metric(server, "tilehall_reconnect_success_total") == 1.0,
                               what="the first resume counted")
        code, err = await refused(server.ws_url, resume_frame(tok, rt))
        assert (code, err["code"]) == (4029, "too_many_reconnects")
        return metric(server, "tilehall_reconnect_success_total")

    after_refusal = run(scenario())
    assert metric(server, "tilehall_reconnect_attempts_total") == 2.0
    assert after_refusal == metric(server, "tilehall_reconnect_success_total") == 1.0


def test_a_resume_of_an_ended_session_counts_no_reconnect_success(live_server: Any) -> None:
    """A reconnect token of a session that ended (logout) is refused 4004 and counts no success."""

    async def scenario() -> None:
        tok = token(live_server, new_user())
        c = await login(live_server.ws_url, tok)
        await c.send({"type": "logout"})
        await c.wait_closed()
        code, err = await refused(live_server.ws_url, resume_frame(tok, c.welcome["reconnect_token"]))
        assert (code, err["code"]) == (4004, "reconnect_invalid")

    before = metric(live_server, "tilehall_reconnect_success_total")
    run(scenario())
    assert metric(live_server, "tilehall_reconnect_success_total") == before


def test_hooks_count_welcome_and_resumed(live_server: Any) -> None:
    """The transport's SessionHooks count a login when the session reports its welcome and a
    resume when it reports ``resumed`` (session.py calls them; see the actors branch)."""
    from transport.session_hooks import SessionHooks

    hooks = SessionHooks(live_server.node.directory, live_server.node.metrics)
    connects, resumes = (metric(live_server, n) for n in ("tilehall_connect_success_total",
                                                         "tilehall_reconnect_success_total"))
    hooks.welcomed()
    hooks.resumed()
    hooks.resumed()
    assert metric(live_server, "tilehall_connect_success_total") == connects + 1
    assert metric(live_server, "tilehall_reconnect_success_total") == resumes + 2


# ------------------------------------------------------------------ close codes (DESIGN section 4)


@pytest.mark.parametrize("kind", ["hello", "resume"])
@pytest.mark.parametrize("tok", [None, ""])
def test_missing_or_empty_token_closes_4001(live_server: Any, kind: str, tok: str | None) -> None:
    """hello/resume without a token, or with an empty one: error bad_token + 4001 (was 1008)."""
    frame = hello_frame("x") if kind == "hello" else resume_frame("x", "r" * 32)
    if tok is None:
        del frame["token"]
    else:
        frame["token"] = tok
    code, err = run(refused(live_server.ws_url, frame))
    assert (code, err["code"]) == (4001, "bad_token")


@pytest.mark.parametrize("size", [5 * 1024, 5 * 1024 * 1024])
def test_frame_too_large_closes_1009_with_an_error_frame(live_server: Any, size: int) -> None:
    """5 KB and 5 MB frames: error frame_too_large, then close 1009. (Before, 5 MB went over
    Tornado's read cap, which closed the socket with unread data: no frame, no close code.)"""

    async def scenario() -> None:
        c = await login(live_server.ws_url, token(live_server, new_user()))
        # The server may answer (and close) before the client has written all of a 5 MB
        # frame; the client then stops writing, but must still read the answer and the close.
        with contextlib.suppress(WebSocketClosedError):
            await c.send(json.dumps({"type": "action", "seq": 1, "action_type": "chat",
                                     "payload": {"text": "x" * size}}))
        code, err = await closed_with(c, timeout=15)
        assert (code, err["code"]) == (1009, "frame_too_large")

    run(scenario())
    status, _ = readyz(live_server)
    assert status == 200


# ------------------------------------------------------------------ supervision and readiness


def _kill_storage(server: Any) -> None:
    server.node.storage.stop()


def _kill_zone(server: Any) -> None:
    server.node.zone.stop()


def _kill_relay(server: Any) -> None:
    server.node.cluster.relay.close()


@pytest.mark.parametrize(("kill", "part"), [
    (_kill_storage, "storage actor"), (_kill_zone, "zone actor"), (_kill_relay, "zone relay"),
])
def test_a_dead_shared_part_makes_the_node_unready_and_closes_sessions_1011(
    start_server: Callable[..., Any], kill: Callable[[Any], None], part: str,
) -> None:
    """Kill the StorageActor, the ZoneActor or the relay's threads: /readyz says 503 naming it
    (for good), every session gets error internal + 1011, and a new login is refused 1011."""
    server = start_server()

    async def scenario() -> None:
        players = [await login(server.ws_url, token(server, new_user())) for _ in range(2)]
        assert (await asyncio.to_thread(readyz, server))[0] == 200
        await asyncio.to_thread(kill, server)
        problems = await wait_unready(server, part)
        assert any("died" in p or "not alive" in p for p in problems), problems
        for p in players:
            code, err = await closed_with(p, timeout=10)
            assert (code, err["type"], err["code"]) == (1011, "error", "internal"), err
            assert err["message"]
        code, err = await refused(server.ws_url, hello_frame(token(server, new_user())))
        assert (code, err["code"]) == (1011, "internal")
        assert (await asyncio.to_thread(readyz, server))[0] == 503

    run(scenario(), timeout=60)


def test_readyz_is_503_while_the_storage_actor_cannot_commit(live_server: Any) -> None:
    """The StorageActor publishes ``failing_since`` through its observer: /readyz is 503 naming
    it while set, 200 again once it commits."""
    observer = _StorageObserver(live_server.node)
    assert readyz(live_server)[0] == 200
    observer.on_commit_health(time.time() - 3)
    status, body = readyz(live_server)
    assert status == 503 and any("cannot commit" in p for p in body["problems"]), body
    observer.on_commit_health(None)
    assert readyz(live_server)[0] == 200
