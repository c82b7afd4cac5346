"""Two players in two browser contexts against a live server: the issue's acceptance test.

Each signs in through the page, sees the other, walks with the keyboard (one key and two keys
for a diagonal) and by clicking, chats, strikes and heals. Then the server drops every socket:
the pages show reconnecting, then active, and nothing the player did is lost or applied twice
(checked on the page and in PostgreSQL). A page carrying an old build version is told to reload.
"""

from __future__ import annotations

import re
import secrets

import psycopg
import pytest

from config.version import SERVER_VERSION

pytestmark = pytest.mark.browser

WAIT_MS = 15000
ARROWS = {(1, 0): "ArrowRight", (-1, 0): "ArrowLeft", (0, -1): "ArrowUp", (0, 1): "ArrowDown"}
WASD = {(1, 0): "d", (-1, 0): "a", (0, -1): "w", (0, 1): "s"}

# Rewrites the page's build version before the app reads it: a tab left open across an upgrade.
STALE_VERSION = """
new MutationObserver((_, obs) => {
  const m = document.querySelector('meta[name="tilehall-version"]');
  if (m) { m.content = '0.0.1-stale'; obs.disconnect(); }
}).observe(document, { childList: true, subtree: true });
"""


# ---- helpers: everything goes through the page, as a player would ----


def sign_in(page, base_url: str, name: str) -> dict:
    page.goto(base_url + "/")
    page.fill("#dev-name", name)
    page.press("#dev-name", "Enter")
    page.wait_for_selector('#status[data-status="active"]', timeout=WAIT_MS)
    page.wait_for_function("window.tilehall.self !== null", timeout=WAIT_MS)
    page.wait_for_selector("#stage-note", state="hidden", timeout=WAIT_MS)  # map loaded
    return me(page)


def me(page) -> dict:
    return page.evaluate("window.tilehall.self")


def wait_position(page, x: int, y: int) -> None:
    page.wait_for_function(
        "([x, y]) => { const s = window.tilehall.self; return s && s.x === x && s.y === y; }",
        arg=[x, y], timeout=WAIT_MS,
    )
    page.wait_for_function("window.tilehall.pending.length === 0", timeout=WAIT_MS)


def wait_sees(page, name: str, x: int, y: int) -> None:
    """The 'nearby' panel lists ``name`` at (x, y)."""
    page.locator("#nearby li", has_text=name).filter(has_text=f"({x}, {y})").wait_for(timeout=WAIT_MS)


def walkable(page, x: int, y: int) -> bool:
    return page.evaluate(
        "([x, y]) => !window.tilehall.blocked(x, y) && !window.tilehall.characters.some((c) => c.x === x && c.y === y)",
        [x, y],
    )


def step_options(page, diagonal: bool) -> list[tuple[int, int]]:
    pos = me(page)
    dirs = [(1, 1), (1, -1), (-1, 1), (-1, -1)] if diagonal else list(ARROWS)
    ok = []
    for dx, dy in dirs:
        if not walkable(page, pos["x"] + dx, pos["y"] + dy):
            continue
        # The server refuses a diagonal squeezed between two blocked tiles.
        if diagonal and not (walkable(page, pos["x"] + dx, pos["y"]) or walkable(page, pos["x"], pos["y"] + dy)):
            continue
        ok.append((dx, dy))
    return ok


def click_tile(page, x: int, y: int) -> None:
    point = page.wait_for_function("([x, y]) => window.tilehall.clientPoint(x, y)", arg=[x, y], timeout=WAIT_MS)
    p = point.json_value()
    hit = page.evaluate("([x, y]) => document.elementFromPoint(x, y)?.id ?? null", [p["x"], p["y"]])
    assert hit == "world", f"tile ({x}, {y}) at {p} is not on the visible map (under it: {hit})"
    page.mouse.click(p["x"], p["y"])


def chat(page, text: str) -> None:
    page.focus("#world")
    page.keyboard.press("Enter")  # Enter focuses the chat box
    assert page.evaluate("document.activeElement.id") == "chat-input"
    page.keyboard.type(text)
    page.keyboard.press("Enter")  # and sends


def chat_lines(page, text: str):
    return page.locator("#chat-log li", has_text=text)


def shows_health(value: int) -> re.Pattern:
    """'90/100' or, for someone whose maximum is not known yet, '90 health'."""
    return re.compile(rf"\b{value}(/\d+| health)")


def health(page) -> int:
    return me(page)["health"]


def db_count(database_url: str, sql: str, *params) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchone()[0]


# ---- the acceptance test ----


