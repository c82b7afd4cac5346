"""The world map: a Tiled JSON map (``config/maps/<name>.tmj``) read into an immutable WorldMap.

What tilehall reads from a map (everything else is for the web client's eyes):

- ``orientation`` must be ``orthogonal``, ``infinite`` false, ``width``/``height`` in tiles;
- a tile layer ``collision``: any nonzero gid there makes the tile not walkable (a ``ground``
  tile layer is required too, it is what the client draws);
- an object group ``spawns``: objects whose position (pixels, like Tiled) marks a spawn tile;
- an object group ``items``: objects with a string property ``kind`` (potion, gem or herb);
  an item's id is ``item-<Tiled object id>``, stable as long as the map file is.

Tile data must be uncompressed (Tiled's CSV layer format, a JSON array). A bad file raises a
ValueError whose message names the map and what is wrong with it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.settings import CONFIG_DIR

MAPS_DIR = CONFIG_DIR / "maps"
ITEM_KINDS = frozenset({"potion", "gem", "herb"})
_MAP_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class ItemSpawn:
    """An item lying on the map at start: ``item_id`` like ``item-3``, ``kind`` potion|gem|herb."""

    item_id: str
    kind: str
    x: int
    y: int


@dataclass(frozen=True)
class WorldMap:
    """A loaded map: size, walkability, spawn points and items. Coordinates are tile x, y."""

    map_id: str
    width: int
    height: int
    tile_width: int
    tile_height: int
    spawn_points: tuple[tuple[int, int], ...]
    items: tuple[ItemSpawn, ...]
    # One byte per tile, row-major: 1 = blocked.
    blocked: bytes = field(repr=False, compare=False)

    def in_bounds(self, x: int, y: int) -> bool:
        """True when (x, y) is a tile of the map."""
        return 0 <= x < self.width and 0 <= y < self.height

    def is_walkable(self, x: int, y: int) -> bool:
        """True when (x, y) is in bounds and has nothing in the collision layer."""
        return self.in_bounds(x, y) and not self.blocked[y * self.width + x]

    def spawn_for(self, key: str) -> tuple[int, int]:
        """A walkable spawn point picked deterministically from ``key`` (e.g. a character id)."""
        usable = [p for p in self.spawn_points if self.is_walkable(*p)]
        if not usable:
            raise ValueError(f"map {self.map_id!r}: no walkable spawn point")
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        return usable[int.from_bytes(digest[:8], "big") % len(usable)]

    def item_at(self, x: int, y: int) -> ItemSpawn | None:
        """The first item the map places on (x, y), if any."""
        for item in self.items:
            if item.x == x and item.y == y:
                return item
        return None

    def item(self, item_id: str) -> ItemSpawn | None:
        """The item with this id, if the map has one."""
        for item in self.items:
            if item.item_id == item_id:
                return item
        return None

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[str],
        *,
        map_id: str = "test",
        spawn_points: Iterable[tuple[int, int]] = (),
        items: Iterable[ItemSpawn] = (),
        tile_size: int = 32,
    ) -> WorldMap:
        """A map from ASCII rows, ``#`` blocked and anything else walkable (for tests and tools)."""
        width = len(rows[0]) if rows else 0
        if not rows or any(len(r) != width for r in rows) or width == 0:
            raise ValueError("rows must be non-empty and all the same length")
        blocked = bytes(1 if ch == "#" else 0 for row in rows for ch in row)
        return cls(map_id, width, len(rows), tile_size, tile_size, tuple(spawn_points),
                   tuple(items), blocked)


def load_map(name: str) -> WorldMap:
    """The map ``config/maps/<name>.tmj``, parsed once per process and cached."""
    if not isinstance(name, str) or not _MAP_NAME.match(name):
        raise ValueError(f"bad map name {name!r}: use letters, digits, '-' and '_' only")
    return _load_cached(name)


@functools.cache
def _load_cached(name: str) -> WorldMap:
    return load_map_file(MAPS_DIR / f"{name}.tmj", map_id=name)


