"""Issue 10, the storage room: ownership epochs fence stale writers, a locked row stalls only its
character, a failed work fails the works built on it, PostgreSQL refuses a seq stored twice, twin
first logins make one character, and every pooled connection's waits are bounded."""

from __future__ import annotations

import datetime as dt
import json
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pykka
import pytest
from waiting import wait_until

from actors.messages import LookupAction, Persist, Persisted, PersistFailed, StoredAnswer
from actors.storage_actor import StorageActor
from actors.vocabulary import RejectCode
from config.settings import Settings
from storage.postgres import db, migrate, partitions
from storage.postgres.actions import (
    CharacterWrite,
    EventRow,
    Fenced,
    SeqAlreadyStored,
    commit_batch,
    find_action,
)
from storage.postgres.characters import load_character, load_or_create_character, take_ownership

COMMIT_TIMEOUT_S = 1.0


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def url(database_url: str) -> str:
    """The run's migrated database, with today's partitions."""
    with psycopg.connect(database_url) as conn:
        partitions.ensure_partitions(conn)
    return database_url


def new_character(url: str, user: str | None = None) -> str:
    """A fresh character (epoch 0, version 0); returns its id."""
    with psycopg.connect(url) as conn:
        record, created = load_or_create_character(
            conn, user or f"u-{uuid.uuid4().hex[:10]}", "Tester", None, lambda _id: (5, 5), 100
        )
    assert created
    return record.character_id


def event(cid: str, seq: int | None, user: str = "u") -> EventRow:
    """One move (or a system event when ``seq`` is None) of ``cid``."""
    kind = "move" if seq is not None else "system"
    return EventRow(str(uuid.uuid4()), user, cid, seq, kind, json.dumps({"dx": 1, "dy": 0, "seq": seq}))


def write(cid: str, seq: int, expected: int, epoch: int = 0, x: int = 6) -> CharacterWrite:
    """The character's state after one move (version ``expected`` → ``expected + 1``)."""
    return CharacterWrite(cid, x, 5, 100, 100, '{"items": []}', '{"max_health": 100}', seq, expected, expected + 1, epoch)


def row(url: str, cid: str) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT position_x, version, owner_epoch, last_action_seq FROM character_profile WHERE character_id = %s",
            (cid,),
        ).fetchone()


def stored_seqs(url: str, cid: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT sequence_number FROM action_event WHERE character_id = %s AND sequence_number IS NOT NULL"
            " ORDER BY 1", (cid,))]


class Inbox(pykka.ThreadingActor):
    """Collects every message it is told into ``got`` (a thread-safe queue)."""

    def __init__(self, got: queue.Queue) -> None:
        super().__init__()
        self.got = got

    def on_receive(self, message: Any) -> None:
        self.got.put(message)


class Replies:
    """An actor to reply to, and waiting for its replies by work id / seq."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self.ref = Inbox.start(self.queue)
        self.seen: list[Any] = []

    def wait_for(self, match: Callable[[Any], bool], timeout: float = 5.0) -> Any:
        for m in self.seen:
            if match(m):
                return m
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching reply within {timeout} s; got {self.seen}")
            try:
                m = self.queue.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(m)
            if match(m):
                return m

    def answer(self, work_id: int, timeout: float = 5.0) -> Persisted | PersistFailed:
        return self.wait_for(lambda m: isinstance(m, Persisted | PersistFailed) and m.work_id == work_id, timeout)


class Observer:
    """Records the StorageActor's health reports."""

    def __init__(self) -> None:
        self.health: list[float | None] = []

    def on_batch(self, size: int, seconds: float, committed: list) -> None:
        pass

    def on_commit_health(self, failing_since: float | None) -> None:
        self.health.append(failing_since)


@pytest.fixture
def storage(url: str) -> Iterator[tuple[pykka.ActorRef, StorageActor, Replies, Observer]]:
    """A StorageActor on its own pool (short commit timeout and lock timeout), a reply inbox."""
    settings = Settings(storage={"commit_timeout_s": COMMIT_TIMEOUT_S, "lock_timeout_s": 0.2, "pool_min_size": 1})
    pool = db.open_pool(settings, url)
    pool.wait(10)
    observer = Observer()
    ref = StorageActor.start(pool, settings, observer)
    actor = ref._actor_weakref()
    replies = Replies()
    yield ref, actor, replies, observer
    if ref.is_alive():
        ref.stop(timeout=10)
    replies.ref.stop()
    pool.close()


