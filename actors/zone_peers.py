"""This zone on the other nodes (DESIGN section 8): the peer roster, the peer messages, and the
other nodes' characters mirrored as *remote* members of the zone's grid.

The zone link (``storage.relay.zone_relay``) carries rosters, enter/leave, committed events, items
and ability effects. A remote tile is known once its commit landed on the other node, so two
nodes can grant the same tile in the few milliseconds before they hear of each other's move;
the next move resolves it. :class:`ZonePeers` is a plain object the ZoneActor composes and calls
from its own thread; what the local sessions must be told it hands back through callbacks.

Every peer message is checked field by field before anything is changed
(:func:`parse_peer_message`: types, no bools for ints, tiles on the map, health within
0..max_health, amounts within 0..:data:`MAX_AMOUNT`, known kinds); an invalid one is logged and
dropped, so a bad or hostile peer can neither crash the zone nor a character.

Items: each node's roster also lists the items its players took and that are not back yet
(``taken``), so a node that starts (or missed an ``item`` message) learns them within a roster
interval; an item comes back on the map only from the node that took it (its return or respawn).
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
ItemMoved = Callable[[str, str, bool], None]
"""(node, item id, on the map): a player of ``node`` took an item, or it lies on the map again."""
Taken = Callable[[], list[str]]
"""The items this node's players took that are not back on the map yet (for the roster)."""
NodeGone = Callable[[str], None]
"""A node went quiet or said bye: what it held must not stay held for ever."""
Announced = Callable[[str], None]
"""(event body): an operator's announcement from another node, for every local session."""

KINDS = frozenset({"roster", "bye", "enter", "leave", "event", "item", "effect", "announce"})
MAX_AMOUNT = 10_000  # an effect's amount above this is not from a sane peer (max_health ≤ 10 000)
MAX_ID = 128  # ids and names longer than this are refused


class PeerMessageError(ValueError):
    """A peer message that does not have the shape of the protocol between nodes."""


