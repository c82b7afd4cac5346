"""Failure is visible (DESIGN section 3 rule 8): actor crashes, database outages, shutdown.

Over real WebSockets against live servers; the outage tests run a server on a database of
their own so that cutting it off disturbs no other test.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pykka
from test_action_path import join, pair_slots, place, rows_by_seq, run, storage_counters, ts, uniq
from tornado.httpclient import AsyncHTTPClient
from tornado.websocket import WebSocketClosedError
from waiting import async_wait_until
from wsclient import WSClient, is_type, login

from actors.base import live_actors
from actors.messages import FailNow
from transport.auth import issue_dev_token


def _dbname(url: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(url)["dbname"]


def _admin(url: str) -> str:
    return psycopg.conninfo.make_conninfo(url, dbname="postgres")


def _terminate_server_connections(url: str) -> int:
    """Kill every backend on the database of ``url`` (from another database); returns how many."""
    with psycopg.connect(_admin(url), autocommit=True) as conn:
        return conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (_dbname(url),),
        ).fetchone()[0]


def _allow_connections(url: str, allow: bool) -> None:
    """ALTER DATABASE ... ALLOW_CONNECTIONS, from a connection to another database."""
    with psycopg.connect(_admin(url), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{_dbname(url)}" ALLOW_CONNECTIONS {"true" if allow else "false"}')


async def _readyz(server: Any) -> int:
    response = await AsyncHTTPClient().fetch(server.url + "/readyz", raise_error=False, request_timeout=10)
    return response.code


def _new_threads(before: set[int | None]) -> list[str]:
    """Threads started since ``before``, except the process-wide timer scheduler (started lazily
    by the first delayed tell, then kept for the process)."""
    return [t.name for t in threading.enumerate() if t.ident not in before and t.name != "tilehall-timers"]


def _actors_of(*entity_ids: str) -> list[dict]:
    return [a for a in live_actors() if a["entity_id"] in entity_ids]


# --------------------------------------------------------------------------- actor crash


def test_character_crash_closes_the_session_and_leaves_nothing_behind(live_server: Any, database_url: str) -> None:
    """FailNow in the CharacterActor: error frame + close 1011, no actor or thread left, and the
    player can log in again and play on from the durable state."""
    user = uniq("crash")
    cid = place(database_url, user, 15, 13)
    token = issue_dev_token(live_server.settings, user)

    async def scenario() -> None:
        client = await login(live_server.ws_url, token, cid)
        session_id = client.welcome["session_id"]
        ack = await client.answer(await client.move(1, 0))
        assert ack["type"] == "ack"
        assert _actors_of(cid, session_id), "the session and character actors should be running"
        threads_before = {t.ident for t in threading.enumerate()}

        ref = live_server.node.directory.characters[cid]
        ref.tell(FailNow())
        err = await client.read_until(is_type("error"), timeout=5)
        assert err["code"] == "internal"
        code, _ = await client.wait_closed(timeout=5)
        assert code == 1011

        await async_wait_until(lambda: not _actors_of(cid, session_id), timeout=15, what="crashed actors gone")
        assert pykka.ActorRegistry.get_by_urn(ref.actor_urn) is None
        await async_wait_until(
            lambda: live_server.call(lambda: cid not in live_server.node.directory.characters
                                     and session_id not in live_server.node.directory.sessions),
            what="the node forgot the crashed actors",
        )
        await async_wait_until(lambda: not _new_threads(threads_before), what="no thread left behind")
        assert threading.active_count() <= len(threads_before) + 1

        def audit_closed() -> Any:
            with psycopg.connect(database_url, autocommit=True) as conn:
                return conn.execute(
                    "SELECT end_reason FROM session_audit WHERE session_id = %s AND ended_at IS NOT NULL",
                    (session_id,),
                ).fetchone()

        assert (await async_wait_until(audit_closed, what="session audit closed"))[0] == "internal"

        # The crash lost nothing committed: a new login plays on from the database.
        again = await login(live_server.ws_url, token, cid)
        assert again.welcome["last_action_seq"] == ack["seq"]
        assert (again.welcome["character"]["x"], again.welcome["character"]["y"]) == (16, 13)
        nxt = await again.answer(await again.move(-1, 0))
        assert nxt["type"] == "ack" and nxt["seq"] == ack["seq"] + 1
        again.close()

    run(scenario())


# --------------------------------------------------------------------------- database outage


def test_killed_connections_never_leave_an_action_unanswered(start_server: Any, make_database: Any) -> None:
    """pg_terminate_backend on the server's connections mid-play: each action is answered (ack,
    or reject ``unavailable``) within the commit timeout, and play resumes."""
    url = make_database()
    server = start_server(database_url=url, storage={"commit_timeout_s": 1.0})
    bound = server.settings.storage.commit_timeout_s * 2 + 1.0

    async def scenario() -> None:
        client, cid = await join(server, url, "kill", 20, 13)
        assert (await client.answer(await client.move(1, 0)))["type"] == "ack"
        step = -1
        for _round in range(3):
            seqs = [await client.move(step, 0), await client.chat("still there?")]
            killed = _terminate_server_connections(url)
            assert killed >= 1, "the server should hold connections to its database"
            seqs += [await client.move(-step, 0)]
            started = time.monotonic()
            answers = await client.answers_for(seqs, timeout=bound)
            assert time.monotonic() - started < bound
            for answer in answers.values():
                assert answer["type"] == "ack" or answer["code"] in ("unavailable", "conflict", "too_fast"), answer
            step = -step
        # Play resumes: a later action is acked (the pool reconnects on its own).
        deadline = time.monotonic() + 15
        while True:
            answer = await client.answer(await client.move(step, 0), timeout=bound)
            if answer["type"] == "ack":
                break
            assert time.monotonic() < deadline, f"play did not resume: {answer}"
            await asyncio.sleep(0.2)
        rows = rows_by_seq(url, cid)
        acked = {s: a[0] for s, a in client.answers.items() if a[0]["type"] == "ack"}
        assert {s: rows[s][0] for s in acked} == {s: a["action_id"] for s, a in acked.items()}
        rejected = [s for s, a in client.answers.items() if a[0]["type"] == "reject"]
        assert not set(rejected) & set(rows), "a rejected action was persisted"
        client.close()

    run(scenario())


def test_database_unreachable_rejects_unavailable_and_recovers(start_server: Any, make_database: Any) -> None:
    """The database refuses connections: actions get ``reject unavailable`` within a bounded
    time, /readyz is 503; once it is back, play continues and /readyz is 200."""
    url = make_database()
    server = start_server(database_url=url, storage={"commit_timeout_s": 1.0})
    bound = server.settings.storage.commit_timeout_s + 1.0

    async def scenario() -> None:
        client, cid = await join(server, url, "down", 20, 11)
        assert (await client.answer(await client.move(1, 0)))["type"] == "ack"
        assert await _readyz(server) == 200
        _allow_connections(url, False)
        try:
            _terminate_server_connections(url)
            for dx in (-1, 1):
                started = time.monotonic()
                answer = await client.answer(await client.move(dx, 0), timeout=bound)
                assert time.monotonic() - started < bound
                assert answer["type"] == "reject" and answer["code"] == "unavailable", answer
            assert await _readyz(server) == 503
        finally:
            _allow_connections(url, True)
        deadline = time.monotonic() + 30
        while (code := await _readyz(server)) != 200:
            assert time.monotonic() < deadline, f"/readyz stayed {code}"
            await asyncio.sleep(0.2)
        while True:
            answer = await client.answer(await client.move(-1, 0), timeout=bound)
            if answer["type"] == "ack":
                break
            assert answer["code"] == "unavailable", answer
            assert time.monotonic() < deadline, "play did not resume"
            await asyncio.sleep(0.2)
        assert answer["seq"] in rows_by_seq(url, cid)
        client.close()

    run(scenario(), timeout=90)


# --------------------------------------------------------------------------- graceful shutdown


def test_graceful_shutdown_acks_every_committed_action(start_server: Any, database_url: str) -> None:
    """Stop the node while players have actions in flight: every action whose row is in
    action_event was acked before the socket closed, and each socket gets an error frame, then
    close 1001."""
    server = start_server()
    players = 16

    async def keep_playing(client: WSClient) -> None:
        """Send moves (and a chat now and then) until the socket closes; never reads."""
        step = 1
        while not client.closed:
            try:
                await client.move(step, 0)
                if client.next_seq % 5 == 0:
                    await client.chat("still here")
            except WebSocketClosedError:
                return
            step = -step
            await asyncio.sleep(0.03)  # faster than the rules allow: some are rejected too_fast

    async def scenario() -> list[tuple[WSClient, str]]:
        joined = await asyncio.gather(*(
            join(server, database_url, "stop", x, y) for x, y in pair_slots(players, rows=(13, 11))
        ))
        readers = [asyncio.create_task(c.wait_closed(timeout=30)) for c, _ in joined]
        writers = [asyncio.create_task(keep_playing(c)) for c, _ in joined]
        await async_wait_until(lambda: all(len(c.answers) >= 3 for c, _ in joined), what="play under way")
        await asyncio.to_thread(server.stop)
        await asyncio.gather(*readers)
        await asyncio.gather(*writers)
        return joined

    try:
        joined = run(scenario())
    finally:
        server.stop = lambda: None  # stopped here; the fixture must not stop it again
    for client, cid in joined:
        assert client.close_code == 1001, (client.close_code, client.close_reason)
        assert client.history[-1]["type"] == "error", client.history[-3:]
        assert client.history[-1]["code"] == "shutdown"
        rows = rows_by_seq(database_url, cid)
        assert rows, "the player's actions should have been committed"
        acks = {s: a[0] for s, a in client.answers.items() if a[0]["type"] == "ack"}
        missing = sorted(set(rows) - set(acks))
        assert not missing, f"committed but never acked: seqs {missing} of {sorted(rows)}"
        for seq, ack in acks.items():
            assert rows[seq] == (ack["action_id"], ts(ack["persisted_at"]))


def test_shutdown_waits_for_a_commit_in_flight(start_server: Any, database_url: str) -> None:
    """A work still waiting when the node stops (its row locked elsewhere): shutdown waits
    for it, the ack goes out, then the error frame and close 1001."""
    server = start_server()

    async def scenario() -> None:
        client, cid = await join(server, database_url, "slowstop", 30, 13)
        reader = asyncio.create_task(client.wait_closed(timeout=30))
        with psycopg.connect(database_url) as locker:
            locker.execute("SELECT 1 FROM character_profile WHERE character_id = %s FOR UPDATE", (cid,))
            seq = await client.move(1, 0)
            await async_wait_until(
                lambda: storage_counters(server)["parked"] >= 1,
                what="the work waiting for the row lock")
            stopping = asyncio.create_task(asyncio.to_thread(server.stop))
            await async_wait_until(lambda: server.node.stopping, what="the node stopping")
            await asyncio.wait({reader}, timeout=0.3)  # the node must wait for the commit
            assert not reader.done(), f"the socket closed while a commit was in flight: {client.history[-2:]}"
            assert seq not in client.answers
            locker.rollback()
        await reader
        await stopping
        assert client.close_code == 1001
        types = [f["type"] for f in client.history]
        ack = client.answers[seq][0]
        assert ack["type"] == "ack"
        assert types.index("ack") < len(types) - 1 and client.history[-1]["code"] == "shutdown"
        assert rows_by_seq(database_url, cid)[seq][0] == ack["action_id"]

    try:
        run(scenario())
    finally:
        server.stop = lambda: None  # stopped here; the fixture must not stop it again