def load_map_file(path: Path, map_id: str | None = None) -> WorldMap:
    """Parse a Tiled JSON map file (not cached); ``map_id`` defaults to the file's stem."""
    map_id = map_id or path.stem
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"map {map_id!r} not found (maps/{path.name})") from None
    except OSError as exc:
        raise ValueError(f"map {map_id!r} cannot be read: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"map {map_id!r} is not valid JSON: {exc}") from None
    return parse_map(data, map_id)


def parse_map(data: Any, map_id: str) -> WorldMap:
    """Build a WorldMap from decoded Tiled JSON, raising ValueError naming what is wrong."""

    def bad(problem: str) -> ValueError:
        return ValueError(f"map {map_id!r}: {problem}")

    if not isinstance(data, dict):
        raise bad("top level must be a JSON object")
    if data.get("orientation") != "orthogonal":
        raise bad(f"orientation must be 'orthogonal', not {data.get('orientation')!r}")
    if data.get("infinite", False) is not False:
        raise bad("infinite maps are not supported")
    width = _positive_int(data, "width", bad)
    height = _positive_int(data, "height", bad)
    tile_w = _positive_int(data, "tilewidth", bad)
    tile_h = _positive_int(data, "tileheight", bad)
    layers = data.get("layers")
    if not isinstance(layers, list):
        raise bad("'layers' must be a list")
    by_name: dict[str, dict] = {}
    for layer in layers:
        if isinstance(layer, dict) and isinstance(layer.get("name"), str):
            by_name.setdefault(layer["name"], layer)

    _tile_data(by_name, "ground", width, height, bad)
    collision = _tile_data(by_name, "collision", width, height, bad)
    blocked = bytes(1 if gid else 0 for gid in collision)

    spawns = []
    for obj in _objects(by_name, "spawns", bad):
        x, y = _object_tile(obj, tile_w, tile_h, width, height, "spawns", bad)
        spawns.append((x, y))
    if not spawns:
        raise bad("object group 'spawns' has no spawn points")
    if not any(not blocked[y * width + x] for x, y in spawns):
        raise bad("every spawn point is on a blocked tile")

    items = []
    seen_ids: set[str] = set()
    for obj in _objects(by_name, "items", bad):
        x, y = _object_tile(obj, tile_w, tile_h, width, height, "items", bad)
        oid = obj.get("id")
        if type(oid) is not int:
            raise bad(f"an object in 'items' has no integer id: {obj.get('name')!r}")
        item_id = f"item-{oid}"
        if item_id in seen_ids:
            raise bad(f"duplicate object id {oid} in 'items'")
        seen_ids.add(item_id)
        kind = _property(obj, "kind")
        if kind not in ITEM_KINDS:
            raise bad(f"item {oid} has kind {kind!r}; expected one of {sorted(ITEM_KINDS)}")
        if blocked[y * width + x]:
            raise bad(f"item {oid} at ({x},{y}) is on a blocked tile")
        items.append(ItemSpawn(item_id, kind, x, y))

    return WorldMap(map_id, width, height, tile_w, tile_h, tuple(spawns), tuple(items), blocked)


def _positive_int(data: dict, key: str, bad) -> int:
    value = data.get(key)
    if type(value) is not int or value <= 0:
        raise bad(f"{key!r} must be a positive integer, not {value!r}")
    return value


def _tile_data(by_name: dict, name: str, width: int, height: int, bad) -> list[int]:
    layer = by_name.get(name)
    if layer is None or layer.get("type") != "tilelayer":
        raise bad(f"missing tile layer {name!r}")
    if layer.get("encoding", "csv") != "csv" or layer.get("compression"):
        raise bad(f"layer {name!r} must be uncompressed CSV (set Tile Layer Format to CSV in Tiled)")
    cells = layer.get("data")
    if not isinstance(cells, list) or any(type(c) is not int or c < 0 for c in cells):
        raise bad(f"layer {name!r} 'data' must be a list of non-negative integers")
    if len(cells) != width * height:
        raise bad(f"layer {name!r} has {len(cells)} tiles, expected {width}x{height}={width * height}")
    return cells


def _objects(by_name: dict, name: str, bad) -> list[dict]:
    layer = by_name.get(name)
    if layer is None or layer.get("type") != "objectgroup":
        raise bad(f"missing object group {name!r}")
    objects = layer.get("objects")
    if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
        raise bad(f"object group {name!r} 'objects' must be a list of objects")
    return objects


def _object_tile(obj: dict, tile_w: int, tile_h: int, width: int, height: int, group: str,
                 bad) -> tuple[int, int]:
    px, py = obj.get("x"), obj.get("y")
    if type(px) not in (int, float) or type(py) not in (int, float):
        raise bad(f"object {obj.get('id')!r} in {group!r} has no numeric x/y")
    tx, ty = int(px // tile_w), int(py // tile_h)
    if not (0 <= tx < width and 0 <= ty < height):
        raise bad(f"object {obj.get('id')!r} in {group!r} at ({tx},{ty}) is outside the map")
    return tx, ty


def _property(obj: dict, name: str) -> Any:
    for prop in obj.get("properties") or ():
        if isinstance(prop, dict) and prop.get("name") == name:
            return prop.get("value")
    return None