def _int(value: Any, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise PeerMessageError(f"{what} must be an int within {low}..{high}, not {value!r}")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID:
        raise PeerMessageError(f"{what} must be a non-empty string of at most {MAX_ID} characters, not {value!r}")
    return value


def _view(value: Any, bounds: tuple[int, int] | None) -> dict[str, Any]:
    """A public character view, checked: ids, a tile on the map, 0 ≤ health ≤ max_health."""
    if not isinstance(value, dict):
        raise PeerMessageError(f"a view must be an object, not {value!r}")
    try:
        view = public_view(value)
    except KeyError as exc:
        raise PeerMessageError(f"a view lacks {exc}") from None
    width, height = bounds if bounds is not None else (1 << 31, 1 << 31)
    _str(view["character_id"], "character_id")
    if not isinstance(view["display_name"], str) or len(view["display_name"]) > MAX_ID:
        raise PeerMessageError(f"display_name must be a string, not {view['display_name']!r}")
    _int(view["x"], "x", 0, width - 1)
    _int(view["y"], "y", 0, height - 1)
    max_health = _int(view["max_health"], "max_health", 1, MAX_AMOUNT)
    _int(view["health"], "health", 0, max_health)
    return view


def _tile(value: Any, bounds: tuple[int, int] | None) -> tuple[int, int]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise PeerMessageError(f"a tile must be [x, y], not {value!r}")
    width, height = bounds if bounds is not None else (1 << 31, 1 << 31)
    return _int(value[0], "x", 0, width - 1), _int(value[1], "y", 0, height - 1)


def _bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise PeerMessageError(f"{what} must be true or false, not {value!r}")
    return value


def parse_peer_message(m: Any, bounds: tuple[int, int] | None = None) -> dict[str, Any]:
    """``m`` checked field by field (``bounds``: the map's width and height), as a new dict of
    only the fields its kind uses; raises :class:`PeerMessageError` naming the first bad one."""
    if not isinstance(m, dict):
        raise PeerMessageError(f"a peer message must be an object, not {type(m).__name__}")
    kind = m.get("t")
    if kind not in KINDS:
        raise PeerMessageError(f"unknown kind {kind!r}")
    out: dict[str, Any] = {"t": kind, "node": _str(m.get("node"), "node")}
    if kind == "roster":
        members = m.get("members")
        if not isinstance(members, list):
            raise PeerMessageError("members must be a list")
        out["members"] = [_view(v, bounds) for v in members]
        taken = m.get("taken", [])
        if not isinstance(taken, list):
            raise PeerMessageError("taken must be a list")
        out["taken"] = [_str(i, "taken item_id") for i in taken]
    elif kind == "enter":
        out["view"] = _view(m.get("view"), bounds)
    elif kind == "leave":
        out["character_id"] = _str(m.get("character_id"), "character_id")
    elif kind == "event":
        out["view"] = _view(m.get("view"), bounds)
        if not isinstance(m.get("body"), str):
            raise PeerMessageError("body must be a string")
        out["body"] = m["body"]
        out["from"] = None if m.get("from") is None else _tile(m["from"], bounds)
        out["member"] = _bool(m.get("member", True), "member")
    elif kind == "announce":
        if not isinstance(m.get("body"), str):
            raise PeerMessageError("body must be a string")
        out["body"] = m["body"]
    elif kind == "item":
        out["item_id"] = _str(m.get("item_id"), "item_id")
        out["on_map"] = _bool(m.get("on_map"), "on_map")
    elif kind == "effect":
        out["target"] = _str(m.get("target"), "target")
        e = m.get("effect")
        if not isinstance(e, dict):
            raise PeerMessageError("effect must be an object")
        if e.get("kind") not in ("damage", "heal"):
            raise PeerMessageError(f"unknown effect kind {e.get('kind')!r}")
        out["effect"] = ApplyEffect(e["kind"], _int(e.get("amount"), "amount", 0, MAX_AMOUNT),
                                    _str(e.get("source_id"), "source_id"), _str(e.get("source_name"), "source_name"))
    return out


class ZonePeers:
    """The other nodes serving one zone and their characters on ``grid``."""

    def __init__(
        self, zone_id: str, link: ZoneLink | None, timeout_s: float, grid: ZoneGrid, *,
        show: Show, deliver: Deliver, item_moved: ItemMoved, taken: Taken = list,
        node_gone: NodeGone | None = None, bounds: tuple[int, int] | None = None,
        announced: Announced | None = None,
    ) -> None:
        self.zone_id = zone_id
        self.link = link
        self.timeout_s = timeout_s
        self.grid = grid
        self.heard: dict[str, float] = {}  # node id → time.monotonic() it was last heard from
        self._show = show
        self._deliver = deliver
        self._item_moved = item_moved
        self._taken = taken
        self._node_gone = node_gone
        self._announced = announced
        self.bounds = bounds

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

    def announce(self, body: str) -> None:
        """An operator's announcement (an event body) for every session of the zone elsewhere."""
        if self.linked():
            self.link.publish({"t": "announce", "body": body})

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
        """A message from this zone on another node; an invalid one is logged and dropped
        before it changes anything (:func:`parse_peer_message`)."""
        try:
            m = parse_peer_message(m, self.bounds)
        except PeerMessageError as exc:
            log.warning("zone %s: dropped an invalid message from a peer: %s: %.300r", self.zone_id, exc, m)
            return
        node, kind = m["node"], m["t"]
        first = node not in self.heard
        self.heard[node] = time.monotonic()
        if kind == "roster":
            self._apply_roster(node, m["members"])
            for item_id in m["taken"]:
                self._item_moved(node, item_id, False)
            if first and self.link is not None:  # a node we did not know: let it learn ours at once
                self.link.publish(self._roster())
        elif kind == "bye":
            self._forget_node(node)
        elif kind == "enter":  # its login event follows and tells the viewers
            self._mirror(node, m["view"], announce=False)
        elif kind == "leave":
            self._unmirror(m["character_id"])
        elif kind == "event":
            self._peer_event(node, m["view"], m["body"], m["from"], m["member"])
        elif kind == "item":
            self._item_moved(node, m["item_id"], m["on_map"])
        elif kind == "announce":
            if self._announced is not None:
                self._announced(m["body"])
        elif kind == "effect":
            member = self.grid.members.get(m["target"])
            if member is not None and member.node is None:
                tell_if_alive(member.character, m["effect"])

    def _roster(self) -> dict[str, Any]:
        members = [
            {**public_view(m.view), "x": m.position[0], "y": m.position[1]}
            for m in self.grid.members.values() if m.node is None
        ]
        return {"t": "roster", "members": members, "taken": self._taken()}

    def _apply_roster(self, node: str, views: list[dict[str, Any]]) -> None:
        listed = {v["character_id"] for v in views}
        for cid, member in list(self.grid.members.items()):
            if member.node == node and cid not in listed:
                self._unmirror(cid)
        for view in views:
            self._mirror(node, view)

    def _forget_node(self, node: str) -> None:
        self.heard.pop(node, None)
        if self._node_gone is not None:
            self._node_gone(node)
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