# --------------------------------------------------------------------------- migration 0002


def test_migration_backfills_first_characters_and_action_seq(make_database: Callable[..., str]) -> None:
    """On a database with data from before 0002: the earliest character of each user becomes
    its first one, and action_seq gets one row per stored (character, seq), the earliest."""
    url = make_database(migrated=False)
    first = migrate.available_migrations()[0]
    assert first.version == "0001_initial_schema"
    user, c_old, c_new = "legacy", str(uuid.uuid4()), str(uuid.uuid4())
    day = dt.datetime.now(dt.UTC).date()
    at1 = dt.datetime.combine(day, dt.time(1), dt.UTC)
    at2 = dt.datetime.combine(day, dt.time(2), dt.UTC)
    a1, a2 = str(uuid.uuid4()), str(uuid.uuid4())
    with psycopg.connect(url) as conn:
        conn.execute(migrate._CREATE_LEDGER)
        conn.execute(first.sql)
        conn.execute("INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                     (first.version, first.checksum))
        partitions.create_partition(conn, day)
        for cid, created in ((c_new, "2026-01-02"), (c_old, "2026-01-01")):
            conn.execute(
                "INSERT INTO character_profile (character_id, user_id, display_name, position_x, position_y,"
                " health, created_at) VALUES (%s, %s, 'Old', 1, 1, 100, %s)", (cid, user, created))
        # The same seq stored twice (possible before 0002): the later one is the duplicate.
        for action_id, at in ((a2, at2), (a1, at1)):
            conn.execute(
                "INSERT INTO action_event (action_id, user_id, character_id, sequence_number, action_type,"
                " payload_json, persisted_at) VALUES (%s, %s, %s, 7, 'move', '{}', %s)",
                (action_id, user, c_old, at))
        conn.commit()
    assert migrate.migrate(url) == ["0002_ownership"]
    with psycopg.connect(url) as conn:
        firsts = conn.execute(
            "SELECT character_id::text FROM character_profile WHERE is_first").fetchall()
        assert firsts == [(c_old,)]
        assert conn.execute("SELECT character_id::text, sequence_number, action_id::text, persisted_at"
                            " FROM action_seq").fetchall() == [(c_old, 7, a1, at1)]
        assert conn.execute("SELECT DISTINCT owner_epoch FROM character_profile").fetchall() == [(0,)]


# --------------------------------------------------------------------------- storage functions


def test_take_ownership_bumps_the_epoch_and_a_stale_write_is_fenced(url: str) -> None:
    """A write carrying the epoch before the last take_ownership is refused as fenced (with
    both epochs) and changes nothing; the current owner's write commits."""
    cid = new_character(url)
    with psycopg.connect(url) as conn:
        old = take_ownership(conn, cid)
        new = take_ownership(conn, cid)
        assert (old.owner_epoch, new.owner_epoch) == (1, 2)
        assert take_ownership(conn, str(uuid.uuid4())) is None
        before = row(url, cid)
        stale = event(cid, 1)
        with pytest.raises(Fenced) as err:
            commit_batch(conn, [stale], [write(cid, 1, new.version, epoch=old.owner_epoch)], dt.datetime.now(dt.UTC))
        assert err.value.epochs == {cid: (1, 2)}
        assert row(url, cid) == before
        assert stored_seqs(url, cid) == []
        commit_batch(conn, [event(cid, 1)], [write(cid, 1, new.version, epoch=2)], dt.datetime.now(dt.UTC))
    assert row(url, cid) == (6, new.version + 1, 2, 1)
    with psycopg.connect(url) as conn:
        assert load_character(conn, cid).owner_epoch == 2


def test_a_seq_stored_twice_is_refused_by_postgresql(url: str) -> None:
    """action_seq's primary key refuses (character, seq) again, even on another day's
    partition; commit_batch names the character and stores nothing of that batch."""
    cid = new_character(url)
    other = new_character(url)
    now = dt.datetime.now(dt.UTC)
    first = event(cid, 3)
    with psycopg.connect(url) as conn:
        commit_batch(conn, [first], [write(cid, 3, 0)], now)
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute("INSERT INTO action_seq VALUES (%s, 3, %s, %s)",
                         (cid, str(uuid.uuid4()), now - dt.timedelta(days=1)))
        with pytest.raises(SeqAlreadyStored) as err:
            commit_batch(conn, [event(other, 1), event(cid, 3)], [write(other, 1, 0), write(cid, 3, 1)],
                         now + dt.timedelta(seconds=1))
        assert err.value.seqs == {cid: {3}}
        with pytest.raises(SeqAlreadyStored):  # twice inside one batch
            commit_batch(conn, [event(other, 1), event(other, 1)], [], now)
        found = find_action(conn, cid, 3)
    assert stored_seqs(url, other) == []
    assert found.action_id == first.action_id and found.persisted_at == now
    assert found.action_type == "move" and found.payload == {"dx": 1, "dy": 0, "seq": 3}


def test_twin_first_logins_make_one_character(url: str) -> None:
    """Two connections creating a user's first character at the same instant: one row, both
    logins get it, exactly one says it created it."""
    for attempt in range(6):
        user = f"twin-{attempt}-{uuid.uuid4().hex[:6]}"
        barrier = threading.Barrier(2)
        results: list[Any] = []

        def login(user: str = user, barrier: threading.Barrier = barrier, results: list = results) -> None:
            with psycopg.connect(url) as conn:
                barrier.wait(5)
                try:
                    results.append(load_or_create_character(conn, user, "Twin", None, lambda _id: (3, 3), 100))
                except Exception as exc:  # noqa: BLE001 - asserted below
                    results.append(exc)

        threads = [threading.Thread(target=login) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert all(isinstance(r, tuple) for r in results), results
        assert len({r[0].character_id for r in results}) == 1
        assert sorted(r[1] for r in results) == [False, True]
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM character_profile WHERE user_id = %s",
                                (user,)).fetchone()[0] == 1


def test_pool_connections_have_bounded_waits(url: str) -> None:
    """Every pooled connection carries the [storage] timeouts and TCP keepalives."""
    settings = Settings(storage={"lock_timeout_s": 1.5, "statement_timeout_s": 4.0,
                                 "idle_in_transaction_timeout_s": 9.0, "connect_timeout_s": 2,
                                 "keepalives_idle_s": 11, "pool_min_size": 1})
    pool = db.open_pool(settings, url)
    try:
        with pool.connection(timeout=10) as conn:
            show = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in (
                "lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout", "synchronous_commit")}
            params = conn.info.get_parameters()
    finally:
        pool.close()
    assert show == {"lock_timeout": "1500ms", "statement_timeout": "4s",
                    "idle_in_transaction_session_timeout": "9s", "synchronous_commit": "on"}
    assert params["connect_timeout"] == "2" and params["keepalives"] == "1"
    assert params["keepalives_idle"] == "11"


