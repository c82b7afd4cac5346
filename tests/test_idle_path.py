"""The idle path: what 5,000 heartbeating players cost must stay small, and nothing it batches
may be lost. Pings are answered without an actor message, the liveness sweep visits only the
sockets whose deadline is due (and still ends a silent one), many leases are refreshed in a few
script calls (and each really is), and session_audit rows are written in batches (and each
lands, also after PostgreSQL was unreachable for a while).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg_pool
import redis
from test_ownership_storage import (  # noqa: F401 - url and storage are fixtures
    COMMIT_TIMEOUT_S,
    event,
    new_character,
    storage,
    stored_seqs,
    url,
    write,
)
from test_sessions import closed_with, new_user, rows, run, token, wait_rows
from waiting import async_wait_until
from wsclient import is_type, login

from actors.messages import AuditSession, Persist, Persisted
from actors.storage_audit import AuditBuffer
from storage.redis.leases import REFRESH_CHUNK, Holder, SessionLeases
from transport.liveness import LivenessWheel

# ------------------------------------------------------------------ the liveness wheel


class _Sock:
    """A socket stand-in: its deadline, and whether a visit found it past it."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.visits = 0
        self.ended = False

    def check_liveness(self, now: float, wall: float) -> float | None:
        self.visits += 1
        if now > self.deadline:
            self.ended = True
            return None
        return self.deadline


def test_wheel_visits_only_due_sockets_and_ends_the_late_ones() -> None:
    """1,000 sockets due in 30 s and one due in 2 s: sweeps each second for 5 s visit the early
    one (and end it once its deadline passed), not the others; a socket told to look again
    sooner (a reauth) is visited then; a forgotten one never."""
    wheel = LivenessWheel()
    t0 = 1000.0
    late = [_Sock(t0 + 30) for _ in range(1000)]
    early = _Sock(t0 + 2)
    gone = _Sock(t0 + 1)
    for s in [*late, early, gone]:
        wheel.watch(s, t0)
    wheel.sweep(t0, 0.0)  # the first visit of each: every socket learns its deadline
    assert all(s.visits == 1 for s in late) and early.visits == 1
    wheel.forget(gone)
    visited = sum(wheel.sweep(t0 + i, 0.0) for i in range(1, 6))
    assert early.ended and gone.visits == 1
    assert visited == early.visits - 1 <= 2  # at its deadline's slot, then past it
    assert all(s.visits == 1 for s in late) and len(wheel) == 1000
    wheel.watch(late[0], t0 + 6)
    assert wheel.sweep(t0 + 6, 0.0) == 1 and late[0].visits == 2
    visited = wheel.sweep(t0 + 31, 0.0)
    assert visited == 1000 and all(s.ended for s in late) and len(wheel) == 0


def test_pinging_session_lives_past_idle_timeout_and_silent_one_ends(start_server: Callable[..., Any]) -> None:
    """With idle_timeout_s = 1.5: a session that pings every 0.3 s is still answered after 4 s
    (every ping gets its pong, no actor involved), one that stays silent ends idle_timeout."""
    server = start_server(session={"idle_timeout_s": 1.5})

    async def scenario() -> None:
        pinger = await login(server.ws_url, token(server, new_user()))
        quiet = await login(server.ws_url, token(server, new_user()))
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < 4.0:
            n += 1
            await pinger.ping(n)
            pong = await pinger.read_until(is_type("pong"), timeout=2)
            assert pong["t"] == n
            await asyncio.sleep(0.3)
        code, err = await closed_with(quiet, timeout=4)
        assert (code, err["code"]) == (4008, "idle_timeout")
        assert pinger.close_code is None
        pinger.close()

    run(scenario())


# ------------------------------------------------------------------ leases


