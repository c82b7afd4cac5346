"""Map authoring: build the Tiled JSON (.tmj) that tilehall's map loader reads.

Used by the generators beside it (``generate_default.py``, ``generate_arena.py``); the server
never imports it (``actors.world_map`` only loads maps).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["build_tmj"]


def build_tmj(
    grid: Sequence[Sequence[str]],
    tiles: Sequence[tuple[str, str]],
    blocking: Iterable[str],
    spawns: Iterable[tuple[int, int]],
    items: Iterable[tuple[int, int, str]],
    *,
    tileset: str,
    tile: int = 32,
    title: str | None = None,
) -> dict[str, Any]:
    """The Tiled JSON map ``actors.world_map.parse_map`` reads, from a grid of tile names (the map
    generators' writer). ``tiles`` are (name, #rrggbb) in gid order; ``blocking`` names go to
    the collision layer; spawns are points, items (x, y, kind) points with a ``kind``."""
    height, width = len(grid), len(grid[0])
    gid = {name: i + 1 for i, (name, _) in enumerate(tiles)}
    blocked = set(blocking)
    cells = [grid[y][x] for y in range(height) for x in range(width)]
    next_id = 1
    spawn_objs, item_objs = [], []
    for i, (x, y) in enumerate(spawns, 1):
        spawn_objs.append(_tmj_point(next_id, f"spawn-{i}", "spawn", x, y, [], tile))
        next_id += 1
    for x, y, kind in items:
        props = [{"name": "kind", "type": "string", "value": kind}]
        item_objs.append(_tmj_point(next_id, kind, "item", x, y, props, tile))
        next_id += 1

    def tile_layer(lid: int, name: str, data: list[int], visible: bool) -> dict[str, Any]:
        return {
            "data": data, "height": height, "id": lid, "name": name, "opacity": 1,
            "type": "tilelayer", "visible": visible, "width": width, "x": 0, "y": 0,
        }

    def object_layer(lid: int, name: str, objects: list[dict]) -> dict[str, Any]:
        return {
            "draworder": "topdown", "id": lid, "name": name, "objects": objects,
            "opacity": 1, "type": "objectgroup", "visible": True, "x": 0, "y": 0,
        }

    tmj: dict[str, Any] = {
        "compressionlevel": -1,
        "height": height,
        "infinite": False,
        "layers": [
            tile_layer(1, "ground", [gid[c] for c in cells], True),
            tile_layer(2, "collision", [gid[c] if c in blocked else 0 for c in cells], False),
            object_layer(3, "spawns", spawn_objs),
            object_layer(4, "items", item_objs),
        ],
        "nextlayerid": 5,
        "nextobjectid": next_id,
        "orientation": "orthogonal",
    }
    if title is not None:
        tmj["properties"] = [{"name": "title", "type": "string", "value": title}]
    tmj.update({
        "renderorder": "right-down",
        "tiledversion": "1.10.2",
        "tileheight": tile,
        "tilesets": [{
            "columns": 0,
            "firstgid": 1,
            "grid": {"height": tile, "orientation": "orthogonal", "width": tile},
            "margin": 0,
            "name": tileset,
            "spacing": 0,
            "tilecount": len(tiles),
            "tileheight": tile,
            "tiles": [
                {
                    "id": i,
                    "properties": [
                        {"name": "color", "type": "string", "value": color},
                        {"name": "name", "type": "string", "value": name},
                    ],
                }
                for i, (name, color) in enumerate(tiles)
            ],
            "tilewidth": tile,
        }],
        "tilewidth": tile,
        "type": "map",
        "version": "1.10",
        "width": width,
    })
    return tmj


def _tmj_point(oid: int, name: str, otype: str, x: int, y: int, props: list, tile: int) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "height": 0, "id": oid, "name": name, "point": True, "rotation": 0, "type": otype,
        "visible": True, "width": 0, "x": x * tile + tile // 2, "y": y * tile + tile // 2,
    }
    if props:
        obj["properties"] = props
    return obj
