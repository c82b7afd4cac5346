"""The ZoneActor: who stands where on one map, which items lie on it, and who sees whom.

Occupancy is reserved when a move is granted (before its commit), so two characters can never
be granted the same tile. Events are delivered to the sessions whose character is within
``game.view_radius`` tiles (Chebyshev distance) of the event's character, the actor included.
Members are bucketed in cells (``actors.zone_grid``), so finding who sees an event looks at
the cells around it, not at every member of the zone (thousands of idle players would otherwise
cost every event a scan of all of them).

Several nodes can serve one zone (DESIGN section 8). Each node's ZoneActor holds its own
characters as *local* members and mirrors the other nodes' characters as *remote* members
(``actors.zone_peers``, over the zone link ``storage.relay.zone_relay``). Remote members stand on
tiles (a local move onto one is ``occupied``), appear in snapshots, can be targeted, and their
events reach the local sessions that see them.

Items across nodes: a pickup takes the item off this node's map at once and tells the other
nodes (an ``item`` message, and every roster lists the items this node's players hold that are
not back yet); an item comes back on this map from another node only if that node took it
(``taken_by``), and never while a player of this node holds it. What stays open without a
shared item store (the zone does no I/O): two nodes that grant a pickup of the same item within
the few milliseconds before either hears of the other's both give it to their player; each
node's item then comes back by its own respawn.

Supervision: no handler replies with a bare tell (a reply to an actor that stopped first must
not crash the zone); if the zone dies anyway, ``on_died`` (the node's supervisor) is called.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from typing import Any

from actors.base import TilehallActor, tell_if_alive
from actors.messages import (
    AbilityContext,
    Announce,
    DeliverEffect,
    DeliverEvent,
    EnterZone,
    FailNow,
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
from actors.zone_grid import Member, ZoneGrid
from actors.zone_peers import ZonePeers

log = logging.getLogger(__name__)

# The "character" of events about the world itself (an item growing back): the nil UUID.
WORLD_ID = "00000000-0000-0000-0000-000000000000"


class ZoneActor(TilehallActor):
    """One map region's occupancy, items and observers."""

    def __init__(
        self, world: WorldMap, view_radius: int, item_respawn_s: float, codec: FrameCodec,
        link: ZoneLink | None = None, peer_timeout_s: float = 6.0,
        on_died: Callable[[BaseException], None] | None = None,
    ) -> None:
        super().__init__()
        self.world = world
        self.codec = codec
        self.view_radius = view_radius
        self.item_respawn_s = item_respawn_s
        self.entity_id = world.map_id
        self.grid = ZoneGrid(view_radius)
        self.world_items: dict[str, ItemSpawn] = {i.item_id: i for i in world.items}
        self.items = dict(self.world_items)  # those on the map now
        self.taken_here: dict[str, int] = {}  # item → its pickup number, held by a player of this node
        self.taken_by: dict[str, str] = {}  # item → the other node whose player took it
        self._pickups = 0
        self.on_died = on_died
        self.peers = ZonePeers(
            world.map_id, link, peer_timeout_s, self.grid,
            show=self._show, deliver=self._peer_deliver, item_moved=self._peer_item,
            taken=lambda: sorted(self.taken_here), node_gone=self._node_gone, bounds=(world.width, world.height),
            announced=self._deliver_to_all,
        )
        self.debug_status = "0 characters"

    # ---------------------------------------------------------------- membership

    def on_EnterZone(self, msg: EnterZone) -> None:
        """A character enters (or its new session takes over); reply with a snapshot."""
        cid = msg.view["character_id"]
        old = self.grid.members.get(cid)
        if old is not None:
            self._drop(cid, old)
        member = self._add(cid, Member(msg.view, msg.character, msg.session))
        tell_if_alive(msg.session, WorldSnapshotReady(self._snapshot(member.position)))
        self.peers.entered(msg.view)

    def on_LeaveZone(self, msg: LeaveZone) -> None:
        """A character leaves; its tile is free again. A leave from an actor that is no longer
        the member (a stale actor after a newer one entered) changes nothing."""
        member = self.grid.members.get(msg.character_id)
        if member is None or member.node is not None:
            return
        if msg.character is None or member.character == msg.character:
            self._drop(msg.character_id, member)
            self.peers.left(msg.character_id)

    def on_SnapshotFor(self, msg: SnapshotFor) -> None:
        """A fresh snapshot for a resuming session."""
        member = self.grid.members.get(msg.character_id)
        center = member.position if member else self.world.spawn_points[0]
        tell_if_alive(msg.session, WorldSnapshotReady(self._snapshot(center)))

    # ---------------------------------------------------------------- moves and abilities

    def on_RequestMove(self, msg: RequestMove) -> None:
        """Grant the step when the target tile is free, reserving it at once."""
        member = self.grid.members.get(msg.character_id)
        holder = self.grid.occupied.get(msg.target)
        granted = member is not None and member.node is None and (holder is None or holder == msg.character_id)
        if granted:
            self.grid.step(msg.character_id, member, msg.target)
        tell_if_alive(msg.reply_to, MoveVerdict(msg.work_id, granted))

    def on_PlaceCharacter(self, msg: PlaceCharacter) -> None:
        """Put a character where its durable state says (undo a failed move, respawn)."""
        member = self.grid.members.get(msg.character_id)
        if member is None or member.node is not None:
            return
        self.grid.relocate(msg.character_id, member, msg.position)

    def on_ResolveAbility(self, msg: ResolveAbility) -> None:
        """The target's current view and, for pickup, the item on the tile (taken off the map)."""
        target = None
        if msg.target_id is not None:
            other = self.grid.members.get(msg.target_id)
            if other is not None:
                target = {**other.view, "x": other.position[0], "y": other.position[1]}
        item = None
        if msg.name == "pickup":
            item = next(
                (i for i in self.items.values() if (i.x, i.y) == msg.position), None
            )
            if item is not None:
                del self.items[item.item_id]
                self._pickups += 1
                self.taken_here[item.item_id] = self._pickups
                self.peers.item(item.item_id, on_map=False)
                if self.item_respawn_s > 0:
                    tell_later(self.item_respawn_s, self.actor_ref, RespawnItem(item, self._pickups))
        if not tell_if_alive(msg.reply_to, AbilityContext(msg.work_id, target, item)) and item is not None:
            self.on_ReturnItem(ReturnItem(item))  # the character stopped first: nobody holds it

    def on_ReturnItem(self, msg: ReturnItem) -> None:
        """A pickup failed to commit: the item is back on the map."""
        if self.taken_here.pop(msg.item.item_id, None) is None:
            return  # not held here (already back, or taken by another node meanwhile)
        self.items[msg.item.item_id] = msg.item
        self.peers.item(msg.item.item_id, on_map=True)

    def on_RespawnItem(self, msg: RespawnItem) -> None:
        """A picked-up item lies on the map again; those who see its tile are told. The timer
        of an older pickup of the same item (returned, then taken again) does nothing."""
        item_id = msg.item.item_id
        if msg.pickup:
            if self.taken_here.get(item_id) != msg.pickup:
                return
            del self.taken_here[item_id]
        elif item_id in self.taken_here or item_id in self.taken_by or item_id in self.items:
            return  # taken again (here or elsewhere) since its node went away, or already back
        self.items[msg.item.item_id] = msg.item
        self._announce_item(msg.item)
        self.peers.item(msg.item.item_id, on_map=True)

    def _announce_item(self, item: ItemSpawn) -> None:
        """An ``item_spawned`` system event (of the world, not of a character) to the sessions
        that see the item's tile."""
        payload = {"kind": "item_spawned", "item_id": item.item_id, "item_kind": item.kind, "x": item.x, "y": item.y}
        body = self.codec.event_body_json(
            str(uuid.uuid4()), WORLD_ID, "world", "system", payload, dt.datetime.now(dt.UTC)
        )
        self._deliver(WORLD_ID, body, (item.x, item.y), None, include_self=False)

    def on_Announce(self, msg: Announce) -> int:
        """An operator's ``announcement`` (of the world, not stored) to every session of the
        zone, here and on the other nodes; answers how many sessions of this node it reached."""
        payload = {"kind": "announcement", "text": msg.text}
        body = self.codec.event_body_json(
            str(uuid.uuid4()), WORLD_ID, "operator", "system", payload, dt.datetime.now(dt.UTC))
        self.peers.announce(body)
        return self._deliver_to_all(body)

    def _deliver_to_all(self, body: str) -> int:
        delivery = DeliverEvent(body)
        return sum(tell_if_alive(m.session, delivery) for m in list(self.grid.members.values())
                   if m.session is not None and m.node is None)

    def on_DeliverEffect(self, msg: DeliverEffect) -> None:
        """Forward an ability's effect to its target's character actor, here or on its node."""
        member = self.grid.members.get(msg.target_id)
        if member is None:
            return
        if member.node is None:
            tell_if_alive(member.character, msg.effect)
        else:
            self.peers.effect(msg.target_id, msg.effect)

    # ---------------------------------------------------------------- events

    def on_Publish(self, msg: Publish) -> None:
        """Update the character's view and deliver the event to every session that sees it.

        A character that moved is seen by those near its old tile too (they watch it leave),
        and its own session is told who came into or went out of its view (``in_view`` /
        ``out_of_view`` system events: presence, not actions, so never persisted). The other
        nodes get the event too."""
        cid = msg.view["character_id"]
        member = self.grid.members.get(cid)
        if member is not None and member.node is not None:
            member = None  # played on another node now: this is a late event of the old session
        old = None
        if member is not None:
            old = (member.view["x"], member.view["y"])
            member.view = msg.view
        new = (msg.view["x"], msg.view["y"])
        nearby = self._deliver(cid, msg.body_json, new, old, msg.include_self, msg.answered)
        if old is not None and old != new:
            self._tell_presence(member, old, new, nearby)
        self.peers.event(msg.view, msg.body_json, old, member is not None)

    def _deliver(
        self, cid: str, body_json: str, new: tuple[int, int], old: tuple[int, int] | None, include_self: bool,
        answered: str | None = None,
    ) -> dict[str, Member]:
        """Send an event of ``cid`` (now at ``new``, before at ``old``) to the local sessions
        that see either tile, but not to ``cid``'s own session when it is ``answered`` (an actor
        urn: that session got the event with its ack); returns the members looked at."""
        moved = old is not None and old != new
        nearby = dict(self.grid.near(*new))
        if moved:
            nearby.update(self.grid.near(*old))
        delivery = DeliverEvent(body_json)
        for other_id, other in nearby.items():
            if other.session is None or (other_id == cid and (
                    not include_self or other.session.actor_urn == answered)):
                continue
            if self.grid.sees(other.position, new) or (moved and self.grid.sees(other.position, old)):
                tell_if_alive(other.session, delivery)
        return nearby

    def _tell_presence(
        self, member: Member, old: tuple[int, int], new: tuple[int, int], nearby: dict[str, Member]
    ) -> None:
        cid = member.view["character_id"]
        for other_id, other in nearby.items():
            if other_id == cid:
                continue
            seen = (other.view["x"], other.view["y"])
            before, after = self.grid.sees(seen, old), self.grid.sees(seen, new)
            if before != after:
                tell_if_alive(member.session, DeliverEvent(self._presence_body(other.view, after)))

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
        self.peers.receive(msg.message)
        self.debug_status = f"{len(self.grid.members)} characters"

    def on_RosterTick(self, msg: RosterTick) -> None:
        """Tell the other nodes who is here; forget the nodes that stopped telling us."""
        self.peers.tick()
        self.debug_status = f"{len(self.grid.members)} characters"

    def _peer_item(self, node: str, item_id: str, on_map: bool) -> None:
        """A player of ``node`` took an item, or it lies on the map again there. Back on this
        map only when ``node`` is the one that took it and no player of this node holds it."""
        spawn = self.world_items.get(item_id)
        if spawn is None:
            log.warning("zone %s: node %s named an item not on this map: %.100r", self.world.map_id, node, item_id)
            return
        if not on_map:
            self.items.pop(item_id, None)
            if item_id not in self.taken_here:
                self.taken_by[item_id] = node
        elif self.taken_by.get(item_id) == node:
            del self.taken_by[item_id]
            if item_id not in self.taken_here and item_id not in self.items:
                self.items[item_id] = spawn
                self._announce_item(spawn)

    def _node_gone(self, node: str) -> None:
        """A node went quiet or left: the items its players took grow back here in time (its own
        respawn timers are gone with it)."""
        for item_id in [i for i, n in self.taken_by.items() if n == node]:
            del self.taken_by[item_id]
            if self.item_respawn_s > 0:
                tell_later(self.item_respawn_s, self.actor_ref, RespawnItem(self.world_items[item_id]))
            else:
                self.items[item_id] = self.world_items[item_id]

    def on_FailNow(self, msg: FailNow) -> None:
        """Crash on purpose (tests and the nemesis: a shared actor dies)."""
        raise RuntimeError(f"zone {self.world.map_id} asked to fail")

    def on_failure(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        """The zone died: log it and tell the supervisor (the node turns unready, closes its
        sessions with 1011)."""
        log.error("zone %s crashed: %s; the supervisor is told", self.world.map_id, exc_value)
        if self.on_died is not None:
            self.on_died(exc_value)

    def _show(self, member: Member, at: tuple[int, int], visible: bool) -> None:
        """Tell the local sessions that see ``at`` that remote ``member`` appeared or vanished there."""
        body = None
        for _, other in self.grid.near(*at):
            if other.session is not None and self.grid.sees(other.position, at):
                body = body or self._presence_body({**member.view, "x": at[0], "y": at[1]}, visible)
                tell_if_alive(other.session, DeliverEvent(body))

    def _peer_deliver(self, cid: str, body: str, new: tuple[int, int], old: tuple[int, int] | None) -> None:
        self._deliver(cid, body, new, old, include_self=False)

    # ---------------------------------------------------------------- helpers

    def _add(self, cid: str, member: Member) -> Member:
        self.grid.add(cid, member)
        self.debug_status = f"{len(self.grid.members)} characters"
        return member

    def _drop(self, cid: str, member: Member) -> None:
        self.grid.drop(cid, member)
        self.debug_status = f"{len(self.grid.members)} characters"

    def _snapshot(self, center: tuple[int, int]) -> dict[str, Any]:
        items = [
            {"item_id": i.item_id, "kind": i.kind, "x": i.x, "y": i.y} for i in self.items.values()
        ]
        return {
            "map_id": self.world.map_id,
            "width": self.world.width,
            "height": self.world.height,
            "characters": self.grid.views_around(center),
            "items": items,
        }

    def describe(self) -> dict[str, Any]:
        """Zone summary for /debug/actors."""
        remote = sum(1 for m in self.grid.members.values() if m.node is not None)
        return {
            "map_id": self.world.map_id,
            "characters": len(self.grid.members) - remote,
            "remote_characters": remote,
            "peers": self.peers.nodes(),
            "items_on_map": len(self.items),
            "view_radius": self.view_radius,
        }
