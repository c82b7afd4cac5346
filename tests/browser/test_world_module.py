"""webclient/js/world.js in a real browser: how events change what the player's map shows."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

WORLD_ID = "00000000-0000-0000-0000-000000000000"


def test_an_item_growing_back_reappears_without_inventing_a_character(new_page, client_files) -> None:
    """A pickup takes the item off the map; the world's ``item_spawned`` puts it back, and its
    nil-UUID sender never shows up as a character."""
    page = new_page()
    page.goto(client_files + "/blank.html")
    got = page.evaluate(
        """async (worldId) => {
          const { World } = await import('/js/world.js');
          const w = new World();
          w.load({ id: 'me', name: 'me', x: 1, y: 1, health: 100, maxHealth: 100, inventory: [] },
                 { mapId: 'm', characters: [], items: [{ id: 'herb-1', kind: 'herb', x: 3, y: 1 }] });
          w.applyEvent({ characterId: 'me', displayName: 'me', actionType: 'ability',
                         payload: { name: 'pickup', item_id: 'herb-1', kind: 'herb' } });
          const afterPickup = [...w.items.keys()];
          const line = w.applyEvent({ characterId: worldId, displayName: 'world', actionType: 'system',
                                      payload: { kind: 'item_spawned', item_id: 'herb-1', item_kind: 'herb', x: 3, y: 1 } });
          return { afterPickup, line, items: [...w.items.values()], characters: [...w.characters.keys()] };
        }""",
        WORLD_ID,
    )
    assert got["afterPickup"] == []
    assert got["items"] == [{"id": "herb-1", "kind": "herb", "x": 3, "y": 1}]
    assert got["characters"] == ["me"]
    assert got["line"] is None
