"""Who stands where in one zone: the members, the tile each holds, and who is near whom.

Members are bucketed in square cells of ``view_radius`` tiles, so finding who sees a tile looks
at the 3x3 cells around it, not at every member of the zone. Pure bookkeeping: no actor, no I/O.
"""

from __future__ import annotations

from typing import Any

import pykka


class Member:
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


class ZoneGrid:
    """The members of one zone by id and by cell, and the occupant of each held tile."""

    def __init__(self, view_radius: int) -> None:
        self.view_radius = view_radius
        self.members: dict[str, Member] = {}
        self.cells: dict[tuple[int, int], dict[str, Member]] = {}  # cell → members in it
        self.occupied: dict[tuple[int, int], str] = {}

    def add(self, cid: str, member: Member) -> Member:
        """Place a new member; it holds its tile unless someone already does."""
        self.members[cid] = member
        self._cell(member.position)[cid] = member
        self.occupied.setdefault(member.position, cid)
        return member

    def drop(self, cid: str, member: Member) -> None:
        """Remove a member; its tile is free again."""
        del self.members[cid]
        self._vacate(cid, member.position)
        self._uncell(cid, member.position)

    def step(self, cid: str, member: Member, target: tuple[int, int]) -> None:
        """Move a member onto ``target`` and reserve it (a granted move)."""
        self._vacate(cid, member.position)
        self._move(cid, member, target)
        self.occupied[target] = cid

    def relocate(self, cid: str, member: Member, position: tuple[int, int]) -> None:
        """Move a member to ``position``; it holds that tile unless someone already does."""
        self._vacate(cid, member.position)
        self._move(cid, member, position)
        self.occupied.setdefault(position, cid)

    def near(self, x: int, y: int) -> list[tuple[str, Member]]:
        """Members of the 3x3 cells around (x, y): everyone within view_radius is among them."""
        r = self.view_radius
        cx, cy = x // r, y // r
        out: list[tuple[str, Member]] = []
        for ky in (cy - 1, cy, cy + 1):
            for kx in (cx - 1, cx, cx + 1):
                cell = self.cells.get((kx, ky))
                if cell:
                    out.extend(cell.items())
        return out

    def sees(self, a: tuple[int, int], b: tuple[int, int]) -> bool:
        """Tile ``b`` is within view_radius (Chebyshev distance) of tile ``a``."""
        r = self.view_radius
        return abs(a[0] - b[0]) <= r and abs(a[1] - b[1]) <= r

    def views_around(self, center: tuple[int, int]) -> list[dict[str, Any]]:
        """The views of the members within view_radius of ``center``, at their current tile."""
        return [
            {**m.view, "x": m.position[0], "y": m.position[1]}
            for _, m in self.near(*center)
            if self.sees(center, m.position)
        ]

    def _vacate(self, cid: str, position: tuple[int, int]) -> None:
        if self.occupied.get(position) == cid:
            del self.occupied[position]

    def _cell(self, position: tuple[int, int]) -> dict[str, Member]:
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

    def _move(self, cid: str, member: Member, position: tuple[int, int]) -> None:
        r = self.view_radius
        old = member.position
        member.position = position
        if (old[0] // r, old[1] // r) != (position[0] // r, position[1] // r):
            self._uncell(cid, old)
            self._cell(position)[cid] = member
