"""The operators' console in a real browser (issue 14).

Two nodes run (in this process, on one database and Redis). The console of node one is opened;
a player signs in and appears in its actor table within 2 s; the player's session detail shows
every PlayerSession field of the data model and links to its character, whose detail shows the
CharacterProfile and links back; a broadcast reaches the player's chat; the operator kicks the
session (confirmed in the page) and the player's page receives ``kicked operator``, stops and
says so in words; and the cluster list shows both nodes.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from test_play import WAIT_MS, sign_in

from config.version import SERVER_VERSION

pytestmark = pytest.mark.browser

APPEAR_MS = 2000
SESSION_FIELDS = ("session_id", "user_id", "character_id", "status", "last_action_seq",
                  "last_heartbeat_at", "protocol_version", "reconnect_attempts")
PROFILE_FIELDS = ("character_id", "user_id", "display_name", "position", "health", "last_action_seq")


def field(page, name: str) -> str:
    return page.locator(f'#detail-fields tr[data-field="{name}"] td').inner_text()


def confirm(page) -> None:
    page.wait_for_selector("#confirm[open]", timeout=WAIT_MS)
    page.click("#confirm-ok")


def test_console_shows_a_new_player_inspects_kicks_and_lists_the_cluster(start_server, new_page, screenshot) -> None:
    one, two = start_server(), start_server()
    console = new_page()
    console.goto(one.url + "/debug/")
    console.wait_for_selector("#summary .card", timeout=WAIT_MS)
    console.wait_for_function("Number(document.body.dataset.refreshed) >= 2", timeout=WAIT_MS)

    player = new_page()
    frames: list[dict] = []
    player.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(json.loads(payload))))
    name = f"op-{uuid.uuid4().hex[:6]}"
    me = sign_in(player, one.url, name)
    session_id = player.evaluate("window.tilehall.sessionId")
    assert session_id
    started = time.monotonic()
    row = f'#actors tr[data-class="SessionActor"][data-entity="{session_id}"]'
    console.wait_for_selector(row, timeout=APPEAR_MS)
    appeared_s = time.monotonic() - started
    print(f"\n[console] the new session appeared in the console after {appeared_s:.2f} s")
    assert appeared_s <= APPEAR_MS / 1000

    # Both nodes in the cluster list.
    for node in (one, two):
        console.wait_for_selector(f'#cluster tr[data-node="{node.node.node_id}"]', timeout=WAIT_MS)
    assert console.locator("#cluster tbody tr").count() == 2
    console.evaluate("window.scrollTo(0, 0)")
    screenshot(console, "console")

    # The session's detail: every seed field of a PlayerSession, with the right values.
    console.click(f"{row} button")
    console.wait_for_selector('#detail-fields tr[data-field="reconnect_attempts"]', timeout=WAIT_MS)
    for f in SESSION_FIELDS:
        assert console.locator(f'#detail-fields tr[data-field="{f}"]').count() == 1, f
    assert field(console, "session_id") == session_id
    assert field(console, "user_id") == name
    assert field(console, "character_id") == me["id"]
    assert field(console, "status") == "active"
    assert field(console, "protocol_version") == SERVER_VERSION
    assert field(console, "reconnect_attempts") == "0"
    assert field(console, "last_heartbeat_at").endswith("Z")
    console.wait_for_selector('#detail-messages tr[data-message="StartSession"]', timeout=WAIT_MS)
    screenshot(console, "console-session")

    # session -> character -> back to the session.
    console.click('#detail-links [data-link="character"]')
    console.wait_for_function(
        "(id) => document.querySelector('#detail-h').textContent.includes(id)", arg=me["id"], timeout=WAIT_MS)
    console.wait_for_selector('#detail-fields tr[data-field="display_name"]', timeout=WAIT_MS)
    for f in PROFILE_FIELDS:
        assert console.locator(f'#detail-fields tr[data-field="{f}"]').count() == 1, f
    assert field(console, "session_id") == session_id
    assert console.locator('#detail-links [data-link="zone"]').count() == 1
    console.click('#detail-links [data-link="session"]')
    console.wait_for_selector("#kick", timeout=WAIT_MS)

    # A broadcast to the zone reaches the player.
    console.fill("#broadcast-text", "Maintenance in five minutes")
    console.click('#broadcast button[type="submit"]')
    confirm(console)
    console.wait_for_function(
        "document.getElementById('op-result').textContent.startsWith('Broadcast to 1 session')", timeout=WAIT_MS)
    player.locator("#chat-log", has_text="Announcement: Maintenance in five minutes").wait_for(timeout=WAIT_MS)

    # Kick: confirmed in the page; the player's socket gets a readable kicked frame and closes.
    console.click("#kick")
    confirm(console)
    player.wait_for_selector('#status[data-status="closed"]', timeout=WAIT_MS)
    assert {"type": "kicked", "reason": "operator"} in frames, frames[-5:]
    player.wait_for_selector("#modal:not([hidden])", timeout=WAIT_MS)
    body = player.locator("#modal-body").inner_text()
    assert "operator" in body and "ended your session" in body, body
    screenshot(player, "console-kicked")
    console.wait_for_function(
        "document.getElementById('op-result').textContent.startsWith('Kicked session')", timeout=WAIT_MS)
    # The player stays out: no automatic resume after an operator's kick.
    player.wait_for_timeout(1500)
    assert player.evaluate("window.tilehall.statusLog.at(-1)") == "closed"
    assert console.errors == [] and player.errors == []
