"""Sessions over real WebSockets: the v1 handshake, JWT auth, the version lock, heartbeats,
reconnect with delta replay or snapshot, takeover, the session lease and every close code.

Each test drives a live server (real PostgreSQL, Redis and Tornado) with ``tests/wsclient.py``
and waits for the expected frame or close with a timeout, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import jwt
import psycopg
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from waiting import async_wait_until
from wsclient import WSClient, answer_to, is_type, login

from config.dev_secret import load_or_create_dev_secret
from config.version import SERVER_VERSION
from storage.redis.leases import Holder, SessionLeases
from transport.auth import issue_dev_token

Frame = dict[str, Any]
FAST_GAME = {"chats_per_second": 200.0, "moves_per_second": 200.0, "view_radius": 100}


# ------------------------------------------------------------------ helpers


def run(coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
    """Run one async scenario in the test thread (the server has its own IOLoop thread)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def new_user() -> str:
    """A user id no other test uses (the database is shared by the whole run)."""
    return f"u-{uuid.uuid4().hex[:12]}"


def token(server: Any, user: str, ttl_s: int | None = None) -> str:
    """A dev JWT for ``user`` on ``server``."""
    return issue_dev_token(server.settings, user, ttl_s=ttl_s)


def rows(server: Any, sql: str, *params: Any) -> list[tuple]:
    """Run a query on the server's database."""
    with psycopg.connect(server.settings.database_url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


async def wait_rows(
    server: Any, sql: str, params: tuple, ok: Callable[[list[tuple]], bool], timeout: float = 5.0
) -> list[tuple]:
    """Poll a query until ``ok(rows)`` (commits land asynchronously), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = await asyncio.to_thread(rows, server, sql, *params)
        if ok(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:g} s; last rows: {got[:20]}")
        await asyncio.sleep(0.05)


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``cond`` (run in a thread) until it holds, failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(cond):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:g} s")
        await asyncio.sleep(0.02)


def metric(server: Any, name: str, labels: dict[str, str] | None = None) -> float:
    """The current value of a Prometheus sample of the server's registry."""
    value = server.node.metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


def hello_frame(tok: str, **fields: Any) -> Frame:
    """A hello frame with the server version (``fields`` override or add)."""
    return {"type": "hello", "protocol_version": SERVER_VERSION, "token": tok, **fields}


def resume_frame(tok: str, reconnect_token: str, last_event_seq: int = 0, **fields: Any) -> Frame:
    """A resume frame with the server version."""
    return {"type": "resume", "protocol_version": SERVER_VERSION, "token": tok,
            "reconnect_token": reconnect_token, "last_event_seq": last_event_seq, **fields}


async def refused(ws_url: str, frame: Frame | str, timeout: float = 5.0) -> tuple[int | None, Frame]:
    """Open a socket, send ``frame``; returns (close code, the error/kicked frame before it)."""
    c = await WSClient.connect(ws_url)
    await c.send(frame)
    return await closed_with(c, timeout)


async def closed_with(c: WSClient, timeout: float = 5.0) -> tuple[int | None, Frame]:
    """Wait for the server's close; returns (close code, the last error/kicked frame)."""
    code, reason = await c.wait_closed(timeout)
    last = [f for f in c.history if f.get("type") in ("error", "kicked")]
    assert last, f"close {code} {reason!r} without an error/kicked frame: {c.history[-5:]}"
    assert reason == (last[-1].get("code") or last[-1].get("reason")), (reason, last[-1])
    return code, last[-1]


async def read_events(c: WSClient, n: int, timeout: float = 5.0) -> list[Frame]:
    """The next ``n`` event frames."""
    return [await c.read_until(is_type("event"), timeout) for _ in range(n)]


async def drain_events(c: WSClient, until: Callable[[Frame], bool], timeout: float = 5.0) -> Frame:
    """Read events until one matches ``until``; returns it."""
    return await c.read_until(lambda f: f.get("type") == "event" and until(f), timeout)


# ------------------------------------------------------------------ handshake and version lock


def test_welcome_then_actions_and_heartbeat(live_server: Any) -> None:
    """hello → welcome (every field), an ack after commit, ping → pong with the same t."""

    async def scenario() -> None:
        c = await login(live_server.ws_url, token(live_server, new_user()))
        w = c.welcome
        assert w["server_version"] == SERVER_VERSION
        assert w["reconnect_token"] and w["heartbeat_interval_ms"] == 5000
        assert w["event_seq"] == 0 and w["last_action_seq"] == 0
        assert w["world"]["map_id"] and w["character"]["character_id"]
        seq = await c.chat("hello there")
        assert (await c.answer(seq))["type"] == "ack"
        await c.ping(1234.5)
        pong = await c.read_until(is_type("pong"))
        assert pong["t"] == 1234.5 and abs(pong["server_time"] / 1000 - time.time()) < 5
        c.close()

    run(scenario())


def test_version_mismatch_closes_4000_and_names_the_server_version(live_server: Any) -> None:
    """hello and resume with another protocol_version: error naming ours, close 4000, counted."""
    before = metric(live_server, "tilehall_version_reject_total")
    tok = token(live_server, new_user())

    async def scenario() -> None:
        code, err = await refused(live_server.ws_url, hello_frame(tok, protocol_version="0.0.1-stale"))
        assert code == 4000 and err["code"] == "version_mismatch"
        assert SERVER_VERSION in err["message"]
        code, err = await refused(
            live_server.ws_url, resume_frame(tok, "x" * 43, protocol_version="0.0.1-stale"))
        assert code == 4000 and err["code"] == "version_mismatch"

    run(scenario())
    assert metric(live_server, "tilehall_version_reject_total") == before + 2


# ------------------------------------------------------------------ tokens


def _hs256(claims: dict[str, Any], secret: bytes, header: dict[str, Any] | None = None) -> str:
    """An HS256 JWT built by hand (PyJWT refuses a PEM key as an HMAC secret, an attacker does not)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def test_dev_tokens_refused_over_the_wire(live_server: Any) -> None:
    """Expired → 4002; not yet valid, wrongly signed, alg none, wrong issuer, no sub,
    garbage → 4001; each with a readable error frame first."""
    s = live_server.settings.auth
    now = int(time.time())
    good = {"sub": new_user(), "iss": s.dev_issuer, "iat": now, "exp": now + 600}
    cases = {
        "expired": (jwt.encode({**good, "iat": now - 600, "exp": now - 120}, s.dev_secret), 4002),
        "not yet valid": (jwt.encode({**good, "nbf": now + 600}, s.dev_secret), 4001),
        "wrongly signed": (jwt.encode(good, "another-secret-of-sufficient-length-0123"), 4001),
        "alg none": (jwt.encode(good, None, algorithm="none"), 4001),
        "wrong issuer": (jwt.encode({**good, "iss": "someone-else"}, s.dev_secret), 4001),
        "missing sub": (jwt.encode({k: v for k, v in good.items() if k != "sub"}, s.dev_secret), 4001),
        "garbage": ("not.a.jwt", 4001),
    }

    async def scenario() -> None:
        for name, (tok, want) in cases.items():
            code, err = await refused(live_server.ws_url, hello_frame(tok))
            assert code == want, (name, code, err)
            assert err["code"] == ("token_expired" if want == 4002 else "bad_token"), (name, err)
            assert err["message"], name

    run(scenario())


def _rsa_pem() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return key, pem


def test_production_mode_rs256_and_key_confusion(start_server: Callable[..., Any]) -> None:
    """Production: an RS256 token of the IdP logs in; HS256 signed with the public key, alg
    none, a wrong audience or issuer are refused with 4001."""
    key, pem = _rsa_pem()
    server = start_server(mode="production", admin_token="x",
                          auth={"public_key_pem": pem, "issuer": "https://idp.test", "audience": "tilehall"})
    now = int(time.time())
    claims = {"sub": new_user(), "iss": "https://idp.test", "aud": "tilehall", "iat": now, "exp": now + 600}

    async def scenario() -> None:
        c = await login(server.ws_url, jwt.encode(claims, key, algorithm="RS256"))
        assert c.welcome["server_version"] == SERVER_VERSION
        c.close()
        bad = {
            "hs256 with the public key": _hs256(claims, pem.encode()),
            "alg none": jwt.encode(claims, None, algorithm="none"),
            "wrong audience": jwt.encode({**claims, "aud": "other"}, key, algorithm="RS256"),
            "wrong issuer": jwt.encode({**claims, "iss": "https://evil.test"}, key, algorithm="RS256"),
            # The install's dev secret (production mode neither reads nor makes it).
            "dev token": _hs256({**claims, "iss": "tilehall-dev"},
                                load_or_create_dev_secret(server.settings.var_dir).encode()),
        }
        for name, tok in bad.items():
            code, err = await refused(server.ws_url, hello_frame(tok))
            assert (code, err["code"]) == (4001, "bad_token"), (name, code, err)

    run(scenario())


def test_live_token_expiry_closes_4002_unless_reauthed(start_server: Callable[..., Any]) -> None:
    """With leeway 0 a session whose short token expires gets error token_expired + 4002; one
    that sent reauth with a fresh token of the same user in time stays open."""
    server = start_server(auth={"leeway_s": 0})

    a = server.settings.auth
    now = int(time.time())
    exp = now + 2  # both first tokens expire at the same second

    def short(user: str) -> str:
        return jwt.encode({"sub": user, "iss": a.dev_issuer, "iat": now, "exp": exp}, a.dev_secret)

    async def scenario() -> None:
        lapsing = await login(server.ws_url, short(new_user()))
        user = new_user()
        kept = await login(server.ws_url, short(user))
        await kept.send({"type": "reauth", "token": token(server, user, ttl_s=600)})
        code, err = await closed_with(lapsing, timeout=6)
        assert (code, err["code"]) == (4002, "token_expired")
        # The liveness check runs every second: by exp + 1.2 s it has seen the old exp pass.
        await kept.expect_none(is_type("error", "kicked"), max(0.0, exp + 1.2 - time.time()))
        await kept.ping(7)
        assert (await kept.read_until(is_type("pong")))["t"] == 7
        rows_ = await wait_rows(server, "SELECT end_reason FROM session_audit WHERE session_id = %s",
                                (lapsing.welcome["session_id"],), lambda r: r and r[0][0])
        assert rows_[0][0] == "token_expired"
        kept.close()

    run(scenario())
    assert metric(server, "tilehall_reauths_total", {"outcome": "accepted"}) == 1


def test_reauth_with_another_users_token_closes_4001(live_server: Any) -> None:
    """reauth must name the same user: another user's valid token gets bad_token + 4001."""

    async def scenario() -> None:
        c = await login(live_server.ws_url, token(live_server, new_user()))
        await c.send({"type": "reauth", "token": token(live_server, new_user())})
        code, err = await closed_with(c)
        assert (code, err["code"]) == (4001, "bad_token")

    run(scenario())
    assert metric(live_server, "tilehall_reauths_total", {"outcome": "refused"}) == 1
    assert metric(live_server, "tilehall_reauths_total", {"outcome": "accepted"}) == 0


# ------------------------------------------------------------------ characters


def test_character_of_another_user_closes_4003_revealing_nothing(live_server: Any) -> None:
    """Another user's character and a character that does not exist get the same answer."""

    async def scenario() -> None:
        alice = await login(live_server.ws_url, token(live_server, new_user()))
        theirs = alice.welcome["character"]["character_id"]
        answers = []
        for cid in (theirs, str(uuid.uuid4())):
            code, err = await refused(live_server.ws_url, hello_frame(token(live_server, new_user()), character_id=cid))
            assert (code, err["code"]) == (4003, "character_not_owned")
            assert cid not in err["message"] and alice.welcome["character"]["display_name"] not in err["message"]
            answers.append(err)
        assert answers[0] == answers[1]
        alice.close()

    run(scenario())


# ------------------------------------------------------------------ timeouts and limits


def test_hello_timeout_and_idle_timeout_close_4008(start_server: Callable[..., Any]) -> None:
    """No hello within hello_timeout_s → idle_timeout + 4008; a session that goes quiet for
    idle_timeout_s → idle_timeout + 4008 and the session ends (audit end_reason)."""
    server = start_server(session={"hello_timeout_s": 0.5, "idle_timeout_s": 1.0})

    async def scenario() -> None:
        silent = await WSClient.connect(server.ws_url)
        quiet = await login(server.ws_url, token(server, new_user()))
        code, err = await closed_with(silent, timeout=4)
        assert (code, err["code"]) == (4008, "idle_timeout")
        code, err = await closed_with(quiet, timeout=4)
        assert (code, err["code"]) == (4008, "idle_timeout")
        await wait_rows(server, "SELECT end_reason FROM session_audit WHERE session_id = %s",
                        (quiet.welcome["session_id"],), lambda r: r and r[0][0] == "idle_timeout")

    run(scenario())


def test_too_many_frames_closes_4029(start_server: Callable[..., Any]) -> None:
    """More frames in a second than max_frames_per_second: too_many_frames + 4029."""
    server = start_server(session={"max_frames_per_second": 5})

    async def scenario() -> None:
        c = await login(server.ws_url, token(server, new_user()))
        for t in range(8):
            await c.ping(t)
        code, err = await closed_with(c)
        assert (code, err["code"]) == (4029, "too_many_frames")

    run(scenario())


def test_frame_too_large_closes_1009_counting_bytes(live_server: Any) -> None:
    """Over 4 KiB: frame_too_large + 1009, also when the characters fit but the UTF-8 bytes do not."""

    async def scenario() -> None:
        for text in ("x" * 5000, "€" * 1400):  # 1400 chars, 4200 bytes
            c = await login(live_server.ws_url, token(live_server, new_user()))
            await c.chat(text)
            code, err = await closed_with(c)
            assert (code, err["code"]) == (1009, "frame_too_large"), text[:3]

    run(scenario())


def test_malformed_frames_answered_then_1008_past_the_budget(live_server: Any) -> None:
    """Within the budget (3) each bad frame gets an answer naming the problem and the session
    stays usable; the next one gets too_many_bad_frames + 1008. Nothing is persisted."""

    async def scenario() -> None:
        c = await login(live_server.ws_url, token(live_server, new_user()))
        cid = c.welcome["character"]["character_id"]
        await c.send("{not json")
        assert (await c.read_until(is_type("error")))["code"] == "bad_frame"
        await c.send({"type": "action", "seq": 1, "action_type": "move", "payload": {"dx": "1", "dy": 0}})
        rej = await c.answer(1)
        assert (rej["type"], rej["code"]) == ("reject", "bad_frame") and "payload.dx" in rej["message"]
        await c.send(hello_frame("x"))  # valid frame, wrong place
        assert (await c.read_until(is_type("error")))["code"] == "unexpected_frame"
        await c.ping(1)
        await c.read_until(is_type("pong"))
        await c.send({"type": "teleport"})
        code, err = await closed_with(c)
        assert (code, err["code"]) == (1008, "too_many_bad_frames")
        assert rows(live_server, "SELECT count(*) FROM action_event WHERE character_id = %s"
                    " AND sequence_number IS NOT NULL", cid) == [(0,)]

    run(scenario())


def test_first_frame_must_be_hello_or_resume(live_server: Any) -> None:
    """Before authentication there is no budget: a ping or a malformed frame closes 1008; a
    hello whose only fault is a missing token is a bad token (4001, DESIGN section 4)."""

    async def scenario() -> None:
        code, err = await refused(live_server.ws_url, {"type": "ping", "t": 1})
        assert (code, err["code"]) == (1008, "hello_required")
        code, err = await refused(live_server.ws_url, {"type": "hello", "protocol_version": SERVER_VERSION})
        assert (code, err["code"]) == (4001, "bad_token") and "token" in err["message"]
        code, err = await refused(live_server.ws_url, {"type": "hello", "token": "t"})
        assert (code, err["code"]) == (1008, "bad_frame") and "protocol_version" in err["message"]

    run(scenario())


# ------------------------------------------------------------------ reconnect and resume


async def _away_events(server: Any, n_chats: int) -> tuple[WSClient, str, int, WSClient]:
    """alice logs in and drops; bob logs in and chats ``n_chats`` times while she is away.
    Returns (bob, alice's token, her last event_seq, her dropped client)."""
    user = new_user()
    tok = token(server, user)
    alice = await login(server.ws_url, tok)
    await drain_events(alice, lambda e: e["payload"].get("kind") == "login")
    last = alice.history[-1]["event_seq"]
    alice.close()
    await wait_until(lambda: _status(server, alice.welcome["session_id"]) == "reconnecting")
    bob = await login(server.ws_url, token(server, new_user()))
    seqs = [await bob.chat(f"line {i}") for i in range(n_chats)]
    await bob.answers_for(seqs)
    return bob, tok, last, alice


def _status(server: Any, session_id: str) -> str | None:
    from actors.base import find_actor

    ref = server.node.directory.sessions.get(session_id)
    actor = find_actor(ref.actor_urn) if ref is not None else None
    return actor.status if actor is not None else None


def test_resume_with_delta_replays_missed_events_in_order(start_server: Callable[..., Any]) -> None:
    """Events that happened while away are replayed: resumed{delta, replayed N}, then exactly
    N events numbered last_event_seq+1.., then live events continue the numbering."""
    server = start_server(game=FAST_GAME)

    async def scenario() -> None:
        bob, tok, last, alice = await _away_events(server, 3)
        c = await WSClient.connect(server.ws_url)
        resumed = await c.resume(tok, alice.welcome["reconnect_token"], last)
        assert resumed["session_id"] == alice.welcome["session_id"]
        assert resumed["sync"] == "delta" and resumed["world"] is None
        replay = await read_events(c, resumed["replayed"])
        assert [e["event_seq"] for e in replay] == list(range(last + 1, resumed["event_seq"] + 1))
        chats = [e["payload"]["text"] for e in replay if e["action_type"] == "chat"]
        assert chats == ["line 0", "line 1", "line 2"]
        assert resumed["reconnect_token"] != alice.welcome["reconnect_token"]
        seq = await bob.chat("live")
        await bob.answer(seq)
        live = await drain_events(c, lambda e: e["payload"].get("text") == "live")
        assert live["event_seq"] == resumed["event_seq"] + 1
        c.close()
        bob.close()

    run(scenario())


def test_resume_forced_to_snapshot_when_the_buffer_overflowed(start_server: Callable[..., Any]) -> None:
    """More events while away than session.event_buffer_size: sync snapshot with a world, and
    tilehall_state_refresh_forced_total rises."""
    server = start_server(game=FAST_GAME, session={"event_buffer_size": 2})
    before = metric(server, "tilehall_state_refresh_forced_total")

    async def scenario() -> None:
        bob, tok, last, alice = await _away_events(server, 6)
        c = await WSClient.connect(server.ws_url)
        resumed = await c.resume(tok, alice.welcome["reconnect_token"], last)
        assert resumed["sync"] == "snapshot" and resumed["replayed"] == 0
        names = {ch["display_name"] for ch in resumed["world"]["characters"]}
        assert bob.welcome["character"]["display_name"] in names
        assert resumed["event_seq"] >= last + 6
        await c.expect_none(is_type("event"), 0.3)  # nothing replayed after a snapshot
        c.close()
        bob.close()

    run(scenario())
    assert metric(server, "tilehall_state_refresh_forced_total") == before + 1


def test_reconnect_tokens_invalid_used_foreign_or_expired_close_4004(start_server: Callable[..., Any]) -> None:
    """Unknown, already used, another user's, and expired reconnect tokens: reconnect_invalid + 4004."""
    server = start_server(session={"reconnect_token_ttl_s": 1})

    async def scenario() -> None:
        user = new_user()
        tok = token(server, user)
        c = await login(server.ws_url, tok)
        rt = c.welcome["reconnect_token"]
        c.close()
        code, err = await refused(server.ws_url, resume_frame(tok, "A" * 43))
        assert (code, err["code"]) == (4004, "reconnect_invalid"), "unknown"
        code, err = await refused(server.ws_url, resume_frame(token(server, new_user()), rt))
        assert (code, err["code"]) == (4004, "reconnect_invalid"), "another user's"
        # Another user's attempt burnt nothing but the token itself; a fresh login works.
        other = await login(server.ws_url, tok)
        rt2 = other.welcome["reconnect_token"]
        other.close()
        d = await WSClient.connect(server.ws_url)
        resumed = await d.resume(tok, rt2)
        d.close()
        code, err = await refused(server.ws_url, resume_frame(tok, rt2))
        assert (code, err["code"]) == (4004, "reconnect_invalid"), "used"
        # The newest token expires after reconnect_token_ttl_s (1 s): wait for its expiry.
        await asyncio.sleep(max(0.0, _epoch(resumed["reconnect_expires_at"]) - time.time()) + 0.2)
        code, err = await refused(server.ws_url, resume_frame(tok, resumed["reconnect_token"]))
        assert (code, err["code"]) == (4004, "reconnect_invalid"), "expired"

    run(scenario())


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_too_many_reconnects_close_4029(start_server: Callable[..., Any]) -> None:
    """More than reconnect_max_attempts resumes within the window: too_many_reconnects + 4029."""
    server = start_server(session={"reconnect_max_attempts": 2})

    async def scenario() -> None:
        tok = token(server, new_user())
        c = await login(server.ws_url, tok)
        rt = c.welcome["reconnect_token"]
        for _ in range(2):
            c.close()
            c = await WSClient.connect(server.ws_url)
            rt = (await c.resume(tok, rt))["reconnect_token"]
        c.close()
        code, err = await refused(server.ws_url, resume_frame(tok, rt))
        assert (code, err["code"]) == (4029, "too_many_reconnects")

    run(scenario())


def test_drop_mid_flight_then_resend_applies_each_action_once(start_server: Callable[..., Any]) -> None:
    """20 chats in flight, every socket dropped, resume, resend all 20 with their seqs: every
    seq gets an answer, exactly one action_event row per seq, and resent acks carry the
    original action_id."""
    server = start_server(game=FAST_GAME)

    async def scenario() -> None:
        tok = token(server, new_user())
        c = await login(server.ws_url, tok)
        cid = c.welcome["character"]["character_id"]
        frames = [{"type": "action", "seq": s, "action_type": "chat", "payload": {"text": f"m{s}"}}
                  for s in range(1, 21)]
        for f in frames:
            await c.send(f)
        assert await asyncio.to_thread(server.drop_all_sockets) >= 1
        await c.wait_closed()
        d = await WSClient.connect(server.ws_url)
        await d.resume(tok, c.welcome["reconnect_token"])
        for f in frames:
            await d.send(f)
        answers = await d.answers_for(range(1, 21))
        assert all(a["type"] == "ack" for a in answers.values()), answers
        got = await wait_rows(
            server, "SELECT sequence_number, count(*), min(action_id::text) FROM action_event"
            " WHERE character_id = %s AND sequence_number IS NOT NULL GROUP BY 1 ORDER BY 1", (cid,),
            lambda r: len(r) == 20)
        assert [(s, n) for s, n, _ in got] == [(s, 1) for s in range(1, 21)]
        ids = {s: a for s, _, a in got}
        for s, frames_ in {**c.answers, **d.answers}.items():
            assert {f["action_id"] for f in frames_} == {ids[s]}, s
        d.close()

    run(scenario())


# ------------------------------------------------------------------ takeover and endings


def test_takeover_kicks_the_old_socket_4009_and_keeps_its_actions(start_server: Callable[..., Any]) -> None:
    """A second hello of the same user: the old socket gets kicked session_replaced + 4009;
    every action it sent before is persisted exactly once; the new session continues the seqs."""
    server = start_server(game=FAST_GAME)

    async def scenario() -> None:
        user = new_user()
        old = await login(server.ws_url, token(server, user))
        cid = old.welcome["character"]["character_id"]
        seqs = [await old.chat(f"before {i}") for i in range(10)]
        await old.answer(seqs[0])
        new = await login(server.ws_url, token(server, user))
        code, kick = await closed_with(old)
        assert (code, kick["type"], kick["reason"]) == (4009, "kicked", "session_replaced")
        got = await wait_rows(
            server, "SELECT sequence_number, count(*) FROM action_event WHERE character_id = %s"
            " AND sequence_number IS NOT NULL GROUP BY 1 ORDER BY 1", (cid,), lambda r: len(r) == 10)
        assert got == [(s, 1) for s in seqs]
        assert new.welcome["last_action_seq"] == 10  # the old session's actions came first
        await wait_rows(server, "SELECT ended_at, end_reason FROM session_audit WHERE session_id = %s",
                        (old.welcome["session_id"],), lambda r: r and r[0][1] == "session_replaced")
        seq = await new.chat("after")
        assert (await new.answer(seq))["type"] == "ack"
        new.close()

    run(scenario())


def test_resume_while_the_old_socket_is_open_takes_it_over(live_server: Any) -> None:
    """A resume of a session whose socket is still open: that socket gets session_replaced + 4009."""

    async def scenario() -> None:
        tok = token(live_server, new_user())
        old = await login(live_server.ws_url, tok)
        c = await WSClient.connect(live_server.ws_url)
        resumed = await c.resume(tok, old.welcome["reconnect_token"])
        assert resumed["session_id"] == old.welcome["session_id"]
        code, kick = await closed_with(old)
        assert (code, kick["reason"]) == (4009, "session_replaced")
        await c.ping(3)
        await c.read_until(is_type("pong"))
        c.close()

    run(scenario())


def test_logout_closes_1000_and_audits_the_session(live_server: Any) -> None:
    """session_audit: a row at start (no end), completed at logout; close 1000 after kicked logout."""

    async def scenario() -> None:
        c = await login(live_server.ws_url, token(live_server, new_user()))
        sid = c.welcome["session_id"]
        got = await wait_rows(live_server, "SELECT started_at, ended_at, protocol_version, node_id"
                              " FROM session_audit WHERE session_id = %s", (sid,), bool)
        assert got[0][1] is None and got[0][2] == SERVER_VERSION and got[0][3] == live_server.node.node_id
        seq = await c.chat("bye")
        await c.answer(seq)
        await c.send({"type": "logout"})
        code, kick = await closed_with(c)
        assert (code, kick["reason"]) == (1000, "logout")
        got = await wait_rows(live_server, "SELECT ended_at, end_reason, last_action_seq FROM session_audit"
                              " WHERE session_id = %s", (sid,), lambda r: r[0][0] is not None)
        assert got[0][1:] == ("logout", 1)

    run(scenario())


def test_reconnect_window_expiry_ends_the_session(start_server: Callable[..., Any]) -> None:
    """Nobody resumes within reconnect_window_s: the session ends, the character logs out (a
    system logout event), the audit row is closed, and the reconnect token is dead (4004)."""
    server = start_server(session={"reconnect_window_s": 0.5})

    async def scenario() -> None:
        tok = token(server, new_user())
        c = await login(server.ws_url, tok)
        sid, cid = c.welcome["session_id"], c.welcome["character"]["character_id"]
        c.close()
        got = await wait_rows(server, "SELECT ended_at, end_reason FROM session_audit WHERE session_id = %s",
                              (sid,), lambda r: r and r[0][0] is not None)
        assert got[0][1] == "reconnect_window_expired"
        await wait_rows(server, "SELECT payload_json FROM action_event WHERE character_id = %s"
                        " AND action_type = 'system' AND payload_json->>'kind' = 'logout'", (cid,),
                        lambda r: r and r[0][0]["reason"] == "reconnect_window_expired")
        code, err = await refused(server.ws_url, resume_frame(tok, c.welcome["reconnect_token"]))
        assert (code, err["code"]) == (4004, "reconnect_invalid")

    run(scenario())


# ------------------------------------------------------------------ session lease (Redis)


def _leases(server: Any) -> SessionLeases:
    client = redis.Redis.from_url(server.settings.redis_url)
    return SessionLeases(client, server.settings.redis.key_prefix)


def test_session_lease_taken_moved_on_takeover_and_released(live_server: Any) -> None:
    """The lease names node and session while the session lives, moves to a newer login and
    is gone once the last session ends."""
    leases = _leases(live_server)
    node_id = live_server.node.node_id
    user = new_user()

    async def scenario() -> None:
        first = await login(live_server.ws_url, token(live_server, user))
        assert leases.holder(user) == Holder(node_id, first.welcome["session_id"])
        second = await login(live_server.ws_url, token(live_server, user))
        await closed_with(first)
        assert leases.holder(user) == Holder(node_id, second.welcome["session_id"])
        assert 0 < leases.client.pttl(leases.key(user)) <= 30_000
        await second.send({"type": "logout"})
        await second.wait_closed()
        deadline = time.monotonic() + 5
        while leases.holder(user) is not None:
            assert time.monotonic() < deadline, "lease not released"
            await asyncio.sleep(0.05)

    run(scenario())
    leases.client.close()


def test_session_lease_takeover_across_nodes(start_server: Callable[..., Any]) -> None:
    """Two nodes on one Redis: a login on node B takes the lease and tells node A, which kicks
    its session with session_replaced + 4009 at once (long before a lease refresh)."""
    a = start_server()
    b = start_server()
    user = new_user()

    async def scenario() -> None:
        on_a = await login(a.ws_url, token(a, user))
        on_b = await login(b.ws_url, token(b, user))
        assert _leases(b).holder(user) == Holder(b.node.node_id, on_b.welcome["session_id"])
        code, kick = await closed_with(on_a)
        assert (code, kick["reason"]) == (4009, "session_replaced")
        assert await asyncio.to_thread(b.call, b.node.directory.refresh_leases()) == 0
        on_b.close()

    run(scenario())


def test_lease_refresh_kicks_a_session_whose_takeover_message_was_lost(live_server: Any) -> None:
    """The lease taken without a word (as if the takeover message never arrived): nothing tells
    the node until its lease refresh, which finds the lease lost and kicks the session."""
    user = new_user()

    leases = _leases(live_server)

    async def scenario() -> None:
        c = await login(live_server.ws_url, token(live_server, user))
        leases.acquire(user, Holder("a-node-whose-message-was-lost", "s"))
        await c.expect_none(is_type("kicked"), 0.2)
        assert await asyncio.to_thread(live_server.call, live_server.node.directory.refresh_leases()) == 1
        code, kick = await closed_with(c)
        assert (code, kick["reason"]) == (4009, "session_replaced")

    run(scenario())
    leases.client.close()


def test_login_works_with_redis_down(start_server: Callable[..., Any]) -> None:
    """Redis unreachable: hello still gets a welcome (empty reconnect_token: resume is not
    possible), actions are acked; a resume is refused with unavailable + 1011."""
    server = start_server(redis_url="redis://127.0.0.1:9/0")

    async def scenario() -> None:
        tok = token(server, new_user())
        c = await login(server.ws_url, tok)
        assert c.welcome["reconnect_token"] == ""
        seq = await c.move(0, 1)
        assert (await c.answer(seq))["type"] in ("ack", "reject")
        code, err = await refused(server.ws_url, resume_frame(tok, "B" * 43))
        assert (code, err["code"]) == (1011, "unavailable")
        c.close()

    run(scenario())


def test_answers_to_pipelined_actions_match_by_seq(start_server: Callable[..., Any]) -> None:
    """Gap → resync_required; duplicate → its original answer again."""
    server = start_server(game=FAST_GAME)

    async def scenario() -> None:
        c = await login(server.ws_url, token(server, new_user()))
        await c.chat("one", seq=1)
        first = await c.answer(1)
        await c.chat("three", seq=3)
        assert (await c.read_until(is_type("resync_required")))["expected_seq"] == 2
        await c.chat("one again", seq=1)
        again = await c.read_until(answer_to(1))
        assert again == first
        c.close()

    run(scenario())


@pytest.mark.parametrize("frame", [{"type": "resume"}, {"type": "logout", "extra": 1}])
def test_malformed_first_frames_close_1008(live_server: Any, frame: Frame) -> None:
    """A malformed first frame: bad_frame + 1008."""
    code, err = run(refused(live_server.ws_url, frame))
    assert (code, err["code"]) == (1008, "bad_frame")


def test_session_survives_too_many_bad_frames_and_resumes(live_server: Any) -> None:
    """Past the malformed budget only the socket closes (1008): the session can be resumed."""

    async def scenario() -> None:
        tok = token(live_server, new_user())
        c = await login(live_server.ws_url, tok)
        for _ in range(4):
            await c.send("[]")
        code, err = await closed_with(c)
        assert (code, err["code"]) == (1008, "too_many_bad_frames")
        d = await WSClient.connect(live_server.ws_url)
        resumed = await d.resume(tok, c.welcome["reconnect_token"])
        assert resumed["session_id"] == c.welcome["session_id"]
        d.close()

    run(scenario())


def test_action_sent_right_after_hello_is_judged_against_the_real_last_seq(
    start_server: Callable[..., Any],
) -> None:
    """A returning player pipelines seq 1 right behind hello: it is a duplicate of an old action
    (answered with the original ack, or refused as unexpected before the session exists), never
    applied a second time."""
    server = start_server(game=FAST_GAME)

    async def scenario() -> None:
        user = new_user()
        c = await login(server.ws_url, token(server, user))
        cid = c.welcome["character"]["character_id"]
        seqs = [await c.chat(f"old {i}") for i in range(3)]
        first = (await c.answers_for(seqs))[1]
        await c.send({"type": "logout"})
        await c.wait_closed()
        for _ in range(3):
            d = await WSClient.connect(server.ws_url)
            await d.send(hello_frame(token(server, user)))
            await d.chat("pipelined", seq=1)
            answer = await d.read_until(lambda f: f["type"] in ("ack", "reject")
                                        or (f["type"] == "error" and f["code"] == "unexpected_frame"))
            if answer["type"] == "ack":
                assert answer["action_id"] == first["action_id"]
            else:
                assert answer["type"] == "error", answer
            await d.read_until(is_type("welcome"))  # a logout before it would be refused too
            await d.send({"type": "logout"})
            await d.wait_closed()
        assert rows(server, "SELECT count(*) FROM action_event WHERE character_id = %s"
                    " AND sequence_number = 1", cid) == [(1,)]

    run(scenario())


def test_lease_primitives(redis_url: str, redis_prefix: str) -> None:
    """SET NX on a free lease; the newest holder wins and learns whom it replaced; only the
    holder refreshes or releases; a vanished lease is taken again by its holder's refresh."""
    client = redis.Redis.from_url(redis_url)
    leases = SessionLeases(client, redis_prefix, ttl_s=5)
    user, a, b = new_user(), Holder("node-a", "s1"), Holder("node-b", "s2")
    try:
        assert leases.acquire(user, a) is None
        assert leases.acquire(user, b) == a
        assert leases.holder(user) == b
        assert not leases.refresh(user, a) and leases.holder(user) == b
        assert leases.refresh(user, b) and 4000 < client.pttl(leases.key(user)) <= 5000
        assert leases.refresh_many([(user, a), (user, b)]) == [False, True]
        assert not leases.release(user, a) and leases.holder(user) == b
        client.delete(leases.key(user))
        assert leases.refresh(user, b) and leases.holder(user) == b
        assert leases.release(user, b) and leases.holder(user) is None
    finally:
        client.delete(leases.key(user))
        client.close()


def test_a_claimed_character_waits_for_its_new_session_instead_of_stopping(live_server: Any) -> None:
    """The race a fast re-login hit in CI: a character with no session stops once its last
    commit landed, and the node could hand it to a new session a moment before. A claimed
    character stays in play, and the next login attaches to that same actor."""
    from actors.base import find_actor
    from actors.messages import Claim

    user = new_user()

    async def scenario() -> None:
        c = await login(live_server.ws_url, token(live_server, user))
        cid = c.welcome["character"]["character_id"]
        ref = live_server.call(lambda: live_server.node.directory.characters[cid])
        assert ref.ask(Claim(), timeout=5) is True
        actor = find_actor(ref.actor_urn)
        await c.send({"type": "logout"})
        await c.wait_closed()
        await wait_rows(live_server, "SELECT count(*) FROM action_event WHERE character_id = %s"
                        " AND payload_json->>'kind' = 'logout'", (cid,), lambda got: got == [(1,)])
        # Unclaimed, it stops in the very turn that takes the logout's commit off ``inflight``.
        await async_wait_until(lambda: not actor.inflight, 5.0, "the logout's commit handled")
        assert ref.is_alive() and actor.debug_status != "stopping"
        again = await login(live_server.ws_url, token(live_server, user))
        assert live_server.call(lambda: live_server.node.directory.characters[cid]) is ref
        await again.answer(await again.chat("back"))
        again.close()

    run(scenario())
