"""The default map is a usable village, and bad map files fail with a message naming the problem."""

from __future__ import annotations

import copy
import json
from collections import deque

import pytest

from actors.world_map import MAPS_DIR, ItemSpawn, WorldMap, load_map, load_map_file, parse_map


@pytest.fixture(scope="module")
def raw_default() -> dict:
    return json.loads((MAPS_DIR / "default.tmj").read_text(encoding="utf-8"))


def test_default_map_shape() -> None:
    world = load_map("default")
    assert (world.map_id, world.tile_width, world.tile_height) == ("default", 32, 32)
    assert 30 <= world.width <= 60 and 20 <= world.height <= 40
    assert len(world.spawn_points) >= 6
    assert len(world.items) >= 10
    assert {i.kind for i in world.items} == {"potion", "gem", "herb"}
    assert len({i.item_id for i in world.items}) == len(world.items)


def test_default_map_is_cached() -> None:
    assert load_map("default") is load_map("default")


def test_default_map_walls_around() -> None:
    world = load_map("default")
    for x in range(world.width):
        assert not world.is_walkable(x, 0) and not world.is_walkable(x, world.height - 1)
    for y in range(world.height):
        assert not world.is_walkable(0, y) and not world.is_walkable(world.width - 1, y)


def test_default_map_everything_reachable_from_every_spawn() -> None:
    world = load_map("default")
    start = world.spawn_points[0]
    seen, todo = {start}, deque([start])
    while todo:
        x, y = todo.popleft()
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            n = (x + dx, y + dy)
            if n not in seen and world.is_walkable(*n):
                seen.add(n)
                todo.append(n)
    assert all(p in seen for p in world.spawn_points)
    assert all((i.x, i.y) in seen for i in world.items)


def test_default_map_tileset_is_drawable(raw_default: dict) -> None:
    (tileset,) = raw_default["tilesets"]
    assert "source" not in tileset and "image" not in tileset
    names = set()
    for tile in tileset["tiles"]:
        props = {p["name"]: p["value"] for p in tile["properties"]}
        assert len(props["color"]) == 7 and props["color"].startswith("#")
        int(props["color"][1:], 16)
        names.add(props["name"])
    assert {"grass", "path", "water", "wall", "tree", "floor", "door"} <= names
    gids = set(raw_default["layers"][0]["data"])
    assert gids <= set(range(tileset["firstgid"], tileset["firstgid"] + tileset["tilecount"]))


def test_walkability_and_bounds() -> None:
    world = WorldMap.from_rows(["#..", "...", "..#"])
    assert world.in_bounds(0, 0) and world.in_bounds(2, 2)
    assert not world.in_bounds(-1, 0) and not world.in_bounds(3, 0) and not world.in_bounds(0, 3)
    assert not world.is_walkable(0, 0) and not world.is_walkable(2, 2)
    assert world.is_walkable(1, 0) and world.is_walkable(1, 1)
    assert not world.is_walkable(5, 5) and not world.is_walkable(-1, -1)


def test_spawn_for_is_deterministic_and_skips_blocked() -> None:
    world = WorldMap.from_rows(["#....", "....."], spawn_points=[(0, 0), (1, 0), (2, 1), (4, 1)])
    picks = {world.spawn_for(f"char-{i}") for i in range(200)}
    assert picks == {(1, 0), (2, 1), (4, 1)}
    assert world.spawn_for("abc") == world.spawn_for("abc")


def test_spawn_for_default_map_lands_walkable() -> None:
    world = load_map("default")
    for i in range(50):
        assert world.is_walkable(*world.spawn_for(str(i)))


def test_item_lookup() -> None:
    gem = ItemSpawn("item-7", "gem", 1, 1)
    world = WorldMap.from_rows(["...", "..."], items=[gem])
    assert world.item_at(1, 1) == gem and world.item_at(0, 0) is None
    assert world.item("item-7") == gem and world.item("item-8") is None


def test_item_positions_come_from_pixels(raw_default: dict) -> None:
    world = parse_map(raw_default, "copy")
    obj = raw_default["layers"][3]["objects"][0]
    item = world.item(f"item-{obj['id']}")
    assert item is not None
    assert (item.x, item.y) == (int(obj["x"] // 32), int(obj["y"] // 32))


def _broken(raw: dict, change) -> dict:
    data = copy.deepcopy(raw)
    change(data)
    return data


def _layer(data: dict, name: str) -> dict:
    return next(layer for layer in data["layers"] if layer["name"] == name)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(orientation="isometric"), "orientation"),
        (lambda d: d.update(infinite=True), "infinite"),
        (lambda d: d.update(width="40"), "'width'"),
        (lambda d: d.update(tileheight=0), "'tileheight'"),
        (lambda d: d.update(layers={}), "'layers'"),
        (lambda d: d["layers"].remove(_layer(d, "collision")), "missing tile layer 'collision'"),
        (lambda d: d["layers"].remove(_layer(d, "ground")), "missing tile layer 'ground'"),
        (lambda d: _layer(d, "collision")["data"].pop(), "expected 40x30"),
        (lambda d: _layer(d, "collision").update(encoding="base64"), "CSV"),
        (lambda d: _layer(d, "ground")["data"].__setitem__(3, -1), "non-negative"),
        (lambda d: d["layers"].remove(_layer(d, "spawns")), "missing object group 'spawns'"),
        (lambda d: _layer(d, "spawns").update(objects=[]), "no spawn points"),
        (lambda d: _layer(d, "spawns")["objects"][0].update(x=99999), "outside the map"),
        (lambda d: _layer(d, "items")["objects"][0]["properties"][0].update(value="sword"),
         "kind 'sword'"),
        (lambda d: _layer(d, "items")["objects"][1].update(id=_layer(d, "items")["objects"][0]["id"]),
         "duplicate object id"),
        (lambda d: _layer(d, "items")["objects"][0].update(x=16, y=16), "blocked tile"),
        (lambda d: [o.update(x=16, y=16) for o in _layer(d, "spawns")["objects"]],
         "every spawn point"),
    ],
)
def test_bad_map_raises_clear_error(raw_default: dict, change, expected: str) -> None:
    with pytest.raises(ValueError, match="map 'broken'") as exc:
        parse_map(_broken(raw_default, change), "broken")
    assert expected in str(exc.value)


def test_not_an_object() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        parse_map([], "x")


def test_bad_files(tmp_path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_map_file(tmp_path / "nope.tmj")
    bad = tmp_path / "bad.tmj"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="map 'bad' is not valid JSON"):
        load_map_file(bad)


@pytest.mark.parametrize("name", ["../default", "a/b", "", "x" * 65, "de fault"])
def test_bad_map_names(name: str) -> None:
    with pytest.raises(ValueError, match="bad map name"):
        load_map(name)


def test_missing_named_map() -> None:
    with pytest.raises(ValueError, match="map 'no_such_map' not found"):
        load_map("no_such_map")


@pytest.mark.parametrize("name", ["default", "arena"])
def test_generator_reproduces_the_shipped_map(name: str) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen", MAPS_DIR / f"generate_{name}.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.dump(gen.build()) == (MAPS_DIR / f"{name}.tmj").read_text(encoding="utf-8")
