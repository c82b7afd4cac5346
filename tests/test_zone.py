"""The ZoneActor's who-sees-whom: events reach those near the old or new tile, and a mover is
told who came into and went out of its view; what other nodes tell it (FromPeer) shows up in
its snapshots, presence and occupancy, and a malformed peer message cannot crash it."""

from __future__ import annotations

import json
import queue
from typing import Any

import pykka
import pytest

from actors.base import TilehallActor
from actors.messages import (
    AbilityContext,
    DeliverEvent,
    EnterZone,
    FailNow,
    FromPeer,
    MoveVerdict,
    Publish,
    RequestMove,
    ResolveAbility,
    RosterTick,
    SnapshotFor,
    WorldSnapshotReady,
)
from actors.world_map import ItemSpawn, WorldMap
from actors.zone import WORLD_ID, ZoneActor
from transport.codec import CODEC

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"


class Recorder(TilehallActor):
    """Stands in for a session: puts every DeliverEvent payload on a queue."""

    def __init__(self, out: queue.Queue) -> None:
        super().__init__()
        self.out = out

    def on_DeliverEvent(self, msg: DeliverEvent) -> None:
        self.out.put(json.loads(msg.body_json))

    def on_WorldSnapshotReady(self, msg: WorldSnapshotReady) -> None:
        self.out.put({"snapshot": msg.world})


def _view(cid: str, name: str, x: int, y: int) -> dict[str, Any]:
    return {"character_id": cid, "display_name": name, "x": x, "y": y, "health": 90, "max_health": 100}


def _next(q: queue.Queue, pred) -> dict:
    while True:
        item = q.get(timeout=5)
        if pred(item):
            return item


@pytest.fixture
def zone():
    world = WorldMap.from_rows(["." * 60] * 10, spawn_points=[(0, 0)])
    ref = ZoneActor.start(world, 5, 0, CODEC)
    yield ref
    pykka.ActorRegistry.stop_all()


def test_moving_into_and_out_of_view(zone) -> None:
    qa, qb = queue.Queue(), queue.Queue()
    sa, sb = Recorder.start(qa), Recorder.start(qb)
    zone.tell(EnterZone(_view(A, "ann", 1, 1), sa, sa))
    zone.tell(EnterZone(_view(B, "bob", 30, 1), sb, sb))
    assert [c["character_id"] for c in _next(qa, lambda m: "snapshot" in m)["snapshot"]["characters"]] == [A]
    _next(qb, lambda m: "snapshot" in m)

    body = CODEC.event_body_json(B, B, "bob", "move", {"x": 6, "y": 1, "dx": -1, "dy": 0}, "2026-01-01T00:00:00Z")
    zone.tell(Publish(body, _view(B, "bob", 6, 1)))
    seen = _next(qb, lambda m: m.get("payload", {}).get("kind") == "in_view")
    assert seen["character_id"] == A and seen["payload"]["health"] == 90
    assert _next(qa, lambda m: m.get("action_type") == "move")["character_id"] == B

    body = CODEC.event_body_json(B, B, "bob", "move", {"x": 30, "y": 1, "dx": 1, "dy": 0}, "2026-01-01T00:00:01Z")
    zone.tell(Publish(body, _view(B, "bob", 30, 1)))
    gone = _next(qb, lambda m: m.get("payload", {}).get("kind") == "out_of_view")
    assert gone["character_id"] == A
    # Ann still sees Bob leave: his move reaches her although its new tile is out of her view.
    assert _next(qa, lambda m: m.get("action_type") == "move")["payload"]["x"] == 30


# ---------------------------------------------------------------- other nodes (FromPeer)


class Link:
    """The zone's line to the other nodes, recording what the zone publishes."""

    def __init__(self) -> None:
        self.sent: queue.Queue = queue.Queue()

    def publish(self, message: dict[str, Any]) -> None:
        self.sent.put(message)