# --------------------------------------------------------------------------- the StorageActor


def test_a_locked_row_stalls_only_its_character(url: str, storage: Any) -> None:
    """Another transaction holds character A's row: B's work commits at once, A's work waits and
    is answered unavailable after commit_timeout_s (and is not stored)."""
    ref, actor, replies, _ = storage
    a, b = new_character(url), new_character(url)
    with psycopg.connect(url) as locker:
        locker.execute("SELECT 1 FROM character_profile WHERE character_id = %s FOR UPDATE", (a,))
        started = time.monotonic()
        ref.tell(Persist(1, (event(a, 1),), write(a, 1, 0), replies.ref))
        ref.tell(Persist(2, (event(b, 1),), write(b, 1, 0), replies.ref))
        ref.tell(Persist(3, (event(a, 2),), write(a, 2, 1), replies.ref))
        assert isinstance(replies.answer(2, timeout=COMMIT_TIMEOUT_S / 2), Persisted)
        assert time.monotonic() - started < COMMIT_TIMEOUT_S / 2
        # B keeps committing while A waits.
        ref.tell(Persist(4, (event(b, 2),), write(b, 2, 1), replies.ref))
        assert isinstance(replies.answer(4, timeout=COMMIT_TIMEOUT_S / 2), Persisted)
        first, later = replies.answer(1, timeout=COMMIT_TIMEOUT_S * 3), replies.answer(3)
        waited = time.monotonic() - started
        locker.rollback()
    assert isinstance(first, PersistFailed) and first.code == RejectCode.UNAVAILABLE and not first.fenced
    assert isinstance(later, PersistFailed) and later.code == RejectCode.UNAVAILABLE
    assert COMMIT_TIMEOUT_S * 0.9 <= waited < COMMIT_TIMEOUT_S * 3
    assert stored_seqs(url, a) == [] and stored_seqs(url, b) == [1, 2]
    assert row(url, a)[1] == 0