def test_two_players_meet_move_chat_fight_and_survive_a_drop(live_server, new_page, screenshot):
    base = live_server.url
    tag = secrets.token_hex(2)
    alice_name, bob_name = f"alice-{tag}", f"bob-{tag}"
    alice, bob = new_page(), new_page()

    # Each signs in. Spawn points are spread over the village, beyond one another's view.
    sign_in(alice, base, alice_name)
    sign_in(bob, base, bob_name)
    alice.focus("#world")
    for _ in range(8):
        # Zoom all the way out (extra presses are ignored): the camera follows Alice, and at the
        # smallest zoom every tile of the village is on her screen from any spawn point.
        alice.keyboard.press("-")

    # Click: Alice walks to a free tile two steps from Bob (her map knows where she can walk).
    a0, b0 = me(alice), me(bob)
    ring = [(b0["x"] + i, b0["y"] + j) for i in range(-2, 3) for j in range(-2, 3) if max(abs(i), abs(j)) == 2]
    meet = min(
        (t for t in ring if walkable(alice, *t) and walkable(bob, *t)),
        key=lambda t: max(abs(t[0] - a0["x"]), abs(t[1] - a0["y"])),
    )
    click_tile(alice, *meet)
    wait_position(alice, *meet)

    # Keyboard: one arrow key is one step, and each sees the other once they are close.
    b1 = me(bob)
    (dx, dy) = step_options(bob, diagonal=False)[0]
    bob.focus("#world")
    bob.keyboard.press(ARROWS[(dx, dy)])
    wait_position(bob, b1["x"] + dx, b1["y"] + dy)
    wait_sees(alice, bob_name, b1["x"] + dx, b1["y"] + dy)

    a1 = me(alice)
    (dx, dy) = step_options(alice, diagonal=False)[0]
    alice.focus("#world")
    alice.keyboard.press(ARROWS[(dx, dy)])
    wait_position(alice, a1["x"] + dx, a1["y"] + dy)
    wait_sees(bob, alice_name, a1["x"] + dx, a1["y"] + dy)

    # Two keys held together walk diagonally (WASD this time).
    a1 = me(alice)
    (dx, dy) = step_options(alice, diagonal=True)[0]
    alice.keyboard.down(WASD[(dx, 0)])
    alice.keyboard.down(WASD[(0, dy)])
    alice.wait_for_function(
        "([x, y]) => { const s = window.tilehall.self; return s.x !== x || s.y !== y; }",
        arg=[a1["x"], a1["y"]], timeout=WAIT_MS,
    )
    alice.keyboard.up(WASD[(dx, 0)])
    alice.keyboard.up(WASD[(0, dy)])
    alice.wait_for_function("window.tilehall.pending.length === 0", timeout=WAIT_MS)
    a2 = me(alice)
    moved = (a2["x"] - a1["x"], a2["y"] - a1["y"])
    n = abs(moved[0])  # held keys repeat: one or more steps, every one diagonal
    assert n >= 1 and moved == (dx * n, dy * n), (a1, a2)
    wait_sees(bob, alice_name, a2["x"], a2["y"])

    # Click again: right next to Bob.
    b = me(bob)
    around = [(b["x"] + i, b["y"] + j) for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)]
    goal = min(
        (t for t in around if walkable(alice, *t)),
        key=lambda t: max(abs(t[0] - a2["x"]), abs(t[1] - a2["y"])),
    )
    click_tile(alice, *goal)
    wait_position(alice, *goal)
    wait_sees(bob, alice_name, *goal)
    alice.locator("#nearby li", has_text=bob_name).filter(has_text="adjacent").wait_for(timeout=WAIT_MS)

    # Chat: Enter focuses the box, Enter sends; the line is confirmed when acked.
    hello = f"hello {bob_name}, it is {alice_name} [{tag}]"
    chat(alice, hello)
    chat_lines(bob, hello).wait_for(timeout=WAIT_MS)
    alice.locator('#chat-log li[data-state="sent"]', has_text=hello).wait_for(timeout=WAIT_MS)
    assert chat_lines(alice, hello).count() == 1 and chat_lines(bob, hello).count() == 1

    # Strike: click Bob to target him, press 1; both pages show his health drop.
    click_tile(alice, b["x"], b["y"])
    alice.locator("#target", has_text=bob_name).wait_for(timeout=WAIT_MS)
    before = health(bob)
    alice.focus("#world")
    alice.keyboard.press("1")
    bob.wait_for_function("(h) => window.tilehall.self.health < h", arg=before, timeout=WAIT_MS)
    hurt = health(bob)
    alice.locator("#nearby li", has_text=bob_name).filter(has_text=shows_health(hurt)).wait_for(timeout=WAIT_MS)
    bob.locator("#self-health", has_text=f"{hurt}/").wait_for(timeout=WAIT_MS)
    alice.locator(".ability[data-ability='strike'].cooling").wait_for(timeout=WAIT_MS)  # cooldown shown

    # Heal: Bob presses 2 and heals himself; Alice sees him do it and his new health (the
    # ability event carries the healer's own new health).
    bob.focus("#world")
    bob.keyboard.press("2")
    bob.wait_for_function("(h) => window.tilehall.self.health > h", arg=hurt, timeout=WAIT_MS)
    healed = health(bob)
    bob.locator("#self-health", has_text=f"{healed}/").wait_for(timeout=WAIT_MS)
    alice.locator("#chat-log li", has_text=f"{bob_name} heals themself").wait_for(timeout=WAIT_MS)
    alice.locator("#nearby li", has_text=bob_name).filter(has_text=shows_health(healed)).wait_for(timeout=WAIT_MS)

    # The main screen, at the normal zoom.
    alice.keyboard.press("0")
    a3 = me(alice)
    alice.wait_for_function("([x, y]) => window.tilehall.clientPoint(x, y)", arg=[a3["x"], a3["y"]], timeout=WAIT_MS)
    alice.locator("#latency", has_text="ms").wait_for(timeout=WAIT_MS)
    screenshot(alice, "main")

    # --- the server drops every socket; Alice's network is also out for a while ---
    in_flight = f"in flight when the line dropped [{tag}]"
    queued = f"typed while reconnecting [{tag}]"
    chat(alice, in_flight)  # its ack may or may not make it before the drop
    alice_ctx = alice.context
    assert live_server.drop_all_sockets() >= 2
    alice_ctx.set_offline(True)

    bob.wait_for_function("window.tilehall.statusLog.slice(-4).includes('reconnecting')", timeout=WAIT_MS)
    bob.wait_for_selector('#status[data-status="active"]', timeout=WAIT_MS)
    alice.wait_for_selector('#status[data-status="reconnecting"]', timeout=WAIT_MS)
    chat(alice, queued)
    alice.locator('#chat-log li[data-state="pending"]', has_text=queued).wait_for(timeout=WAIT_MS)
    alice.locator("#pending").wait_for(state="visible", timeout=WAIT_MS)
    alice.locator("#status-text", has_text="Attempt").wait_for(timeout=WAIT_MS)
    screenshot(alice, "reconnecting")

    alice_ctx.set_offline(False)
    alice.wait_for_selector('#status[data-status="active"]', timeout=WAIT_MS)
    for text in (in_flight, queued):
        alice.locator('#chat-log li[data-state="sent"]', has_text=text).wait_for(timeout=WAIT_MS)
        chat_lines(bob, text).wait_for(timeout=WAIT_MS)
    alice.wait_for_function("window.tilehall.pending.length === 0", timeout=WAIT_MS)

    # Still playing after the resume: a step, seen by Bob.
    alice.focus("#world")
    a4 = me(alice)
    (dx, dy) = step_options(alice, diagonal=False)[0]
    alice.keyboard.press(ARROWS[(dx, dy)])
    wait_position(alice, a4["x"] + dx, a4["y"] + dy)
    wait_sees(bob, alice_name, a4["x"] + dx, a4["y"] + dy)

    # Nothing lost, nothing twice: on both pages and in the durable log.
    for text in (hello, in_flight, queued):
        assert chat_lines(alice, text).count() == 1, text
        assert chat_lines(bob, text).count() == 1, text
    db = live_server.settings.database_url
    alice_id = me(alice)["id"]
    for text in (hello, in_flight, queued):
        assert db_count(
            db, "SELECT count(*) FROM action_event WHERE character_id = %s AND action_type = 'chat' AND payload_json->>'text' = %s",
            alice_id, text,
        ) == 1, text
    assert db_count(
        db, "SELECT count(*) - count(DISTINCT sequence_number) FROM action_event WHERE character_id = %s AND sequence_number IS NOT NULL",
        alice_id,
    ) == 0, "a sequence number was persisted twice"
    final = me(alice)
    assert db_count(db, "SELECT count(*) FROM character_profile WHERE character_id = %s AND position_x = %s AND position_y = %s",
                    alice_id, final["x"], final["y"]) == 1
    for page in (alice, bob):
        log = page.evaluate("window.tilehall.statusLog")
        assert "reconnecting" in log and log[-1] == "active", log
        assert page.errors == []


def test_stale_page_is_told_to_reload(live_server, new_page, screenshot):
    page = new_page()
    page.add_init_script(STALE_VERSION)
    page.goto(live_server.url + "/")
    assert page.get_attribute('meta[name="tilehall-version"]', "content") == "0.0.1-stale"
    page.fill("#dev-name", f"stale-{secrets.token_hex(2)}")
    page.press("#dev-name", "Enter")
    dialog = page.locator("#modal [role=alertdialog]")
    dialog.wait_for(timeout=WAIT_MS)
    text = dialog.inner_text()
    assert "reload" in text.lower() and SERVER_VERSION in text and "0.0.1-stale" in text
    assert page.evaluate("document.activeElement.textContent") == "Reload"
    log = page.evaluate("window.tilehall.statusLog")
    assert "active" not in log and "reconnecting" not in log and log[-1] == "closed", log
    screenshot(page, "version-mismatch")