@pytest.fixture
def linked():
    """A zone on a 60x10 open map with an item at (3, 1), and the link it publishes on."""
    world = WorldMap.from_rows(["." * 60] * 10, spawn_points=[(0, 0)], items=[ItemSpawn("gem-1", "gem", 3, 1)])
    link = Link()
    ref = ZoneActor.start(world, 5, 0, CODEC, link)
    yield ref, link
    pykka.ActorRegistry.stop_all()


def _snapshot(zone, session, q: queue.Queue, cid: str, x: int, y: int) -> dict:
    zone.tell(EnterZone(_view(cid, cid[-1], x, y), session, session))
    return _next(q, lambda m: "snapshot" in m)["snapshot"]


def test_a_new_peer_gets_our_roster_at_once_and_its_characters_appear(linked) -> None:
    zone, link = linked
    q = queue.Queue()
    s = Recorder.start(q)
    _snapshot(zone, s, q, A, 1, 1)
    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "roster", "members": [_view(B, "bob", 2, 1)]}))
    roster = _next(link.sent, lambda m: m.get("t") == "roster")
    assert [v["character_id"] for v in roster["members"]] == [A]
    seen = _next(q, lambda m: m.get("payload", {}).get("kind") == "in_view")
    assert (seen["character_id"], seen["payload"]["x"]) == (B, 2)
    describe = zone.proxy().describe().get(timeout=5)
    assert (describe["remote_characters"], describe["peers"]) == (1, ["n2"])


def test_a_malformed_peer_message_is_ignored_and_the_zone_goes_on(linked) -> None:
    zone, _ = linked
    q = queue.Queue()
    s = Recorder.start(q)
    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "roster", "members": [{"character_id": B}]}))
    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "event", "view": None, "body": 3}))
    zone.tell(FromPeer({"v": 1, "t": "enter"}))
    snap = _snapshot(zone, s, q, A, 1, 1)
    assert [c["character_id"] for c in snap["characters"]] == [A]
    assert zone.is_alive()


def test_items_taken_and_back_on_another_node(linked) -> None:
    zone, _ = linked
    q = queue.Queue()
    s = Recorder.start(q)
    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "item", "item_id": "gem-1", "on_map": False}))
    assert _snapshot(zone, s, q, A, 1, 1)["items"] == []
    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "item", "item_id": "gem-1", "on_map": True}))
    assert [i["item_id"] for i in _snapshot(zone, s, q, A, 1, 1)["items"]] == ["gem-1"]


def test_a_local_move_onto_a_remote_characters_tile_is_refused(linked) -> None:
    zone, _ = linked
    q = queue.Queue()
    s = Recorder.start(q)
    _snapshot(zone, s, q, A, 1, 1)
    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "enter", "view": _view(B, "bob", 2, 1)}))
    verdicts: queue.Queue = queue.Queue()

    class Mover(TilehallActor):
        def on_MoveVerdict(self, msg: MoveVerdict) -> None:
            verdicts.put(msg.granted)

    mover = Mover.start()
    zone.tell(RequestMove(A, (2, 1), 1, mover))
    assert verdicts.get(timeout=5) is False
    zone.tell(RequestMove(A, (1, 2), 2, mover))
    assert verdicts.get(timeout=5) is True


def test_an_item_growing_back_is_announced_to_those_who_see_it() -> None:
    world = WorldMap.from_rows(["." * 60] * 10, spawn_points=[(0, 0)], items=[ItemSpawn("herb-1", "herb", 3, 1)])
    zone = ZoneActor.start(world, 5, 0.05, CODEC)
    try:
        near, far = queue.Queue(), queue.Queue()
        s_near, s_far = Recorder.start(near), Recorder.start(far)
        zone.tell(EnterZone(_view(A, "ann", 3, 1), s_near, s_near))
        zone.tell(EnterZone(_view(B, "bob", 50, 1), s_far, s_far))
        contexts: queue.Queue = queue.Queue()

        class Picker(TilehallActor):
            def on_AbilityContext(self, msg: AbilityContext) -> None:
                contexts.put(msg.item)

        zone.tell(ResolveAbility(A, "pickup", None, (3, 1), 1, Picker.start()))
        assert contexts.get(timeout=5).item_id == "herb-1"  # taken off the map
        spawned = _next(near, lambda m: m.get("payload", {}).get("kind") == "item_spawned")
        assert spawned["character_id"] == WORLD_ID and spawned["display_name"] == "world"
        assert spawned["payload"] == {"kind": "item_spawned", "item_id": "herb-1", "item_kind": "herb", "x": 3, "y": 1}
        # Bob, 47 tiles away, is not told: his inbox holds two snapshots and nothing between
        # (the second asked for after the announcement, so anything told him would precede it).
        zone.tell(EnterZone(_view(B, "bob", 50, 1), s_far, s_far))
        got = [far.get(timeout=5), far.get(timeout=5)]
        assert all("snapshot" in m for m in got), got
        assert [i["item_id"] for i in got[1]["snapshot"]["items"]] == ["herb-1"]
    finally:
        pykka.ActorRegistry.stop_all()


