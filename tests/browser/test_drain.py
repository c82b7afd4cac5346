"""A drain seen from the web client, through a real HAProxy (issue 11).

The page is opened via HAProxy in front of two ``tilehall serve`` nodes and the player signs
in. The node serving the player (found by its CharacterActor in each node's ``/debug/actors``)
is sent SIGTERM: it drains, and the page is moved to the other node with close 1012. The page
shows only a brief "reconnecting", resumes with a delta (no refreshed world, no new login) and
plays again: a step is acknowledged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from balancer import Balanced, require_haproxy
from test_play import ARROWS, me, sign_in, step_options, wait_position

from config.settings import Settings

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BRIEF_S = 5.0  # "a brief reconnecting"
WAIT_MS = 15000
# Each change of the status bar with the page's clock, from now on.
WATCH_STATUS = """() => {
  const el = document.getElementById('status');
  window.statusTimes = [];
  new MutationObserver(() => window.statusTimes.push([el.dataset.status, performance.now()]))
    .observe(el, { attributes: true, attributeFilter: ['data-status'] });
}"""
# The longest stretch (seconds) the status bar was not "active".
AWAY_S = """() => {
  let since = null, longest = 0;
  for (const [status, at] of window.statusTimes) {
    if (status !== 'active' && since === null) since = at;
    if (status === 'active' && since !== null) { longest = Math.max(longest, at - since); since = null; }
  }
  return (since === null ? longest : Math.max(longest, performance.now() - since)) / 1000;
}"""


@pytest.fixture
def cluster(settings: Settings, tmp_path: Path) -> Iterator[Balanced]:
    """node1 and node2 behind HAProxy, both UP."""
    require_haproxy()
    c = Balanced(settings, tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.close()


def serving_node(cluster: Balanced, character_id: str) -> str:
    """The node whose CharacterActor plays ``character_id``."""
    holders = [n.name for n in cluster.nodes if n.alive() and any(
        a.get("entity_id") == character_id for a in cluster.debug_actors(n.name, "CharacterActor"))]
    assert len(holders) == 1, f"character {character_id} is played on {holders}"
    return holders[0]


def step(page) -> None:
    """One arrow-key step to a free neighbouring tile, until it is acknowledged."""
    pos = me(page)
    options = step_options(page, diagonal=False)
    assert options, f"no free tile around {pos}"
    dx, dy = options[0]
    page.focus("#world")
    page.keyboard.press(ARROWS[(dx, dy)])
    wait_position(page, pos["x"] + dx, pos["y"] + dy)


def test_drain_shows_a_brief_reconnecting_then_plays(cluster: Balanced, new_page) -> None:
    page = new_page()
    me_ = sign_in(page, cluster.http_url, f"drain-{uuid.uuid4().hex[:6]}")
    step(page)
    node = serving_node(cluster, me_["id"])
    other = next(n.name for n in cluster.nodes if n.name != node)
    log_before = len(page.evaluate("window.tilehall.statusLog"))
    page.evaluate(WATCH_STATUS)

    cluster.terminate(node)
    page.wait_for_function(
        "(n) => window.tilehall.statusLog.length > n && window.tilehall.statusLog.at(-1) === 'active'",
        arg=log_before, timeout=WAIT_MS)
    log = page.evaluate("window.tilehall.statusLog")[log_before:]
    assert "reconnecting" in log and log[-1] == "active", log
    assert "closed" not in log, log
    away_s = page.evaluate(AWAY_S)
    print(f"\n[browser drain] status {log}, not active for {away_s:.2f} s")
    assert away_s <= BRIEF_S, f"the page was not active for {away_s:.1f} s"

    step(page)
    assert serving_node(cluster, me_["id"]) == other
    # A resume with a delta: the page says "Reconnected", never "The world was refreshed."
    chat_log = page.locator("#chat-log").inner_text()
    assert "Reconnected" in chat_log and "refreshed" not in chat_log, chat_log
    assert page.errors == []
