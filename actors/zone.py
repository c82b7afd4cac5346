"""The ZoneActor: who stands where on one map, which items lie on it, and who sees whom.

Occupancy is reserved when a move is granted (before its commit), so two characters can never
be granted the same tile. Events are delivered to the sessions whose character is within
``game.view_radius`` tiles (Chebyshev distance) of the event's character, the actor included.
Members are bucketed in square cells of ``view_radius`` tiles, so finding who sees an event
looks at the 3x3 cells around it, not at every member of the zone (thousands of idle players
would otherwise cost every event a scan of all of them).

Several nodes can serve one zone (DESIGN section 8). Each node's ZoneActor holds its own
characters as *local* members and mirrors the other nodes' characters as *remote* members, learnt
from the zone link (``storage.relay.zone_relay``): rosters, enter/leave, committed events and ability
effects. Remote members stand on tiles (a local move onto one is ``occupied``), appear in
snapshots, can be targeted, and their events reach the local sessions that see them. A remote
tile is known once its commit landed on the other node, so two nodes can grant the same tile
in the few milliseconds before they hear of each other's move; the next move resolves it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import Any

import pykka

from actors.base import TilehallActor
from actors.messages import (
    AbilityContext,
    ApplyEffect,
    DeliverEffect,
    DeliverEvent,
    EnterZone,
    FromPeer,
    LeaveZone,
    MoveVerdict,
    PlaceCharacter,
    Publish,
    RequestMove,
    ResolveAbility,
    RespawnItem,
    ReturnItem,
    RosterTick,
    SnapshotFor,
    WorldSnapshotReady,
)
from actors.ports import FrameCodec, ZoneLink
from actors.timers import tell_later
from actors.world_map import ItemSpawn, WorldMap

log = logging.getLogger(__name__)
# The "character" of events about the world itself (an item growing back): the nil UUID.
WORLD_ID = "00000000-0000-0000-0000-000000000000"
VIEW_FIELDS = ("character_id", "display_name", "x", "y", "health", "max_health")


class _Member:
    """A character in the zone: local (its actors are on this node) or remote (``node`` set)."""

    __slots__ = ("view", "character", "session", "position", "node")

    def __init__(
        self, view: dict[str, Any], character: pykka.ActorRef | None, session: pykka.ActorRef | None,
        node: str | None = None,
    ) -> None:
        self.view = view
        self.character = character
        self.session = session
        self.position = (view["x"], view["y"])
        self.node = node


class ZoneActor(TilehallActor):
    """One map region's occupancy, items and observers."""

    def __init__(
        self, world: WorldMap, view_radius: int, item_respawn_s: float, codec: FrameCodec,
        link: ZoneLink | None = None, peer_timeout_s: float = 6.0,
    ) -> None:
        super().__init__()
        self.world = world
        self.codec = codec
        self.view_radius = view_radius
        self.item_respawn_s = item_respawn_s
        self.entity_id = world.map_id
        self.members: dict[str, _Member] = {}
        self.cells: dict[tuple[int, int], dict[str, _Member]] = {}  # cell → members in it
        self.occupied: dict[tuple[int, int], str] = {}
        self.world_items: dict[str, ItemSpawn] = {i.item_id: i for i in world.items}
        self.items = dict(self.world_items)  # those on the map now
        self.link = link
        self.peer_timeout_s = peer_timeout_s
        self.peers: dict[str, float] = {}  # node id → time.monotonic() it was last heard from
        self.debug_status = "0 characters"

    # ---------------------------------------------------------------- membership

    def on_EnterZone(self, msg: EnterZone) -> None:
        """A character enters (or its new session takes over); reply with a snapshot."""
        cid = msg.view["character_id"]
        old = self.members.get(cid)
        if old is not None:
            self._drop(cid, old)
        member = self._add(cid, _Member(msg.view, msg.character, msg.session))
        msg.session.tell(WorldSnapshotReady(self._snapshot(member.position)))
        if self._linked():
            self.link.publish({"t": "enter", "view": _public(msg.view)})

    def on_LeaveZone(self, msg: LeaveZone) -> None:
        """A character leaves; its tile is free again."""
        member = self.members.get(msg.character_id)
        if member is not None and member.node is None:
            self._drop(msg.character_id, member)
            if self._linked():
                self.link.publish({"t": "leave", "character_id": msg.character_id})

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
        granted = member is not None and member.node is None and (holder is None or holder == msg.character_id)
        if granted:
            self._vacate(msg.character_id, member.position)
            self._move(msg.character_id, member, msg.target)
            self.occupied[msg.target] = msg.character_id
        msg.reply_to.tell(MoveVerdict(msg.work_id, granted))

    def on_PlaceCharacter(self, msg: PlaceCharacter) -> None:
        """Put a character where its durable state says (undo a failed move, respawn)."""
        member = self.members.get(msg.character_id)
        if member is None or member.node is not None:
            return
        self._relocate(msg.character_id, member, msg.position)

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
                self._tell_peers_item(item.item_id, on_map=False)
                if self.item_respawn_s > 0:
                    tell_later(self.item_respawn_s, self.actor_ref, RespawnItem(item))
        msg.reply_to.tell(AbilityContext(msg.work_id, target, item))

    def on_ReturnItem(self, msg: ReturnItem) -> None:
        """A pickup failed to commit: the item is back on the map."""
        self.items[msg.item.item_id] = msg.item
        self._tell_peers_item(msg.item.item_id, on_map=True)

    def on_RespawnItem(self, msg: RespawnItem) -> None:
        """A picked-up item lies on the map again; those who see its tile are told."""
        self.items[msg.item.item_id] = msg.item
        self._announce_item(msg.item)
        self._tell_peers_item(msg.item.item_id, on_map=True)

    def _tell_peers_item(self, item_id: str, on_map: bool) -> None:
        if self._linked():
            self.link.publish({"t": "item", "item_id": item_id, "on_map": on_map})

    def _announce_item(self, item: ItemSpawn) -> None:
        """An ``item_spawned`` system event (of the world, not of a character) to the sessions
        that see the item's tile."""
        payload = {"kind": "item_spawned", "item_id": item.item_id, "item_kind": item.kind, "x": item.x, "y": item.y}
        body = self.codec.event_body_json(
            str(uuid.uuid4()), WORLD_ID, "world", "system", payload, dt.datetime.now(dt.UTC)
        )
        self._deliver(WORLD_ID, body, (item.x, item.y), None, include_self=False)

    def on_DeliverEffect(self, msg: DeliverEffect) -> None:
        """Forward an ability's effect to its target's character actor, here or on its node."""
        member = self.members.get(msg.target_id)
        if member is None:
            return
        if member.node is None:
            _tell(member.character, msg.effect)
        elif self.link is not None:
            e = msg.effect
            self.link.publish({"t": "effect", "target": msg.target_id, "effect": {
                "kind": e.kind, "amount": e.amount, "source_id": e.source_id, "source_name": e.source_name}})

    # ---------------------------------------------------------------- events

    def on_Publish(self, msg: Publish) -> None:
        """Update the character's view and deliver the event to every session that sees it.

        A character that moved is seen by those near its old tile too (they watch it leave),
        and its own session is told who came into or went out of its view (``in_view`` /
        ``out_of_view`` system events: presence, not actions, so never persisted). The other
        nodes get the event too."""
        cid = msg.view["character_id"]
        member = self.members.get(cid)
        if member is not None and member.node is not None:
            member = None  # played on another node now: this is a late event of the old session
        old = None
        if member is not None:
            old = (member.view["x"], member.view["y"])
            member.view = msg.view
        new = (msg.view["x"], msg.view["y"])
        nearby = self._deliver(cid, msg.body_json, new, old, msg.include_self)
        if old is not None and old != new:
            self._tell_presence(member, old, new, nearby)
        if self._linked():
            self.link.publish({"t": "event", "view": _public(msg.view), "body": msg.body_json,
                               "from": list(old) if old is not None else None, "member": member is not None})

    def _deliver(
        self, cid: str, body_json: str, new: tuple[int, int], old: tuple[int, int] | None, include_self: bool,
    ) -> dict[str, _Member]:
        """Send an event of ``cid`` (now at ``new``, before at ``old``) to the local sessions
        that see either tile; returns the members looked at."""
        moved = old is not None and old != new
        nearby = dict(self._near(*new))
        if moved:
            nearby.update(self._near(*old))
        delivery = DeliverEvent(body_json)
        for other_id, other in nearby.items():
            if other.session is None or (other_id == cid and not include_self):
                continue
            if self._sees(other.position, new) or (moved and self._sees(other.position, old)):
                _tell(other.session, delivery)
        return nearby

    def _tell_presence(
        self, member: _Member, old: tuple[int, int], new: tuple[int, int], nearby: dict[str, _Member]
    ) -> None:
        cid = member.view["character_id"]
        for other_id, other in nearby.items():
            if other_id == cid:
                continue
            seen = (other.view["x"], other.view["y"])
            before, after = self._sees(seen, old), self._sees(seen, new)
            if before != after:
                _tell(member.session, DeliverEvent(self._presence_body(other.view, after)))

    def _presence_body(self, view: dict[str, Any], visible: bool) -> str:
        """The ``in_view`` / ``out_of_view`` system event of the character ``view``."""
        payload: dict[str, Any] = {"kind": "in_view" if visible else "out_of_view", "x": view["x"], "y": view["y"]}
        if visible:
            payload.update(health=view["health"], max_health=view["max_health"])
        return self.codec.event_body_json(
            str(uuid.uuid4()), view["character_id"], view["display_name"], "system", payload, dt.datetime.now(dt.UTC)
        )

    # ---------------------------------------------------------------- other nodes

    def on_FromPeer(self, msg: FromPeer) -> None:
        """A message from this zone on another node; a malformed one is logged and ignored."""
        m = msg.message
        try:
            node, kind = str(m["node"]), m["t"]
            first = node not in self.peers
            self.peers[node] = time.monotonic()
            if kind == "roster":
                self._apply_roster(node, [_public(v) for v in m["members"]])
                if first and self.link is not None:  # a node we did not know: let it learn ours at once
                    self.link.publish(self._roster())
            elif kind == "bye":
                self._forget_node(node)
            elif kind == "enter":  # its login event follows and tells the viewers
                self._mirror(node, _public(m["view"]), announce=False)
            elif kind == "leave":
                self._unmirror(str(m["character_id"]))
            elif kind == "event":
                came_from = tuple(m["from"]) if m.get("from") is not None else None
                self._peer_event(node, _public(m["view"]), str(m["body"]), came_from, bool(m.get("member", True)))
            elif kind == "item":
                self._peer_item(str(m["item_id"]), bool(m["on_map"]))
            elif kind == "effect":
                member = self.members.get(str(m["target"]))
                if member is not None and member.node is None:
                    e = m["effect"]
                    _tell(member.character, ApplyEffect(
                        str(e["kind"]), int(e["amount"]), str(e["source_id"]), str(e["source_name"])))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("zone %s: ignored a malformed message from a peer: %r (%s)", self.entity_id, m, exc)
        self.debug_status = f"{len(self.members)} characters"

    def on_RosterTick(self, msg: RosterTick) -> None:
        """Tell the other nodes who is here; forget the nodes that stopped telling us."""
        if self.link is not None:
            self.link.publish(self._roster())
        now = time.monotonic()
        for node, heard in list(self.peers.items()):
            if now - heard > self.peer_timeout_s:
                log.warning("zone %s: node %s went quiet; its characters leave this node's view", self.entity_id, node)
                self._forget_node(node)

    def _linked(self) -> bool:
        """Another node is listening. Alone, a node only announces itself (rosters): checked
        before a message is built, since events are on every action's path."""
        return self.link is not None and bool(self.peers)

    def _roster(self) -> dict[str, Any]:
        members = [
            {**_public(m.view), "x": m.position[0], "y": m.position[1]}
            for m in self.members.values() if m.node is None
        ]
        return {"t": "roster", "members": members}

    def _apply_roster(self, node: str, views: list[dict[str, Any]]) -> None:
        listed = {v["character_id"] for v in views}
        for cid, member in list(self.members.items()):
            if member.node == node and cid not in listed:
                self._unmirror(cid)
        for view in views:
            self._mirror(node, view)

    def _forget_node(self, node: str) -> None:
        self.peers.pop(node, None)
        for cid, member in list(self.members.items()):
            if member.node == node:
                self._unmirror(cid)

    def _mirror(self, node: str, view: dict[str, Any], announce: bool = True) -> None:
        """Add or update a remote member; with ``announce`` the local sessions that now see a
        newcomer are told (``in_view``). A character played on this node is never overwritten."""
        cid = view["character_id"]
        member = self.members.get(cid)
        if member is not None and member.node is None:
            return
        new = (view["x"], view["y"])
        if member is None:
            member = self._add(cid, _Member(view, None, None, node))
            if announce:
                self._announce(member, new, visible=True)
            return
        member.view, member.node = view, node
        if member.position != new:
            self._relocate(cid, member, new)

    def _unmirror(self, cid: str) -> None:
        """Drop a remote member; the local sessions that saw it are told (``out_of_view``)."""
        member = self.members.get(cid)
        if member is None or member.node is None:
            return
        self._drop(cid, member)
        self._announce(member, member.position, visible=False)

    def _peer_event(
        self, node: str, view: dict[str, Any], body: str, came_from: tuple[int, int] | None, member_after: bool,
    ) -> None:
        cid = view["character_id"]
        member = self.members.get(cid)
        if member is not None and member.node is None:
            return  # played here now (a takeover): the old node's late events are not news
        # Where our sessions saw it last; the sender's word for it when we had not seen it yet.
        old = member.position if member is not None else came_from
        if member_after:  # (a logout event comes after the leave: nothing to mirror)
            self._mirror(node, view, announce=False)  # the event itself tells the viewers
        self._deliver(cid, body, (view["x"], view["y"]), old, include_self=False)

    def _peer_item(self, item_id: str, on_map: bool) -> None:
        """Another node's player took an item, or it lies on the map again."""
        if not on_map:
            self.items.pop(item_id, None)
        elif (spawn := self.world_items.get(item_id)) is not None and item_id not in self.items:
            self.items[item_id] = spawn
            self._announce_item(spawn)

    def _announce(self, member: _Member, at: tuple[int, int], visible: bool) -> None:
        """Tell the local sessions that see ``at`` that remote ``member`` appeared or vanished there."""
        body = None
        for _, other in self._near(*at):
            if other.session is not None and self._sees(other.position, at):
                body = body or self._presence_body({**member.view, "x": at[0], "y": at[1]}, visible)
                _tell(other.session, DeliverEvent(body))

    def _sees(self, a: tuple[int, int], b: tuple[int, int]) -> bool:
        r = self.view_radius
        return abs(a[0] - b[0]) <= r and abs(a[1] - b[1]) <= r

    # ---------------------------------------------------------------- helpers

    def _add(self, cid: str, member: _Member) -> _Member:
        self.members[cid] = member
        self._cell(member.position)[cid] = member
        self.occupied.setdefault(member.position, cid)
        self.debug_status = f"{len(self.members)} characters"
        return member

    def _relocate(self, cid: str, member: _Member, position: tuple[int, int]) -> None:
        """Move a member to ``position``; it holds that tile unless someone already does."""
        self._vacate(cid, member.position)
        self._move(cid, member, position)
        self.occupied.setdefault(position, cid)

    def _drop(self, cid: str, member: _Member) -> None:
        del self.members[cid]
        self._vacate(cid, member.position)
        self._uncell(cid, member.position)
        self.debug_status = f"{len(self.members)} characters"

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
        remote = sum(1 for m in self.members.values() if m.node is not None)
        return {
            "map_id": self.world.map_id,
            "characters": len(self.members) - remote,
            "remote_characters": remote,
            "peers": sorted(self.peers),
            "items_on_map": len(self.items),
            "view_radius": self.view_radius,
        }


def _public(view: dict[str, Any]) -> dict[str, Any]:
    """The fields of a character every node may show (a KeyError when one is missing)."""
    return {k: view[k] for k in VIEW_FIELDS}


def _tell(ref: pykka.ActorRef, message: Any) -> None:
    try:
        ref.tell(message)
    except pykka.ActorDeadError:  # a session or character that crashed; it leaves the zone soon
        pass