# ---------------------------------------------------------------- issue 10: peers, items, supervision


def test_peer_messages_with_bad_fields_are_dropped_whole(linked) -> None:
    """A bool or a string for a coordinate, a tile off the map, health above max, an unknown
    kind, a non-bool on_map: each is dropped before it changes anything."""
    zone, _ = linked
    q = queue.Queue()
    s = Recorder.start(q)
    bad_views = [{**_view(B, "bob", 2, 1), "x": True}, {**_view(B, "bob", 2, 1), "x": "2"},
                 {**_view(B, "bob", 2, 1), "y": 99}, {**_view(B, "bob", 2, 1), "health": 101},
                 {**_view(B, "bob", 2, 1), "x": 2.0}]
    for view in bad_views:
        zone.tell(FromPeer({"v": 1, "node": "n2", "t": "enter", "view": view}))
        zone.tell(FromPeer({"v": 1, "node": "n2", "t": "roster", "members": [view]}))
    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "zap"}))
    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "item", "item_id": "gem-1", "on_map": "no"}))
    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "item", "item_id": "gem-1", "on_map": 0}))
    snap = _snapshot(zone, s, q, A, 1, 1)
    assert [c["character_id"] for c in snap["characters"]] == [A]
    assert [i["item_id"] for i in snap["items"]] == ["gem-1"]
    assert zone.proxy().describe().get(timeout=5)["remote_characters"] == 0
    assert zone.is_alive()


def test_a_negative_damage_effect_from_a_peer_does_not_crash_the_character(linked, settings) -> None:
    from actors.character import CharacterActor
    from actors.messages import AttachSession, Persist
    from storage.postgres.characters import CharacterRecord

    zone, _ = linked
    world = WorldMap.from_rows(["." * 60] * 10, spawn_points=[(0, 0)])
    storage_q, session_q = queue.Queue(), queue.Queue()

    class Sink(TilehallActor):
        def __init__(self, out: queue.Queue) -> None:
            super().__init__()
            self.out = out

        def on_receive(self, message: Any) -> Any:
            self.out.put(message)

    storage, session = Sink.start(storage_q), Sink.start(session_q)
    rec = CharacterRecord(A, "user-a", "ann", 1, 1, 90, 100, {"items": []}, {"max_health": 100}, 0, 1)
    character = CharacterActor.start(rec, world, settings, storage, zone, CODEC)
    character.tell(AttachSession(session, "s1"))
    _next(storage_q, lambda m: isinstance(m, Persist))  # the login event
    effect = {"kind": "damage", "amount": -50, "source_id": B, "source_name": "bob"}
    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "effect", "target": A, "effect": effect}))
    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "effect", "target": A, "effect": {**effect, "amount": 10**9}}))
    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "effect", "target": A, "effect": {**effect, "kind": "poison"}}))
    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "effect", "target": A, "effect": {**effect, "amount": 3}}))
    damage = _next(storage_q, lambda m: isinstance(m, Persist))
    assert json.loads(damage.events[0].payload_json)["amount"] == 3  # the first valid one
    assert character.is_alive()


