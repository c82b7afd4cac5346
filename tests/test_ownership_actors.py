"""Issue 10 in the actors room: one writer per character (the ownership epoch on every write, a
fenced actor stops), rollback chains (no conflict from one's own failure), one answer per seq
(the character answers resends), ``last_seq`` counted at arrival, the session's hooks.

Most tests run the real CharacterActor and SessionActor. The test plays the StorageActor's part
(it receives the ``Persist`` and ``LookupAction`` messages on a queue and answers them as the
StorageActor would, fenced or failed, which a real database can only be coaxed into with the
storage room's migration), and a session stand-in records what the character tells it. The
rebuilt-ack test and the in-flight resend test run over real WebSockets on real PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import queue
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pykka
import pytest
from test_action_path import place, run, storage_counters, uniq
from waiting import async_wait_until, wait_until
from wsclient import is_type, login

from actors import rules
from actors.base import TilehallActor
from actors.character import CharacterActor
from actors.character_work import stored_ack_state
from actors.messages import (
    AbilityContext,
    ActionAnswered,
    AttachSession,
    CharacterAttached,
    ClientAction,
    ConnectionLost,
    EnterZone,
    Kick,
    LeaveZone,
    LookupAction,
    Persist,
    Persisted,
    PersistFailed,
    PlaceCharacter,
    RequestMove,
    ResendAnswer,
    ResolveAbility,
    Resume,
    ReturnItem,
    StartSession,
    StoredAnswer,
    SubmitAction,
    WorldSnapshotReady,
)
from actors.session import SessionActor
from actors.vocabulary import CloseCode, ErrorCode, KickReason, RejectCode
from actors.world_map import WorldMap
from config.settings import Settings
from storage.postgres.characters import CharacterRecord
from transport.auth import issue_dev_token
from transport.codec import CODEC

CID = "00000000-0000-4000-8000-0000000000c1"
WORLD = WorldMap.from_rows(["." * 20] * 10, spawn_points=[(0, 0)])


@dataclasses.dataclass(frozen=True)
class EpochRecord(CharacterRecord):
    """A loaded row as the storage room's ``take_ownership`` returns it (with its epoch)."""

    owner_epoch: int = 0


def record(epoch: int = 7, last_seq: int = 0, version: int = 3, x: int = 5, y: int = 5) -> EpochRecord:
    return EpochRecord(CID, "user-1", "ann", x, y, 80, 100, {"items": []}, {"max_health": 100}, last_seq, version,
                       owner_epoch=epoch)


class Recorder(TilehallActor):
    """Stands in for an actor: puts every message it gets on a queue."""

    def __init__(self, out: queue.Queue) -> None:
        super().__init__()
        self.out = out

    def on_receive(self, message: Any) -> Any:
        self.out.put(message)
        if isinstance(message, EnterZone):  # as the zone does: the session gets a snapshot
            message.session.tell(WorldSnapshotReady({"map_id": "test", "width": 20, "height": 10, "characters": [], "items": []}))