def test_refresh_many_refreshes_every_lease_across_chunks(redis_url: str, redis_prefix: str) -> None:
    """2.5 chunks of leases: the held ones get their full TTL back, vanished ones are taken
    again, the ones another node took are reported lost and left alone, in order."""
    client = redis.Redis.from_url(redis_url)
    leases = SessionLeases(client, redis_prefix, ttl_s=20)
    n = REFRESH_CHUNK * 2 + REFRESH_CHUNK // 2
    users = [new_user() for _ in range(n)]
    ours = [Holder("node-a", f"s{i}") for i in range(n)]
    try:
        for u, h in zip(users, ours, strict=True):
            leases.acquire(u, h)
            client.pexpire(leases.key(u), 1000)  # about to expire: a refresh must extend it
        taken = set(range(7, n, 97))
        vanished = set(range(3, n, 101)) - taken
        for i in taken:
            leases.acquire(users[i], Holder("node-b", f"t{i}"))
        for i in vanished:
            client.delete(leases.key(users[i]))
        kept = leases.refresh_many(list(zip(users, ours, strict=True)))
        assert kept == [i not in taken for i in range(n)]
        pipe = client.pipeline(transaction=False)
        for u in users:
            pipe.get(leases.key(u))
            pipe.pttl(leases.key(u))
        got = pipe.execute()
        for i in range(n):
            value, pttl = got[2 * i], got[2 * i + 1]
            if i in taken:
                assert Holder.decode(value) == Holder("node-b", f"t{i}")
            else:  # it had 1 s left: more than 5 s left means it was refreshed
                assert Holder.decode(value) == ours[i] and 5000 < pttl <= 20000, (i, pttl)
        assert leases.refresh_many([]) == []
    finally:
        client.delete(*(leases.key(u) for u in users))
        client.close()


# ------------------------------------------------------------------ session audit


def _audit_rows(database_url: str, ids: list[str]) -> dict[str, tuple]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        got = conn.execute(
            "SELECT session_id::text, ended_at IS NOT NULL, end_reason, last_action_seq FROM session_audit"
            " WHERE session_id = ANY(%s::uuid[])", (ids,)).fetchall()
    return {r[0]: r[1:] for r in got}


def test_audit_buffer_keeps_rows_while_postgres_is_unreachable(database_url: str) -> None:
    """Openings and closings (some closed in the same batch they open in) go through a pool
    that cannot connect: nothing is lost, the buffer keeps them; the real pool then writes every
    one, in batches of max_batch, each closing after its opening."""
    ids = [str(uuid.uuid4()) for _ in range(120)]
    buffer = AuditBuffer(max_batch=50)
    for i, sid in enumerate(ids):
        buffer.add(AuditSession(sid, f"u-{i}", None, "1.0", "node-x"))
        if i % 3 == 0:
            buffer.add(AuditSession(sid, f"u-{i}", None, ended=True, end_reason="logout", last_action_seq=i))
    total = len(buffer)
    dead = psycopg_pool.ConnectionPool("postgresql://nobody@127.0.0.1:1/none", min_size=0, max_size=1, open=True)
    try:
        assert buffer.flush(dead, timeout=0.3) is False
        assert len(buffer) == total and buffer.dropped == 0
    finally:
        dead.close()
    with psycopg_pool.ConnectionPool(database_url, min_size=1, max_size=1) as pool:
        assert buffer.flush(pool, timeout=5) is True
    assert len(buffer) == 0 and buffer.written == total
    got = _audit_rows(database_url, ids)
    assert set(got) == set(ids)
    for i, sid in enumerate(ids):
        assert got[sid] == ((True, "logout", i) if i % 3 == 0 else (False, None, 0))


def test_many_logins_and_logouts_each_leave_their_audit_row(live_server: Any) -> None:
    """40 sessions logged in together and out together (their audit changes arrive in bursts,
    written in batches): every one has its row, opened and then closed with its reason."""

    async def scenario() -> None:
        clients = await asyncio.gather(*(login(live_server.ws_url, token(live_server, new_user())) for _ in range(40)))
        ids = [c.welcome["session_id"] for c in clients]
        await async_wait_until(
            lambda: len(_audit_rows(live_server.settings.database_url, ids)) == len(ids), timeout=5)
        for c in clients:
            await c.send({"type": "logout"})
        for c in clients:
            code, kick = await closed_with(c)
            assert (code, kick["reason"]) == (1000, "logout")
        await wait_rows(
            live_server, "SELECT count(*) FROM session_audit WHERE session_id = ANY(%s::uuid[])"
            " AND ended_at IS NOT NULL AND end_reason = 'logout'", (ids,), lambda r: r[0][0] == len(ids))
        assert rows(live_server, "SELECT count(*) FROM session_audit WHERE session_id = ANY(%s::uuid[])",
                    ids)[0][0] == len(ids)

    run(scenario())


# ------------------------------------------------------------------ one IOLoop wake-up for many sockets


