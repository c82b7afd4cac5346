"""Regenerate ``default.tmj``, the small walled village that ships as the default map.

Run ``python config/maps/generate_default.py`` from the repository root; the output is
deterministic, so a re-run without code changes leaves the file byte-identical.
"""

from __future__ import annotations

import json
import random
from collections import deque
from pathlib import Path

from config.maps.tiled_authoring import build_tmj

WIDTH, HEIGHT, TILE = 40, 30, 32

# Tile ids of the embedded tileset (gid = id + 1); BLOCKING ones are copied to "collision".
TILES = [
    ("grass", "#5a9e4b"),
    ("path", "#c9b27c"),
    ("water", "#3b6fb6"),
    ("wall", "#6b6460"),
    ("tree", "#2f6b2a"),
    ("floor", "#a47a4f"),
    ("door", "#7a4a22"),
    ("bridge", "#9c7b4f"),
    ("flowers", "#7fb24f"),
]
GID = {name: i + 1 for i, (name, _) in enumerate(TILES)}
BLOCKING = {"water", "wall", "tree"}

SPAWNS = [(12, 14), (26, 15), (19, 10), (20, 19), (6, 12), (34, 14), (19, 26), (24, 11)]
ITEMS = [
    (6, 6, "potion"), (8, 5, "potion"), (24, 5, "gem"), (26, 6, "potion"),
    (5, 18, "herb"), (10, 19, "gem"), (27, 18, "potion"), (32, 19, "gem"),
    (3, 26, "herb"), (12, 27, "herb"), (33, 26, "herb"), (36, 10, "gem"),
    (15, 4, "herb"), (2, 13, "potion"),
]


def build() -> dict:
    """Lay out the village and return it as a Tiled JSON map (a dict)."""
    g = [["grass"] * WIDTH for _ in range(HEIGHT)]

    def rect(x0: int, y0: int, x1: int, y1: int, tile: str) -> None:
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                g[y][x] = tile

    # Main roads, a river across the south with a bridge, a plaza with a fountain.
    rect(1, 14, 38, 15, "path")
    rect(19, 1, 20, 28, "path")
    rect(1, 22, 38, 23, "water")
    rect(19, 22, 20, 23, "bridge")
    rect(16, 12, 23, 17, "path")
    rect(19, 14, 20, 15, "water")
    rect(2, 26, 37, 26, "path")  # a trail through the southern wood
    # A pond in the north-east.
    for y in range(3, 10):
        for x in range(29, 38):
            if ((x - 33) / 4.2) ** 2 + ((y - 6) / 3.2) ** 2 <= 1.0:
                g[y][x] = "water"

    # Buildings: walls, wooden floor, one door, a path from the door to the road.
    def house(x0: int, y0: int, x1: int, y1: int, door: tuple[int, int], to_road: list) -> None:
        rect(x0, y0, x1, y1, "wall")
        rect(x0 + 1, y0 + 1, x1 - 1, y1 - 1, "floor")
        g[door[1]][door[0]] = "door"
        for x, y in to_road:
            g[y][x] = "path"

    house(3, 3, 10, 9, (6, 9), [(6, y) for y in range(10, 14)])
    house(22, 3, 27, 8, (24, 8), [(24, y) for y in range(9, 12)])
    house(3, 16, 11, 20, (7, 16), [])
    house(25, 16, 33, 20, (29, 16), [])

    # Trees: a wood south of the river, scattered trees elsewhere, flowers for colour.
    rng = random.Random(7)
    for y in range(1, HEIGHT - 1):
        for x in range(1, WIDTH - 1):
            if g[y][x] != "grass":
                continue
            near_path = any(
                g[yy][xx] in ("path", "door", "bridge")
                for yy in range(y - 1, y + 2)
                for xx in range(x - 1, x + 2)
            )
            p = 0.30 if y >= 24 else 0.06
            if not near_path and rng.random() < p:
                g[y][x] = "tree"
            elif rng.random() < 0.05:
                g[y][x] = "flowers"

    # The outer wall.
    rect(0, 0, WIDTH - 1, 0, "wall")
    rect(0, HEIGHT - 1, WIDTH - 1, HEIGHT - 1, "wall")
    rect(0, 0, 0, HEIGHT - 1, "wall")
    rect(WIDTH - 1, 0, WIDTH - 1, HEIGHT - 1, "wall")

    # Keep every spawn and item reachable: clear trees there, then check connectivity.
    for x, y in SPAWNS + [(x, y) for x, y, _ in ITEMS]:
        if g[y][x] == "tree":
            g[y][x] = "grass"
        assert g[y][x] not in BLOCKING, (x, y, g[y][x])
    reach = _reachable(g, SPAWNS[0])
    for x, y in SPAWNS + [(x, y) for x, y, _ in ITEMS]:
        assert (x, y) in reach, f"({x},{y}) unreachable"

    return build_tmj(g, TILES, BLOCKING, SPAWNS, ITEMS, tileset="village", tile=TILE, title="Tilehall village")


def _reachable(g: list[list[str]], start: tuple[int, int]) -> set[tuple[int, int]]:
    seen, todo = {start}, deque([start])
    while todo:
        x, y = todo.popleft()
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            n = (x + dx, y + dy)
            if n not in seen and g[n[1]][n[0]] not in BLOCKING:
                seen.add(n)
                todo.append(n)
    return seen


def dump(tmj: dict) -> str:
    """Serialise readably, tile layer data one map row per line (as Tiled's own CSV view)."""
    rows_by_marker = {}
    copy = json.loads(json.dumps(tmj))
    for i, layer in enumerate(copy["layers"]):
        if layer["type"] == "tilelayer":
            marker = f"@@DATA{i}@@"
            data = layer["data"]
            rows_by_marker[f'"{marker}"'] = "[\n" + ",\n".join(
                "    " + ", ".join(str(v) for v in data[r * WIDTH:(r + 1) * WIDTH])
                for r in range(HEIGHT)
            ) + "]"
            layer["data"] = marker
    text = json.dumps(copy, indent=1)
    for marker, rows in rows_by_marker.items():
        text = text.replace(marker, rows)
    assert json.loads(text) == tmj
    return text + "\n"


if __name__ == "__main__":
    out = Path(__file__).with_name("default.tmj")
    out.write_text(dump(build()), encoding="utf-8")
    print(f"wrote {out.name}")