def take(q: queue.Queue, kind: type, timeout: float = 5.0) -> Any:
    """The next message of type ``kind`` on ``q`` (others before it are dropped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {kind.__name__} within {timeout:g} s")
        try:
            msg = q.get(timeout=left)
        except queue.Empty:
            continue
        if isinstance(msg, kind):
            return msg


def none_of(q: queue.Queue, kind: type, duration: float = 0.3) -> list[Any]:
    """Everything that arrives on ``q`` for ``duration`` seconds; asserts none is a ``kind``."""
    got = []
    deadline = time.monotonic() + duration
    while (left := deadline - time.monotonic()) > 0:
        try:
            got.append(q.get(timeout=left))
        except queue.Empty:
            break
    assert not [m for m in got if isinstance(m, kind)], got
    return got


class Rig:
    """A real CharacterActor between a recording zone, a recording session and the test as its
    StorageActor (``storage`` queue)."""

    def __init__(self, settings: Settings, rec: CharacterRecord, zone: pykka.ActorRef | None = None) -> None:
        self.storage_q: queue.Queue = queue.Queue()
        self.zone_q: queue.Queue = queue.Queue()
        self.session_q: queue.Queue = queue.Queue()
        self.stopped: queue.Queue = queue.Queue()
        self.storage = Recorder.start(self.storage_q)
        self.zone = zone or Recorder.start(self.zone_q)
        self.session = Recorder.start(self.session_q)
        self.character = CharacterActor.start(
            rec, WORLD, settings, self.storage, self.zone, CODEC,
            lambda cid, ref: self.stopped.put((cid, ref)),
        )

    def attach(self, session: pykka.ActorRef | None = None, session_id: str = "s1") -> None:
        self.character.tell(AttachSession(session or self.session, session_id))

    def persist(self) -> Persist:
        return take(self.storage_q, Persist)

    def answers(self, n: int) -> list[ActionAnswered]:
        return [take(self.session_q, ActionAnswered) for _ in range(n)]


@pytest.fixture
def rig(settings: Settings) -> Iterator[Rig]:
    fast = settings.model_copy(update={"game": settings.game.model_copy(update={
        "moves_per_second": 200.0, "chats_per_second": 200.0})})
    r = Rig(fast, record())
    r.attach()
    take(r.session_q, CharacterAttached)
    r.login = r.persist()  # the login system event
    r.character.tell(Persisted(r.login.work_id, dt.datetime.now(dt.UTC)))
    yield r
    pykka.ActorRegistry.stop_all()


def chat(rig: Rig, seq: int, text: str = "hi") -> Persist:
    rig.character.tell(SubmitAction(seq, "chat", {"text": text}, time.perf_counter()))
    return rig.persist()


def frame(answer: ActionAnswered) -> dict[str, Any]:
    return json.loads(answer.frame_json)


# ---------------------------------------------------------------- epochs and fencing


def test_every_write_carries_the_owner_epoch(rig: Rig) -> None:
    assert rig.login.write is not None and rig.login.write.owner_epoch == 7
    p = chat(rig, 1)
    assert p.write.owner_epoch == 7 and p.chain == 0


def test_a_fenced_character_kicks_its_session_answers_nothing_and_stops(rig: Rig, caplog: Any) -> None:
    """PersistFailed(fenced): kicked session_replaced (4009), no reject (the works were not
    stored; the new session resends them), the zone is left, the node told, later answers
    ignored."""
    first, second = chat(rig, 1), chat(rig, 2)
    with caplog.at_level(logging.ERROR, logger="actors.character"):
        rig.character.tell(PersistFailed(first.work_id, RejectCode.CONFLICT, "fenced", fenced=True))
        kick = take(rig.session_q, Kick)
        assert (kick.reason, kick.code, kick.kicked) == (KickReason.SESSION_REPLACED, CloseCode.SESSION_REPLACED, True)
        assert "played elsewhere" in kick.message
        leave = take(rig.zone_q, LeaveZone)
        assert leave.character_id == CID
        assert rig.stopped.get(timeout=5)[0] == CID
    fenced = [r for r in caplog.records if "fenced" in r.getMessage()]
    assert fenced and fenced[0].levelno == logging.ERROR
    assert CID in fenced[0].getMessage() and "7" in fenced[0].getMessage()
    assert "session_replaced" in fenced[0].getMessage()
    none_of(rig.session_q, ActionAnswered)
    wait_until(lambda: not rig.character.is_alive(), what="the fenced actor stopped")
    # A late answer of its other work goes nowhere (the StorageActor tells if alive).
    assert not second.reply_to.is_alive()


def test_a_version_conflict_under_ones_own_epoch_closes_1011_and_stops(rig: Rig, caplog: Any) -> None:
    """A non-fenced conflict is a bug: error log, 1011 internal, stop; never a conflict reject."""
    first = chat(rig, 1)
    with caplog.at_level(logging.ERROR, logger="actors.character"):
        rig.character.tell(PersistFailed(first.work_id, RejectCode.CONFLICT, "another writer changed this character"))
        kick = take(rig.session_q, Kick)
    assert (kick.reason, kick.code, kick.kicked) == (ErrorCode.INTERNAL, CloseCode.INTERNAL, False)
    assert any("conflict" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert rig.stopped.get(timeout=5)[0] == CID
    none_of(rig.session_q, ActionAnswered)


# ---------------------------------------------------------------- chains


def test_a_failed_commit_rejects_its_chain_with_its_code_and_starts_a_new_chain(rig: Rig) -> None:
    """The first failure rolls back and bumps the chain; the works built on it come back failed
    (by the chain rule, or by the version check before it) and are rejected with the first
    failure's code, never ``conflict``; the next work starts from the durable state."""
    a, b = chat(rig, 1), chat(rig, 2)
    assert a.chain == b.chain == 0 and b.write.expected_version == a.write.new_version
    rig.character.tell(PersistFailed(a.work_id, RejectCode.UNAVAILABLE, "the database is unavailable; try again"))
    rig.character.tell(PersistFailed(b.work_id, RejectCode.CONFLICT, "another writer changed this character"))
    got = {frame(x)["seq"]: frame(x) for x in rig.answers(2)}
    assert {s: f["code"] for s, f in got.items()} == {1: "unavailable", 2: "unavailable"}
    c = chat(rig, 3)
    assert c.chain == 1
    assert c.write.expected_version == rig.login.write.new_version  # the durable version
    rig.character.tell(Persisted(c.work_id, dt.datetime.now(dt.UTC)))
    assert frame(rig.answers(1)[0])["type"] == "ack"
    assert rig.character.is_alive()


