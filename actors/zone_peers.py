"""This zone on the other nodes (DESIGN section 8): the peer roster, the peer messages, and the
other nodes' characters mirrored as *remote* members of the zone's grid.

The zone link (``storage.relay.zone_relay``) carries rosters, enter/leave, committed events, items
and ability effects. A remote tile is known once its commit landed on the other node, so two
nodes can grant the same tile in the few milliseconds before they hear of each other's move;
the next move resolves it. :class:`ZonePeers` is a plain object the ZoneActor composes and calls
from its own thread; what the local sessions must be told it hands back through callbacks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from actors.base import tell_if_alive
from actors.messages import ApplyEffect
from actors.ports import ZoneLink
from actors.zone_grid import Member, ZoneGrid
from storage.postgres.characters import public_view

log = logging.getLogger(__name__)

Show = Callable[[Member, tuple[int, int], bool], None]
"""(remote member, its tile, visible): tell the local sessions that see the tile."""
Deliver = Callable[[str, str, tuple[int, int], tuple[int, int] | None], None]
"""(character id, event body, new tile, old tile): an event to the local sessions that see it."""
ItemMoved = Callable[[str, bool], None]
"""(item id, on the map): another node's player took an item, or it lies on the map again."""


class ZonePeers:
    """The other nodes serving one zone and their characters on ``grid``."""

    def __init__(
        self, zone_id: str, link: ZoneLink | None, timeout_s: float, grid: ZoneGrid, *,
        show: Show, deliver: Deliver, item_moved: ItemMoved,
    ) -> None:
        self.zone_id = zone_id
        self.link = link
        self.timeout_s = timeout_s
        self.grid = grid
        self.heard: dict[str, float] = {}  # node id → time.monotonic() it was last heard from
        self._show = show
        self._deliver = deliver
        self._item_moved = item_moved

    def linked(self) -> bool:
        """Another node is listening. Alone, a node only announces itself (rosters): checked
        before a message is built, since events are on every action's path."""
        return self.link is not None and bool(self.heard)

    def nodes(self) -> list[str]:
        """The ids of the nodes heard from, sorted."""
        return sorted(self.heard)

    # ---------------------------------------------------------------- to the other nodes

    def entered(self, view: dict[str, Any]) -> None:
        """A local character entered the zone."""
        if self.linked():
            self.link.publish({"t": "enter", "view": public_view(view)})

    def left(self, character_id: str) -> None:
        """A local character left the zone."""
        if self.linked():
            self.link.publish({"t": "leave", "character_id": character_id})

    def item(self, item_id: str, on_map: bool) -> None:
        """A local player took an item, or it lies on the map again."""
        if self.linked():
            self.link.publish({"t": "item", "item_id": item_id, "on_map": on_map})

    def effect(self, target_id: str, e: ApplyEffect) -> None:
        """An ability's effect for a remote member (its node applies it)."""
        if self.link is not None:
            self.link.publish({"t": "effect", "target": target_id, "effect": {
                "kind": e.kind, "amount": e.amount, "source_id": e.source_id, "source_name": e.source_name}})

    def event(self, view: dict[str, Any], body: str, old: tuple[int, int] | None, member: bool) -> None:
        """A committed event of a character (``member``: still in this zone here)."""
        if self.linked():
            self.link.publish({"t": "event", "view": public_view(view), "body": body,
                               "from": list(old) if old is not None else None, "member": member})

    def tick(self) -> None:
        """Tell the other nodes who is here; forget the nodes that stopped telling us."""
        if self.link is not None:
            self.link.publish(self._roster())
        now = time.monotonic()
        for node, heard in list(self.heard.items()):
            if now - heard > self.timeout_s:
                log.warning("zone %s: node %s went quiet; its characters leave this node's view", self.zone_id, node)
                self._forget_node(node)

    # ---------------------------------------------------------------- from the other nodes

    def receive(self, m: Any) -> None:
        """A message from this zone on another node; a malformed one is logged and ignored."""
        try:
            node, kind = str(m["node"]), m["t"]
            first = node not in self.heard
            self.heard[node] = time.monotonic()
            if kind == "roster":
                self._apply_roster(node, [public_view(v) for v in m["members"]])
                if first and self.link is not None:  # a node we did not know: let it learn ours at once
                    self.link.publish(self._roster())
            elif kind == "bye":
                self._forget_node(node)
            elif kind == "enter":  # its login event follows and tells the viewers
                self._mirror(node, public_view(m["view"]), announce=False)
            elif kind == "leave":
                self._unmirror(str(m["character_id"]))
            elif kind == "event":
                came_from = tuple(m["from"]) if m.get("from") is not None else None
                self._peer_event(node, public_view(m["view"]), str(m["body"]), came_from, bool(m.get("member", True)))
            elif kind == "item":
                self._item_moved(str(m["item_id"]), bool(m["on_map"]))
            elif kind == "effect":
                member = self.grid.members.get(str(m["target"]))
                if member is not None and member.node is None:
                    e = m["effect"]
                    tell_if_alive(member.character, ApplyEffect(
                        str(e["kind"]), int(e["amount"]), str(e["source_id"]), str(e["source_name"])))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("zone %s: ignored a malformed message from a peer: %r (%s)", self.zone_id, m, exc)

    def _roster(self) -> dict[str, Any]:
        members = [
            {**public_view(m.view), "x": m.position[0], "y": m.position[1]}
            for m in self.grid.members.values() if m.node is None
        ]
        return {"t": "roster", "members": members}

    def _apply_roster(self, node: str, views: list[dict[str, Any]]) -> None:
        listed = {v["character_id"] for v in views}
        for cid, member in list(self.grid.members.items()):
            if member.node == node and cid not in listed:
                self._unmirror(cid)
        for view in views:
            self._mirror(node, view)

    def _forget_node(self, node: str) -> None:
        self.heard.pop(node, None)
        for cid, member in list(self.grid.members.items()):
            if member.node == node:
                self._unmirror(cid)

    def _mirror(self, node: str, view: dict[str, Any], announce: bool = True) -> None:
        """Add or update a remote member; with ``announce`` the local sessions that now see a
        newcomer are told (``in_view``). A character played on this node is never overwritten."""
        cid = view["character_id"]
        member = self.grid.members.get(cid)
        if member is not None and member.node is None:
            return
        new = (view["x"], view["y"])
        if member is None:
            member = self.grid.add(cid, Member(view, None, None, node))
            if announce:
                self._show(member, new, True)
            return
        member.view, member.node = view, node
        if member.position != new:
            self.grid.relocate(cid, member, new)

    def _unmirror(self, cid: str) -> None:
        """Drop a remote member; the local sessions that saw it are told (``out_of_view``)."""
        member = self.grid.members.get(cid)
        if member is None or member.node is None:
            return
        self.grid.drop(cid, member)
        self._show(member, member.position, False)

    def _peer_event(
        self, node: str, view: dict[str, Any], body: str, came_from: tuple[int, int] | None, member_after: bool,
    ) -> None:
        cid = view["character_id"]
        member = self.grid.members.get(cid)
        if member is not None and member.node is None:
            return  # played here now (a takeover): the old node's late events are not news
        # Where our sessions saw it last; the sender's word for it when we had not seen it yet.
        old = member.position if member is not None else came_from
        if member_after:  # (a logout event comes after the leave: nothing to mirror)
            self._mirror(node, view, announce=False)  # the event itself tells the viewers
        self._deliver(cid, body, (view["x"], view["y"]), old)
