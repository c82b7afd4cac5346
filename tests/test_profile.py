"""Profile jsonb models: strict validation, defaults, and the serialised size limit."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from actors.profile import (
    MAX_INVENTORY_ITEMS,
    Inventory,
    InventoryItem,
    Stats,
    dump_checked,
    load_checked,
)


def test_stats_defaults() -> None:
    s = Stats()
    assert (s.max_health, s.strength, s.defense, s.level, s.xp, s.defeats) == (100, 10, 2, 1, 0, 0)


@pytest.mark.parametrize(
    "bad",
    [
        {"max_health": 0},
        {"max_health": 10_001},
        {"max_health": "100"},
        {"strength": 1.5},
        {"strength": True},
        {"level": 0},
        {"xp": -1},
        {"luck": 3},
    ],
)
def test_stats_strict(bad: dict) -> None:
    with pytest.raises(ValidationError):
        Stats.model_validate(bad)


@pytest.mark.parametrize(
    "bad",
    [
        {"item_id": "item-1", "kind": "sword"},
        {"item_id": "", "kind": "gem"},
        {"item_id": 1, "kind": "gem"},
        {"item_id": "item-1"},
        {"item_id": "item-1", "kind": "gem", "extra": 1},
    ],
)
def test_inventory_item_strict(bad: dict) -> None:
    with pytest.raises(ValidationError):
        InventoryItem.model_validate(bad)


def test_inventory_max_items() -> None:
    item = {"item_id": "item-1", "kind": "herb"}
    assert len(Inventory.model_validate({"items": [item] * MAX_INVENTORY_ITEMS}).items) == 64
    with pytest.raises(ValidationError):
        Inventory.model_validate({"items": [item] * (MAX_INVENTORY_ITEMS + 1)})


def test_dump_checked_is_compact_and_round_trips() -> None:
    inv = Inventory(items=[InventoryItem(item_id="item-1", kind="potion")])
    text = dump_checked(inv, 16384)
    assert " " not in text
    assert Inventory.model_validate_json(text) == inv
    assert load_checked(Stats, dump_checked(Stats(xp=5), 16384)) == Stats(xp=5)


def test_dump_checked_limit_names_column_and_sizes() -> None:
    inv = Inventory(items=[InventoryItem(item_id="x" * 60, kind="gem")] * 64)
    size = len(inv.model_dump_json().encode())
    assert dump_checked(inv, size) and size > 1000
    with pytest.raises(ValueError, match=rf"^inventory_json is {size} bytes, limit {size - 1}$"):
        dump_checked(inv, size - 1)
    with pytest.raises(ValueError, match=r"^stats_json is \d+ bytes, limit 10$"):
        dump_checked(Stats(), 10)


def test_load_checked_sources() -> None:
    assert load_checked(Inventory, None) == Inventory()
    raw = {"items": [{"item_id": "item-2", "kind": "gem"}]}
    assert load_checked(Inventory, raw).items[0].kind == "gem"
    assert load_checked(Inventory, json.dumps(raw).encode()) == load_checked(Inventory, raw)
    with pytest.raises(ValueError, match="inventory_json is"):
        load_checked(Inventory, raw, max_bytes=10)
    with pytest.raises(ValueError, match="stats_json is"):
        load_checked(Stats, json.dumps({"xp": 1}), max_bytes=5)
    with pytest.raises(ValidationError):
        load_checked(Stats, {"xp": "1"})