def test_a_failed_pickup_puts_the_item_back_and_replaces_the_character(settings: Settings) -> None:
    from actors.world_map import ItemSpawn

    gem = ItemSpawn("gem-1", "gem", 5, 5)
    r = Rig(settings, record())
    try:
        r.attach()
        login_work = r.persist()
        r.character.tell(Persisted(login_work.work_id, dt.datetime.now(dt.UTC)))
        r.character.tell(SubmitAction(1, "ability", {"name": "pickup"}, time.perf_counter()))
        ask = take(r.zone_q, ResolveAbility)
        r.character.tell(AbilityContext(ask.work_id, None, gem))
        p = r.persist()
        r.character.tell(PersistFailed(p.work_id, RejectCode.UNAVAILABLE, "down"))
        assert frame(r.answers(1)[0])["code"] == "unavailable"
        assert take(r.zone_q, ReturnItem).item == gem
        assert take(r.zone_q, PlaceCharacter).position == (5, 5)
    finally:
        pykka.ActorRegistry.stop_all()


# ---------------------------------------------------------------- one answer per seq


def test_resend_in_flight_gets_nothing_remembered_gets_the_same_frame(rig: Rig) -> None:
    p = chat(rig, 1)
    rig.character.tell(ResendAnswer(1))  # in flight: its answer is on its way
    none_of(rig.session_q, ActionAnswered)
    none_of(rig.storage_q, LookupAction, 0.05)
    rig.character.tell(Persisted(p.work_id, dt.datetime.now(dt.UTC)))
    ack = rig.answers(1)[0]
    rig.character.tell(ResendAnswer(1))
    assert rig.answers(1)[0].frame_json == ack.frame_json
    none_of(rig.storage_q, LookupAction, 0.05)


def test_resend_of_a_forgotten_seq_is_looked_up_and_answered_once(rig: Rig) -> None:
    """Not remembered: the character asks storage (reply to itself); found → the original ack
    with its state rebuilt; not found → reject unavailable "seq N was not stored"."""
    rig.character.tell(ResendAnswer(40))
    look = take(rig.storage_q, LookupAction)
    assert (look.character_id, look.seq) == (CID, 40)
    assert look.reply_to == rig.character
    at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    look.reply_to.tell(StoredAnswer(40, "a-40", at, "move", {"x": 3, "y": 4, "dx": 1, "dy": 0}))
    ack = frame(rig.answers(1)[0])
    assert ack == {"type": "ack", "seq": 40, "action_id": "a-40", "persisted_at": "2026-01-02T03:04:05.000000Z",
                   "state": {"x": 3, "y": 4}}
    rig.character.tell(ResendAnswer(41))
    look = take(rig.storage_q, LookupAction)
    look.reply_to.tell(StoredAnswer(41, None))
    reject = frame(rig.answers(1)[0])
    assert reject == {"type": "reject", "seq": 41, "code": "unavailable", "message": "seq 41 was not stored"}


# ---------------------------------------------------------------- last_seq at arrival


class FakeConnection:
    """The session's socket port: records frames (no network in this test)."""

    def __init__(self) -> None:
        self.frames: queue.Queue = queue.Queue()
        self.closed: int | None = None

    def send(self, frame_json: str) -> None:
        self.frames.put(json.loads(frame_json))

    def close(self, code: int, frame_json: str | None = None) -> None:
        self.closed = code


