"""The ZoneActor: who stands where on one map, which items lie on it, and who sees whom.

Occupancy is reserved when a move is granted (before its commit), so two characters can never
be granted the same tile. Events are delivered to the sessions whose character is within
``game.view_radius`` tiles (Chebyshev distance) of the event's character, the actor included.
Members are bucketed in square cells of ``view_radius`` tiles, so finding who sees an event
looks at the 3x3 cells around it, not at every member of the zone (thousands of idle players
would otherwise cost every event a scan of all of them).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pykka

from actors.base import TilehallActor
from actors.messages import (
    AbilityContext,
    DeliverEffect,
    DeliverEvent,
    EnterZone,
    LeaveZone,
    MoveVerdict,
    PlaceCharacter,
    Publish,
    RequestMove,
    ResolveAbility,
    RespawnItem,
    ReturnItem,
    SnapshotFor,
    WorldSnapshotReady,
)
from actors.ports import FrameCodec
from actors.timers import tell_later
from actors.world_map import ItemSpawn, WorldMap


class _Member:
    __slots__ = ("view", "character", "session", "position")

    def __init__(self, view: dict[str, Any], character: pykka.ActorRef, session: pykka.ActorRef) -> None:
        self.view = view
        self.character = character
        self.session = session
        self.position = (view["x"], view["y"])


class ZoneActor(TilehallActor):
    """One map region's occupancy, items and observers."""

    def __init__(self, world: WorldMap, view_radius: int, item_respawn_s: float, codec: FrameCodec) -> None:
        super().__init__()
        self.world = world
        self.codec = codec
        self.view_radius = view_radius
        self.item_respawn_s = item_respawn_s
        self.entity_id = world.map_id
        self.members: dict[str, _Member] = {}
        self.cells: dict[tuple[int, int], dict[str, _Member]] = {}  # cell → members in it
        self.occupied: dict[tuple[int, int], str] = {}
        self.items: dict[str, ItemSpawn] = {i.item_id: i for i in world.items}
        self.debug_status = "0 characters"

    # ---------------------------------------------------------------- membership

    def on_EnterZone(self, msg: EnterZone) -> None:
        """A character enters (or its new session takes over); reply with a snapshot."""
        cid = msg.view["character_id"]
        old = self.members.get(cid)
        if old is not None:
            self._vacate(cid, old.position)
            self._uncell(cid, old.position)
        member = _Member(msg.view, msg.character, msg.session)
        self.members[cid] = member
        self._cell(member.position)[cid] = member
        self.occupied.setdefault(member.position, cid)
        self.debug_status = f"{len(self.members)} characters"
        msg.session.tell(WorldSnapshotReady(self._snapshot(member.position)))

    def on_LeaveZone(self, msg: LeaveZone) -> None:
        """A character leaves; its tile is free again."""
        member = self.members.pop(msg.character_id, None)
        if member is not None:
            self._vacate(msg.character_id, member.position)
            self._uncell(msg.character_id, member.position)
        self.debug_status = f"{len(self.members)} characters"

    def on_SnapshotFor(self, msg: SnapshotFor) -> None:
        """A fresh snapshot for a resuming session."""
        member = self.members.get(msg.character_id)
        center = member.position if member else self.world.spawn_points[0]
        msg.session.tell(WorldSnapshotReady(self._snapshot(center)))

    # ---------------------------------------------------------------- moves and abilities

    def on_RequestMove(self, msg: RequestMove) -> None:
        """Grant the step when the target tile is free, reserving it at once."""
        member = self.members.get(msg.character_id)
        holder = self.occupied.get(msg.target)
        granted = member is not None and (holder is None or holder == msg.character_id)
        if granted:
            self._vacate(msg.character_id, member.position)
            self._move(msg.character_id, member, msg.target)
            self.occupied[msg.target] = msg.character_id
        msg.reply_to.tell(MoveVerdict(msg.work_id, granted))

    def on_PlaceCharacter(self, msg: PlaceCharacter) -> None:
        """Put a character where its durable state says (undo a failed move, respawn)."""
        member = self.members.get(msg.character_id)
        if member is None:
            return
        self._vacate(msg.character_id, member.position)
        self._move(msg.character_id, member, msg.position)
        self.occupied.setdefault(msg.position, msg.character_id)

    def on_ResolveAbility(self, msg: ResolveAbility) -> None:
        """The target's current view and, for pickup, the item on the tile (taken off the map)."""
        target = None
        if msg.target_id is not None:
            other = self.members.get(msg.target_id)
            if other is not None:
                target = {**other.view, "x": other.position[0], "y": other.position[1]}
        item = None
        if msg.name == "pickup":
            item = next(
                (i for i in self.items.values() if (i.x, i.y) == msg.position), None
            )
            if item is not None:
                del self.items[item.item_id]
                if self.item_respawn_s > 0:
                    tell_later(self.item_respawn_s, self.actor_ref, RespawnItem(item))
        msg.reply_to.tell(AbilityContext(msg.work_id, target, item))

    def on_ReturnItem(self, msg: ReturnItem) -> None:
        """A pickup failed to commit: the item is back on the map."""
        self.items[msg.item.item_id] = msg.item

    def on_RespawnItem(self, msg: RespawnItem) -> None:
        """A picked-up item lies on the map again (players see it in their next snapshot)."""
        self.items[msg.item.item_id] = msg.item

    def on_DeliverEffect(self, msg: DeliverEffect) -> None:
        """Forward an ability's effect to its target's character actor (if still here)."""
        member = self.members.get(msg.target_id)
        if member is not None:
            member.character.tell(msg.effect)

    # ---------------------------------------------------------------- events

    def on_Publish(self, msg: Publish) -> None:
        """Update the character's view and deliver the event to every session that sees it.

        A character that moved is seen by those near its old tile too (they watch it leave),
        and its own session is told who came into or went out of its view (``in_view`` /
        ``out_of_view`` system events: presence, not actions, so never persisted)."""
        cid = msg.view["character_id"]
        x, y = msg.view["x"], msg.view["y"]
        member = self.members.get(cid)
        old = None
        if member is not None:
            old = (member.view["x"], member.view["y"])
            member.view = msg.view
        moved = old is not None and old != (x, y)
        nearby = dict(self._near(x, y))
        if moved:
            nearby.update(self._near(*old))
        delivery = DeliverEvent(msg.body_json)
        for other_id, other in nearby.items():
            if other_id == cid and not msg.include_self:
                continue
            ox, oy = other.position
            if self._sees((ox, oy), (x, y)) or (moved and self._sees((ox, oy), old)):
                _tell(other.session, delivery)
        if moved:
            self._tell_presence(member, old, (x, y), nearby)

    def _tell_presence(
        self, member: _Member, old: tuple[int, int], new: tuple[int, int], nearby: dict[str, _Member]
    ) -> None:
        cid = member.view["character_id"]
        now = dt.datetime.now(dt.UTC)
        for other_id, other in nearby.items():
            if other_id == cid:
                continue
            seen = (other.view["x"], other.view["y"])
            before, after = self._sees(seen, old), self._sees(seen, new)
            if before == after:
                continue
            v = other.view
            payload: dict[str, Any] = {"kind": "in_view" if after else "out_of_view", "x": v["x"], "y": v["y"]}
            if after:
                payload.update(health=v["health"], max_health=v["max_health"])
            body = self.codec.event_body_json(
                str(uuid.uuid4()), other_id, v["display_name"], "system", payload, now
            )
            _tell(member.session, DeliverEvent(body))

    def _sees(self, a: tuple[int, int], b: tuple[int, int]) -> bool:
        r = self.view_radius
        return abs(a[0] - b[0]) <= r and abs(a[1] - b[1]) <= r

    # ---------------------------------------------------------------- helpers

    def _vacate(self, cid: str, position: tuple[int, int]) -> None:
        if self.occupied.get(position) == cid:
            del self.occupied[position]

    def _cell(self, position: tuple[int, int]) -> dict[str, _Member]:
        key = (position[0] // self.view_radius, position[1] // self.view_radius)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = {}
        return cell

    def _uncell(self, cid: str, position: tuple[int, int]) -> None:
        key = (position[0] // self.view_radius, position[1] // self.view_radius)
        cell = self.cells.get(key)
        if cell is not None:
            cell.pop(cid, None)
            if not cell:
                del self.cells[key]

    def _move(self, cid: str, member: _Member, position: tuple[int, int]) -> None:
        r = self.view_radius
        old = member.position
        member.position = position
        if (old[0] // r, old[1] // r) != (position[0] // r, position[1] // r):
            self._uncell(cid, old)
            self._cell(position)[cid] = member

    def _near(self, x: int, y: int) -> list[tuple[str, _Member]]:
        """Members of the 3x3 cells around (x, y): everyone within view_radius is among them."""
        r = self.view_radius
        cx, cy = x // r, y // r
        out: list[tuple[str, _Member]] = []
        for ky in (cy - 1, cy, cy + 1):
            for kx in (cx - 1, cx, cx + 1):
                cell = self.cells.get((kx, ky))
                if cell:
                    out.extend(cell.items())
        return out

    def _snapshot(self, center: tuple[int, int]) -> dict[str, Any]:
        cx, cy = center
        r = self.view_radius
        chars = [
            {**m.view, "x": m.position[0], "y": m.position[1]}
            for _, m in self._near(cx, cy)
            if abs(m.position[0] - cx) <= r and abs(m.position[1] - cy) <= r
        ]
        items = [
            {"item_id": i.item_id, "kind": i.kind, "x": i.x, "y": i.y} for i in self.items.values()
        ]
        return {
            "map_id": self.world.map_id,
            "width": self.world.width,
            "height": self.world.height,
            "characters": chars,
            "items": items,
        }

    def describe(self) -> dict[str, Any]:
        """Zone summary for /debug/actors."""
        return {
            "map_id": self.world.map_id,
            "characters": len(self.members),
            "items_on_map": len(self.items),
            "view_radius": self.view_radius,
        }


def _tell(session: pykka.ActorRef, message: Any) -> None:
    try:
        session.tell(message)
    except pykka.ActorDeadError:  # a session that crashed; its character leaves soon
        pass