def test_works_of_two_characters_with_one_work_id_are_told_apart(url: str, storage: Any) -> None:
    """Each character actor numbers its own works, so A's parked work and B's work can both be
    work 1: B's must still commit and be answered at once (it was taken for parked before)."""
    ref, _, replies_a, _ = storage
    replies_b = Replies()
    a, b = new_character(url), new_character(url)
    try:
        with psycopg.connect(url) as locker:
            locker.execute("SELECT 1 FROM character_profile WHERE character_id = %s FOR UPDATE", (a,))
            ref.tell(Persist(1, (event(a, 1),), write(a, 1, 0), replies_a.ref))
            ref.tell(Persist(1, (event(b, 1),), write(b, 1, 0), replies_b.ref))
            assert isinstance(replies_b.answer(1, timeout=COMMIT_TIMEOUT_S / 2), Persisted)
            assert stored_seqs(url, b) == [1]
            locker.rollback()
        assert isinstance(replies_a.answer(1, timeout=COMMIT_TIMEOUT_S * 2), Persisted)
    finally:
        replies_b.ref.stop()


def test_a_parked_work_commits_once_the_row_is_released(url: str, storage: Any) -> None:
    """A row lock released before commit_timeout_s: the parked work commits (no new message
    needed: the actor's own timer retries it)."""
    ref, _, replies, _ = storage
    a = new_character(url)
    with psycopg.connect(url) as locker:
        locker.execute("SELECT 1 FROM character_profile WHERE character_id = %s FOR UPDATE", (a,))
        ref.tell(Persist(1, (event(a, 1),), write(a, 1, 0), replies.ref))
        with pytest.raises(AssertionError):
            replies.answer(1, timeout=0.3)
        locker.rollback()
    assert isinstance(replies.answer(1, timeout=COMMIT_TIMEOUT_S), Persisted)
    assert stored_seqs(url, a) == [1]