class _Handler:
    """A socket handler stand-in: records what the IOLoop writes."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    def write_frames(self, out: Any) -> None:
        while out:
            self.frames.append(out.popleft())


def test_outbox_delivers_every_frame_in_order_with_few_wakeups() -> None:
    """4 threads send 200 frames each to each of 50 sockets: every socket gets all 800, each
    thread's in order, and the IOLoop is woken far fewer times than there were sends."""
    import threading

    from tornado.ioloop import IOLoop

    from transport.ws_out import SocketConnection, _outbox_of

    started = threading.Event()
    holder: dict[str, Any] = {}

    def loop_thread() -> None:
        loop = IOLoop()
        loop.make_current()
        holder["loop"] = loop
        started.set()
        loop.start()

    t = threading.Thread(target=loop_thread, daemon=True)
    t.start()
    assert started.wait(5)
    loop = holder["loop"]
    wakeups = [0]
    real_add_callback = loop.add_callback

    class CountingLoop:
        def add_callback(self, *args: Any) -> None:
            wakeups[0] += 1
            real_add_callback(*args)

    made = threading.Event()

    def make() -> None:
        holder["conns"] = [SocketConnection(_Handler()) for _ in range(50)]
        _outbox_of(loop).loop = CountingLoop()
        made.set()

    loop.add_callback(make)
    assert made.wait(5)
    conns = holder["conns"]

    def sender(k: int) -> None:
        for i in range(200):
            for c in conns:
                c.send(f"{k}:{i}")

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    deadline = time.monotonic() + 10
    while any(len(c.handler.frames) < 800 for c in conns) and time.monotonic() < deadline:
        time.sleep(0.01)
    loop.add_callback(loop.stop)
    for c in conns:
        assert len(c.handler.frames) == 800
        for k in range(4):
            assert [f for f in c.handler.frames if f.startswith(f"{k}:")] == [f"{k}:{i}" for i in range(200)]
    assert wakeups[0] < 4 * 200 * 50 / 10, wakeups[0]


# ------------------------------------------------------------------ a scrape with many sessions


def test_published_snapshots_of_many_actors_take_linear_time() -> None:
    """The /metrics scrape reads every session's published status on the IOLoop: for 6,000
    actors it must take milliseconds, not the seconds a registry scan per actor took (O(n²));
    a stopped actor publishes nothing."""
    from pykka import ActorRegistry

    from actors.base import TilehallActor, published_snapshot

    class Idle(TilehallActor):
        pass

    refs = [Idle.start() for _ in range(6000)]
    try:
        started = time.perf_counter()
        snaps = [published_snapshot(r) for r in refs]
        elapsed = time.perf_counter() - started
        assert all(s is not None and s["urn"] == r.actor_urn for s, r in zip(snaps, refs, strict=True))
        assert elapsed < 1.0, f"{elapsed:.2f} s for {len(refs)} snapshots"
        refs[0].stop()
        assert published_snapshot(refs[0]) is None
    finally:
        for r in refs:
            r.stop(block=False)
        ActorRegistry.stop_all(timeout=10)


# ------------------------------------------------------------------ a Persist behind an audit row


def test_a_persist_followed_by_audit_messages_still_commits(url: str, storage: Any) -> None:  # noqa: F811
    """The StorageActor commits when its inbox is empty after a Persist; when the message after
    it is an audit change (or the audit timer), that message's turn must commit the work: with
    the pool held the actor waits, a Persist and an audit change queue up behind, and once the
    pool is free the work is answered Persisted within the commit timeout and stored."""
    ref, actor, replies, _ = storage
    cid = new_character(url)
    held = [actor.pool.getconn(timeout=5) for _ in range(actor.pool.max_size)]
    try:
        ref.tell(AuditSession(str(uuid.uuid4()), "u-audit", None, "1.0", "n"))  # waits for a connection
        ref.tell(Persist(1, (event(cid, 1),), write(cid, 1, 0), replies.ref))
        ref.tell(AuditSession(str(uuid.uuid4()), "u-audit", None, "1.0", "n"))
        time.sleep(0.2)  # let the first audit change start waiting (the order is fixed by the inbox)
    finally:
        for conn in held:
            actor.pool.putconn(conn)
    assert isinstance(replies.answer(1, timeout=COMMIT_TIMEOUT_S * 3), Persisted)
    assert stored_seqs(url, cid) == [1]