def test_an_item_comes_back_only_from_the_node_that_took_it(linked) -> None:
    """Taken on n2: n3's word does not bring it back, n2's does. Held by a player here: no
    node's word brings it back. A roster's ``taken`` list takes it off the map."""
    zone, link = linked
    q = queue.Queue()
    s = Recorder.start(q)

    def items() -> list[str]:
        return [i["item_id"] for i in _snapshot(zone, s, q, A, 1, 1)["items"]]

    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "item", "item_id": "gem-1", "on_map": False}))
    zone.tell(FromPeer({"v": 1, "node": "n3", "t": "item", "item_id": "gem-1", "on_map": True}))
    assert items() == []
    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "item", "item_id": "gem-1", "on_map": True}))
    assert items() == ["gem-1"]

    contexts: queue.Queue = queue.Queue()

    class Picker(TilehallActor):
        def on_AbilityContext(self, msg: AbilityContext) -> None:
            contexts.put(msg.item)

    zone.tell(ResolveAbility(A, "pickup", None, (3, 1), 1, Picker.start()))
    assert contexts.get(timeout=5).item_id == "gem-1"
    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "item", "item_id": "gem-1", "on_map": True}))
    assert items() == []
    zone.tell(RosterTick())
    roster = _next(link.sent, lambda m: m.get("t") == "roster")
    assert roster["taken"] == ["gem-1"]


def test_a_roster_lists_what_its_node_holds(linked) -> None:
    zone, _ = linked
    q = queue.Queue()
    s = Recorder.start(q)
    zone.tell(FromPeer({"v": 1, "node": "n2", "t": "roster", "members": [], "taken": ["gem-1"]}))
    assert _snapshot(zone, s, q, A, 1, 1)["items"] == []


def test_replies_to_stopped_actors_do_not_kill_the_zone_and_its_death_is_reported() -> None:
    world = WorldMap.from_rows(["." * 60] * 10, spawn_points=[(0, 0)], items=[ItemSpawn("gem-1", "gem", 3, 1)])
    died: queue.Queue = queue.Queue()
    zone = ZoneActor.start(world, 5, 0, CODEC, on_died=died.put)
    try:
        q = queue.Queue()
        s = Recorder.start(q)
        gone = Recorder.start(queue.Queue())
        gone.stop()
        zone.tell(EnterZone(_view(A, "ann", 3, 1), gone, gone))  # its session stopped first
        zone.tell(RequestMove(A, (4, 1), 1, gone))
        zone.tell(ResolveAbility(A, "pickup", None, (3, 1), 2, gone))
        zone.tell(SnapshotFor(A, gone))
        snap = _snapshot(zone, s, q, B, 10, 1)
        assert [i["item_id"] for i in snap["items"]] == ["gem-1"]  # nobody took it: back on the map
        assert zone.is_alive()
        zone.tell(FailNow())
        assert isinstance(died.get(timeout=5), RuntimeError)
    finally:
        pykka.ActorRegistry.stop_all()


def test_a_stale_actors_leave_does_not_remove_the_characters_new_actor(zone) -> None:
    """A fenced (old) character actor leaves after a new actor of the same character entered:
    the new one stays in the zone."""
    from actors.messages import LeaveZone

    q = queue.Queue()
    s = Recorder.start(q)
    old, new = Recorder.start(queue.Queue()), Recorder.start(queue.Queue())
    zone.tell(EnterZone(_view(A, "ann", 1, 1), old, s))
    zone.tell(EnterZone(_view(A, "ann", 1, 1), new, s))
    zone.tell(LeaveZone(A, old))
    zone.tell(EnterZone(_view(B, "bob", 2, 1), s, s))
    snaps = [_next(q, lambda m: "snapshot" in m) for _ in range(3)]
    assert sorted(c["character_id"] for c in snaps[-1]["snapshot"]["characters"]) == [A, B]
    zone.tell(LeaveZone(A, new))
    zone.tell(EnterZone(_view(B, "bob", 2, 1), s, s))
    assert [c["character_id"] for c in _next(q, lambda m: "snapshot" in m)["snapshot"]["characters"]] == [B]