class Hooks:
    """The session's node hooks, recorded."""

    def __init__(self) -> None:
        self.calls: queue.Queue = queue.Queue()

    def session_ended(self, session_id: str, user_id: str) -> None:
        self.calls.put(("ended",))

    def action_answered(self, latency_s: float, acked: bool, code: str | None) -> None:
        self.calls.put(("answered", latency_s, acked, code))

    def snapshot_forced(self) -> None:
        self.calls.put(("snapshot_forced",))

    def welcomed(self) -> None:
        self.calls.put(("welcomed",))

    def resumed(self) -> None:
        self.calls.put(("resumed",))


def start_session(rig: Rig, settings: Settings, conn: FakeConnection, hooks: Hooks) -> pykka.ActorRef:
    session = SessionActor.start(
        session_id=str(uuid.uuid4()), user_id="user-1", character_id=CID, character=rig.character,
        zone=rig.zone, storage=rig.storage, connection=conn, codec=CODEC, hooks=hooks, settings=settings,
        reconnect_token="t", reconnect_expires_at=time.time() + 60, protocol_version="x", node_id="n1",
    )
    session.tell(StartSession())
    return session


def frame_of(conn: FakeConnection, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        f = conn.frames.get(timeout=max(0.01, deadline - time.monotonic()))
        if f["type"] == kind:
            return f


def test_an_action_queued_behind_a_zone_request_is_counted_by_the_next_welcome(settings: Settings) -> None:
    fast = settings.model_copy(update={"game": settings.game.model_copy(update={"chats_per_second": 200.0})})
    r = Rig(fast, record())
    try:
        c1, h1 = FakeConnection(), Hooks()
        s1 = start_session(r, fast, c1, h1)
        assert frame_of(c1, "welcome")["last_action_seq"] == 0
        s1.tell(ClientAction(1, "move", {"dx": 1, "dy": 0}, time.perf_counter()))
        take(r.zone_q, RequestMove)  # the zone does not answer yet: the next action queues
        s1.tell(ClientAction(2, "chat", {"text": "queued"}, time.perf_counter()))
        wait_until(lambda: r.character.proxy().queue.get() and True, what="the chat queued behind the move")
        c2 = FakeConnection()
        start_session(r, fast, c2, Hooks())
        assert frame_of(c2, "welcome")["last_action_seq"] == 2
    finally:
        pykka.ActorRegistry.stop_all()


# ---------------------------------------------------------------- session: resends, hooks, latency


def tight_settings(settings: Settings) -> Settings:
    """At most one unacked action per session; chat as fast as the rules allow."""
    return settings.model_copy(update={
        "session": settings.session.model_copy(update={"max_unacked_actions": 1}),
        "game": settings.game.model_copy(update={"chats_per_second": 200.0})})


def test_the_session_hands_a_resend_it_cannot_answer_to_the_character(settings: Settings) -> None:
    """Not in its own answers nor pending: ResendAnswer to the character, which looks it up
    (reply to the character, never to the session)."""
    r = Rig(settings, record(last_seq=5))
    try:
        conn = FakeConnection()
        s = start_session(r, settings, conn, Hooks())
        frame_of(conn, "welcome")
        s.tell(ClientAction(3, "chat", {"text": "old"}, time.perf_counter()))
        look = take(r.storage_q, LookupAction)
        assert look.reply_to == r.character and look.seq == 3
    finally:
        pykka.ActorRegistry.stop_all()


def test_a_too_fast_reject_records_its_real_latency(settings: Settings) -> None:
    """The session's own ``too_fast`` (max unacked) observes now - received_at, not 0."""
    tight = tight_settings(settings)
    r = Rig(tight, record())
    try:
        conn, hooks = FakeConnection(), Hooks()
        s = start_session(r, tight, conn, hooks)
        frame_of(conn, "welcome")
        s.tell(ClientAction(1, "chat", {"text": "one"}, time.perf_counter()))
        s.tell(ClientAction(2, "chat", {"text": "two"}, time.perf_counter() - 0.25))
        assert frame_of(conn, "reject")["code"] == "too_fast"
        answered = take(hooks.calls, tuple)
        while answered[0] != "answered":
            answered = take(hooks.calls, tuple)
        assert answered[3] == "too_fast" and answered[1] >= 0.25
    finally:
        pykka.ActorRegistry.stop_all()


def test_the_session_reports_welcome_and_resumed_to_its_hooks(settings: Settings) -> None:
    """welcomed() right after the welcome, resumed() right after resumed."""
    r = Rig(settings, record())
    try:
        conn, hooks = FakeConnection(), Hooks()
        s = start_session(r, settings, conn, hooks)
        frame_of(conn, "welcome")
        assert take(hooks.calls, tuple) == ("welcomed",)
        s.tell(ConnectionLost(conn))
        again = FakeConnection()
        s.tell(Resume(again, 0, "t2", time.time() + 60))
        frame_of(again, "resumed")
        assert take(hooks.calls, tuple) == ("resumed",)
    finally:
        pykka.ActorRegistry.stop_all()


# ---------------------------------------------------------------- over real WebSockets


def test_a_rebuilt_ack_has_the_live_acks_state(live_server: Any, database_url: str) -> None:
    """A move, a chat, a pickup and a heal: the state rebuilt from the stored row (as a resend
    after a restart gets it) equals the live ack's."""
    user = uniq("rebuild")
    cid = place(database_url, user, 4, 18, health=50)  # the herb item-13 lies at (5, 18)
    limits = rules.RuleLimits.from_settings(live_server.settings.game)

    async def scenario() -> dict[int, dict[str, Any]]:
        c = await login(live_server.ws_url, issue_dev_token(live_server.settings, user), cid)
        acks = {}
        for send in (lambda: c.move(1, 0), lambda: c.chat("hello"), lambda: c.ability("pickup"),
                     lambda: c.ability("heal")):
            ack = await c.answer(await send())
            assert ack["type"] == "ack", ack
            acks[ack["seq"]] = ack
        c.close()
        return acks

    acks = run(scenario())
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT sequence_number, action_type::text, payload_json FROM action_event"
            " WHERE character_id = %s AND sequence_number IS NOT NULL", (cid,)).fetchall()
    assert len(rows) == 4
    assert "inventory" in acks[3]["state"] and "health" in acks[4]["state"]
    for seq, action_type, payload in rows:
        assert stored_ack_state(action_type, payload, limits) == acks[seq]["state"], (action_type, payload)