def test_a_work_built_on_a_failed_one_fails_with_the_same_code(url: str, storage: Any) -> None:
    """Work 1 conflicts; work 2 of the same chain fails at once with conflict too (even though
    its own write would apply); work 3 of the next chain commits."""
    ref, _, replies, _ = storage
    a = new_character(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE character_profile SET version = 1 WHERE character_id = %s", (a,))
    ref.tell(Persist(1, (event(a, 1),), write(a, 1, 0), replies.ref, chain=0))
    failed = replies.answer(1)
    assert isinstance(failed, PersistFailed) and failed.code == RejectCode.CONFLICT and not failed.fenced
    ref.tell(Persist(2, (event(a, 2),), write(a, 2, 1), replies.ref, chain=0))
    dependent = replies.answer(2)
    assert isinstance(dependent, PersistFailed) and dependent.code == failed.code
    ref.tell(Persist(3, (event(a, 2),), write(a, 2, 1), replies.ref, chain=1))
    assert isinstance(replies.answer(3), Persisted)
    assert stored_seqs(url, a) == [2]


def test_a_fenced_work_is_answered_fenced(url: str, storage: Any) -> None:
    """A write under an epoch the row no longer has: conflict, fenced=True, row unchanged."""
    ref, _, replies, _ = storage
    a = new_character(url)
    with psycopg.connect(url) as conn:
        take_ownership(conn, a)
    before = row(url, a)
    ref.tell(Persist(1, (event(a, 1),), write(a, 1, 0, epoch=0), replies.ref))
    failed = replies.answer(1)
    assert isinstance(failed, PersistFailed) and failed.code == RejectCode.CONFLICT and failed.fenced
    assert row(url, a) == before and stored_seqs(url, a) == []


def test_a_lookup_for_a_stopped_actor_does_not_kill_storage(url: str, storage: Any) -> None:
    """LookupAction whose reply_to has stopped: the StorageActor lives on and still commits;
    a live asker gets the stored type and payload."""
    ref, _, replies, _ = storage
    a = new_character(url)
    ref.tell(Persist(1, (event(a, 1),), write(a, 1, 0), replies.ref))
    assert isinstance(replies.answer(1), Persisted)
    gone = Inbox.start(queue.Queue())
    gone.stop()
    ref.tell(LookupAction(a, 1, gone))
    ref.tell(Persist(2, (event(a, 2),), write(a, 2, 1), replies.ref))
    assert isinstance(replies.answer(2), Persisted)
    assert ref.is_alive()
    ref.tell(LookupAction(a, 1, replies.ref))
    ref.tell(LookupAction(a, 9, replies.ref))
    found = replies.wait_for(lambda m: isinstance(m, StoredAnswer) and m.seq == 1)
    assert found.action_type == "move" and found.payload == {"dx": 1, "dy": 0, "seq": 1}
    assert replies.wait_for(lambda m: isinstance(m, StoredAnswer) and m.seq == 9).action_id is None


def test_commit_health_is_published(url: str, storage: Any) -> None:
    """While commits fail (a table lock outlasts lock_timeout and commit_timeout_s) the actor
    publishes failing_since; the next commit that lands clears it."""
    ref, actor, replies, observer = storage
    a = new_character(url)
    assert actor.failing_since is None
    with psycopg.connect(url) as locker:
        locker.execute("LOCK TABLE action_seq IN ACCESS EXCLUSIVE MODE")
        ref.tell(Persist(1, (event(a, 1),), write(a, 1, 0), replies.ref))
        failed = replies.answer(1, timeout=COMMIT_TIMEOUT_S * 4)
        locker.rollback()
    assert isinstance(failed, PersistFailed) and failed.code == RejectCode.UNAVAILABLE
    assert actor.failing_since is not None and observer.health == [actor.failing_since]
    ref.tell(Persist(2, (event(a, 1),), write(a, 1, 0), replies.ref, chain=1))
    assert isinstance(replies.answer(2), Persisted)
    assert actor.failing_since is None and observer.health[-1] is None



class CutAfterCommit:
    """A TCP proxy to PostgreSQL that, once armed, forwards the next COMMIT but never its
    reply, until :meth:`close_cut` drops that connection: a commit that landed while the
    client lost its connection."""

    def __init__(self, host: str, port: int) -> None:
        # The embedded PostgreSQL listens on a Unix socket (its host is a directory).
        self.upstream: Any = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.cut = threading.Event()
        self._cut_socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if isinstance(self.upstream, str):
                server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                server.connect(self.upstream)
            else:
                server = socket.create_connection(self.upstream)
            state = {"cut": False}
            threading.Thread(target=self._pump, args=(client, server, state, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, state, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, state: dict, to_server: bool) -> None:
        try:
            while data := src.recv(65536):
                if to_server and self.armed.is_set() and b"COMMIT" in data:
                    self.armed.clear()
                    state["cut"] = True
                    self._cut_socks[:] = [src, dst]
                    self.cut.set()
                if state["cut"] and not to_server:
                    continue  # the reply never reaches the client
                dst.sendall(data)
        except OSError:
            pass

    def close_cut(self) -> None:
        for sock in self._cut_socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pumps blocked on it; close alone would not
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_a_commit_that_landed_unseen_is_answered_persisted(make_database: Callable[..., str]) -> None:
    """The COMMIT lands but its reply is lost, and the connection drops only after
    commit_timeout_s: the actor looks the batch up and answers Persisted (not unavailable),
    without storing it twice."""
    url = make_database()
    with psycopg.connect(url) as conn:
        partitions.ensure_partitions(conn)
    cid = new_character(url)
    info = psycopg.conninfo.conninfo_to_dict(url)
    proxy = CutAfterCommit(info.get("host", "127.0.0.1"), int(info.get("port", 5432)))
    proxied = psycopg.conninfo.make_conninfo(url, host="127.0.0.1", port=proxy.port, sslmode="disable")
    settings = Settings(storage={"commit_timeout_s": 0.5, "pool_min_size": 1})
    pool = db.open_pool(settings, proxied)
    pool.wait(10)
    ref = StorageActor.start(pool, settings, Observer())
    replies = Replies()
    try:
        proxy.armed.set()
        started = time.monotonic()
        ref.tell(Persist(1, (event(cid, 1),), write(cid, 1, 0), replies.ref))
        assert proxy.cut.wait(5), "no COMMIT went through the proxy"
        wait_until(lambda: stored_seqs(url, cid) == [1], what="the commit landed")
        wait_until(lambda: time.monotonic() > started + settings.storage.commit_timeout_s + 0.3,
                   what="past the commit timeout")
        with pytest.raises(AssertionError):
            replies.answer(1, timeout=0)  # no answer while the outcome is unknown
        proxy.close_cut()
        answer = replies.answer(1, timeout=10)
        assert isinstance(answer, Persisted), answer
        assert stored_seqs(url, cid) == [1] and row(url, cid)[1] == 1
    finally:
        ref.stop(timeout=10)
        replies.ref.stop()
        pool.close()
        proxy.close()


def test_a_commit_lost_in_flight_is_looked_up_before_any_answer(make_database: Callable[..., str]) -> None:
    """The connection dies during the COMMIT (its backend terminated while a deferred trigger
    holds the COMMIT): the actor looks the batch up, finds it did not land, commits it again,
    and answers Persisted; the action is stored exactly once."""
    url = make_database()
    with psycopg.connect(url) as conn:
        partitions.ensure_partitions(conn)
        # A trigger that runs at COMMIT and waits once (while the gate row exists).
        conn.execute("CREATE TABLE commit_gate (open boolean)")
        conn.execute("INSERT INTO commit_gate VALUES (true)")
        conn.execute("""
            CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF EXISTS (SELECT 1 FROM commit_gate) THEN
                    DELETE FROM commit_gate;
                    PERFORM pg_sleep(3);
                END IF;
                RETURN NULL;
            END $$""")
        conn.execute("CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON action_seq"
                     " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_commit()")
        conn.commit()
    cid = new_character(url)
    settings = Settings(storage={"commit_timeout_s": 2.0, "pool_min_size": 1})
    pool = db.open_pool(settings, url)
    pool.wait(10)
    ref = StorageActor.start(pool, settings, Observer())
    replies = Replies()
    try:
        ref.tell(Persist(1, (event(cid, 1),), write(cid, 1, 0), replies.ref))
        with psycopg.connect(url, autocommit=True) as admin:
            def committing() -> int | None:
                got = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'tilehall'"
                    " AND wait_event = 'PgSleep'").fetchone()
                return got[0] if got else None

            deadline = time.monotonic() + 5
            while (pid := committing()) is None:
                assert time.monotonic() < deadline, "the COMMIT never reached the trigger"
                time.sleep(0.01)
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        answer = replies.answer(1, timeout=10)
        assert isinstance(answer, Persisted), answer
        assert stored_seqs(url, cid) == [1]
        assert row(url, cid)[1] == 1
    finally:
        ref.stop(timeout=10)
        replies.ref.stop()
        pool.close()


def test_a_work_from_the_durable_state_after_a_failure_commits(url: str, storage: Any) -> None:
    """A write that starts again from the version the failed work expected (the character
    rolled back to its durable state) was not built on the failure: it commits even in the same
    chain (the character side before chains existed); one built on the failure does not."""
    ref, _, replies, _ = storage
    a = new_character(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE character_profile SET version = 1 WHERE character_id = %s", (a,))
    ref.tell(Persist(1, (event(a, 1),), write(a, 1, 1, epoch=7), replies.ref))  # another owner's epoch
    assert replies.answer(1).fenced
    ref.tell(Persist(2, (event(a, 2),), write(a, 2, 2), replies.ref))  # built on work 1
    assert isinstance(replies.answer(2), PersistFailed)
    ref.tell(Persist(3, (event(a, 2),), write(a, 2, 1), replies.ref))  # from the durable version
    assert isinstance(replies.answer(3), Persisted)
    assert stored_seqs(url, a) == [2]


def test_a_storage_actor_that_dies_tells_its_observer(url: str) -> None:
    """An exception escaping a handler ends the StorageActor; on_failure tells the observer's
    on_storage_died (the node marks itself unready)."""
    died: queue.Queue = queue.Queue()

    class DyingObserver(Observer):
        def on_storage_died(self, exc: BaseException | None) -> None:
            died.put(exc)

    settings = Settings(storage={"pool_min_size": 1})
    pool = db.open_pool(settings, url)
    try:
        ref = StorageActor.start(pool, settings, DyingObserver())
        ref.tell(object())  # no handler: UnknownMessageError inside the actor
        exc = died.get(timeout=5)
        assert type(exc).__name__ == "UnknownMessageError"
        wait_until(lambda: not ref.is_alive(), what="the storage actor stopped")
    finally:
        pool.close()
