"""Regenerate ``arena.tmj``, the big open map the benchmark runs on (``game.map = "arena"``).

256x256 tiles of grass with an outer wall, a few short wall segments, a handful of items and
a spawn point every 8 tiles (1,024 spread evenly). On the small default map every player sees
every other one, so each action fans out to all sessions; here a player sees only the few
within ``game.view_radius``. Run ``python config/maps/generate_arena.py`` from the repository
root; the output is deterministic.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from config.maps.tiled_authoring import build_tmj

WIDTH, HEIGHT, TILE = 256, 256, 32
SPAWN_STEP = 8

TILES = [
    ("grass", "#5a9e4b"),
    ("path", "#c9b27c"),
    ("wall", "#6b6460"),
]
GID = {name: i + 1 for i, (name, _) in enumerate(TILES)}
BLOCKING = {"wall"}

ITEMS = [(20, 20, "potion"), (120, 40, "gem"), (230, 100, "herb"), (60, 180, "potion"),
         (200, 220, "gem"), (128, 128, "herb")]


def build() -> dict:
    """Lay out the arena and return it as a Tiled JSON map (a dict)."""
    g = [["grass"] * WIDTH for _ in range(HEIGHT)]
    for x in range(WIDTH):
        g[0][x] = g[HEIGHT - 1][x] = "wall"
    for y in range(HEIGHT):
        g[y][0] = g[y][WIDTH - 1] = "wall"
    # A few short wall segments (never on a spawn point's 2x2 walking square).
    rng = random.Random(11)
    spawn_area = {
        (sx + dx, sy + dy)
        for sx, sy in _spawns() for dx in (0, 1) for dy in (0, 1)
    }
    for _ in range(24):
        x, y = rng.randrange(4, WIDTH - 12), rng.randrange(4, HEIGHT - 12)
        horizontal = rng.random() < 0.5
        for i in range(rng.randrange(3, 9)):
            tx, ty = (x + i, y) if horizontal else (x, y + i)
            if (tx, ty) not in spawn_area:
                g[ty][tx] = "wall"
    # A path cross through the middle, for the eye.
    for i in range(1, WIDTH - 1):
        if g[HEIGHT // 2][i] == "grass":
            g[HEIGHT // 2][i] = "path"
        if g[i][WIDTH // 2] == "grass":
            g[i][WIDTH // 2] = "path"
    for x, y, _ in ITEMS:
        assert g[y][x] not in BLOCKING, (x, y)

    return build_tmj(g, TILES, BLOCKING, _spawns(), ITEMS, tileset="arena", tile=TILE, )


def _spawns() -> list[tuple[int, int]]:
    half = SPAWN_STEP // 2
    return [(x, y) for y in range(half, HEIGHT - 2, SPAWN_STEP) for x in range(half, WIDTH - 2, SPAWN_STEP)]


def dump(tmj: dict) -> str:
    """Serialise compactly: one map row per line in tile layers, one object per line."""
    copy = json.loads(json.dumps(tmj))
    markers = {}
    for i, layer in enumerate(copy["layers"]):
        marker = f'"@@LAYER{i}@@"'
        if layer["type"] == "tilelayer":
            data = layer["data"]
            markers[marker] = "[\n" + ",\n".join(
                ",".join(str(v) for v in data[r * WIDTH:(r + 1) * WIDTH]) for r in range(HEIGHT)
            ) + "]"
            layer["data"] = marker.strip('"')
        else:
            objs = layer["objects"]
            markers[marker] = "[\n" + ",\n".join(
                json.dumps(o, separators=(",", ":")) for o in objs
            ) + "]"
            layer["objects"] = marker.strip('"')
    text = json.dumps(copy, indent=1)
    for marker, rows in markers.items():
        text = text.replace(marker, rows)
    assert json.loads(text) == tmj
    return text + "\n"


if __name__ == "__main__":
    out = Path(__file__).with_name("arena.tmj")
    out.write_text(dump(build()), encoding="utf-8")
    print(f"wrote {out.name}")