def test_a_seq_resent_while_in_flight_gets_exactly_one_answer(live_server: Any, database_url: str) -> None:
    """Re-login while a commit is held back by a row lock, then resend the unanswered seq: the
    new session gets its one ack (the character's), not a second answer from a lookup."""
    user = uniq("inflight")
    cid = place(database_url, user, 30, 13)
    tok = issue_dev_token(live_server.settings, user)

    async def scenario() -> None:
        c1 = await login(live_server.ws_url, tok, cid)
        with psycopg.connect(database_url) as locker:
            locker.execute("SELECT 1 FROM character_profile WHERE character_id = %s FOR UPDATE", (cid,))
            seq = await c1.move(1, 0)
            await async_wait_until(
                lambda: storage_counters(live_server)["parked"] >= 1,
                what="the commit held back by the row lock")
            c2 = await login(live_server.ws_url, tok, cid)
            assert c2.welcome["last_action_seq"] == seq
            await c2.move(1, 0, seq=seq)  # the client resends its unanswered action
            await c2.expect_none(is_type("ack", "reject"), 0.3)
            locker.rollback()
        ack = await c2.answer(seq)
        assert ack["type"] == "ack" and ack["state"] == {"x": 31, "y": 13}
        await c2.expect_none(is_type("ack", "reject"), 0.5)
        assert len(c2.answers[seq]) == 1
        c2.close()

    run(scenario())


def test_stored_ack_state_is_pure() -> None:
    limits = rules.RuleLimits()
    assert stored_ack_state("chat", {"text": "x"}, limits) == {}
    assert stored_ack_state("move", {"x": 1, "y": 2, "dx": 1, "dy": 0, "health": 5, "max_health": 9}, limits) == {
        "x": 1, "y": 2}
    assert stored_ack_state("ability", {"name": "strike", "amount": 3, "target_id": "t"}, limits) == {
        "cooldown_s": float(limits.cooldowns.get("strike", 0.0))}

