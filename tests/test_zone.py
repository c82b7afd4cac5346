"""The ZoneActor's who-sees-whom: events reach those near the old or new tile, and a mover is
told who came into and went out of its view."""

from __future__ import annotations

import json
import queue
from typing import Any

import pykka
import pytest

from actors.base import TilehallActor
from actors.messages import DeliverEvent, EnterZone, Publish, WorldSnapshotReady
from actors.world_map import WorldMap
from actors.zone import ZoneActor
from transport.frames import CODEC

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
