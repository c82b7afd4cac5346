"""Accessibility of the web client's page, checked in Chromium without a game server: labels,
live regions, keyboard reachability and text contrast (WCAG AA, 4.5:1)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

# Fill the game screen with one of everything, as a session would, without a server.
SHOW_GAME = """() => {
  document.getElementById('login-screen').hidden = true;
  document.getElementById('game-screen').hidden = false;
  document.getElementById('self-card').hidden = false;
  document.getElementById('pending').hidden = false;
  document.getElementById('pending').textContent = '2 actions pending';
  document.getElementById('latency').textContent = '42 ms';
  document.getElementById('self-name').textContent = 'alice';
  document.getElementById('whoami').textContent = 'alice';
  document.getElementById('self-health').textContent = '90/100 health';
  document.getElementById('self-pos').textContent = '(4, 6)';
  const log = document.getElementById('chat-log');
  for (const [cls, text] of [['line line-chat', 'hi'], ['line line-system', 'bob arrived.'],
                             ['line line-alert', 'Connection lost.'], ['line line-combat', 'You strike bob.']]) {
    const li = document.createElement('li');
    li.className = cls;
    li.innerHTML = '<time>12:00</time> <b class="from">bob:</b> <span class="text"></span> <span class="state">sending…</span>';
    li.querySelector('.text').textContent = text;
    log.append(li);
  }
  document.getElementById('nearby').innerHTML =
    '<li><button class="person" type="button"><span class="person-name">bob</span><span class="person-meta">100/100 · adjacent</span></button></li>';
  document.getElementById('inventory').innerHTML = '<li><span class="item-name">Potion</span><button type="button">Use</button></li>';
  const t = document.createElement('div');
  t.className = 'toast'; t.textContent = 'Move refused: something is in the way.';
  document.getElementById('toasts').append(t);
  const i = document.createElement('div');
  i.className = 'toast toast-info'; i.textContent = 'Strike is cooling down.';
  document.getElementById('toasts').append(i);
}"""

# Contrast of an element's text against the backgrounds behind it (alpha composited).
CONTRAST = """(sel) => {
  const parse = (c) => { const m = c.match(/[\\d.]+/g).map(Number); return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1]; };
  const over = (top, under) => [0, 1, 2].map((i) => top[i] * top[3] + under[i] * (1 - top[3])).concat(1);
  const lum = (c) => { const [r, g, b] = c.slice(0, 3).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
                       return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  return [...document.querySelectorAll(sel)].filter((el) => el.offsetParent !== null && el.textContent.trim()).map((el) => {
    const layers = [];
    for (let n = el; n; n = n.parentElement) layers.push(parse(getComputedStyle(n).backgroundColor));
    let bg = [11, 14, 19, 1];  // the page background under everything (the map is dark too)
    for (const layer of layers.reverse()) bg = over(layer, bg);
    const fg = over(parse(getComputedStyle(el).color), bg);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    return { sel, text: el.textContent.trim().slice(0, 30), ratio: (a + 0.05) / (b + 0.05) };
  });
}"""

TEXT = [
    "#status-text", "#pending", "#latency", ".whoami", ".card h2", "#target", ".self-name", ".self-meta span",
    ".person-name", ".person-meta", ".item-name", ".inventory button", ".chat-log time", ".chat-log .from",
    ".chat-log .text", ".chat-log .state", ".ability-label", ".ability kbd", ".toast", "#logout", ".chat-form button",
]


@pytest.fixture
def page(new_page, client_files):
    p = new_page()
    p.goto(client_files + "/")
    p.wait_for_selector("#dev-name:focus")
    return p


def test_login_form_is_labelled_and_focused(page):
    unlabelled = page.evaluate("""[...document.querySelectorAll('#login-screen input, #login-screen textarea')]
        .filter((el) => !el.labels.length && !el.getAttribute('aria-label')).map((el) => el.id)""")
    assert unlabelled == []
    ratios = page.evaluate(CONTRAST, ".login label, .tagline, .hint, .version-line, .login button, .token-login summary")
    assert ratios and all(r["ratio"] >= 4.5 for r in ratios), ratios


def test_game_screen_text_has_enough_contrast(page):
    page.evaluate(SHOW_GAME)
    for status in ("connecting", "active", "reconnecting", "terminating", "closed"):
        page.evaluate("(s) => { document.getElementById('status').dataset.status = s; }", status)
        results = [r for sel in TEXT for r in page.evaluate(CONTRAST, sel)]
        covered = {r["sel"] for r in results}
        assert covered == set(TEXT), set(TEXT) - covered
        low = [r for r in results if r["ratio"] < 4.5]
        assert low == [], (status, low)


def test_live_regions_and_keyboard_reach(page):
    page.evaluate(SHOW_GAME)
    roles = page.evaluate("""() => ({
        log: [document.getElementById('chat-log').getAttribute('role'), document.getElementById('chat-log').getAttribute('aria-live')],
        status: document.getElementById('status').getAttribute('role'),
        toasts: document.getElementById('toasts').getAttribute('aria-live'),
        dialog: document.querySelector('#modal [role=alertdialog]') !== null,
        canvas: [document.getElementById('world').tabIndex, document.getElementById('world').getAttribute('aria-label')],
    })""")
    assert roles["log"] == ["log", "polite"]
    assert roles["status"] == "status"
    assert roles["toasts"] in ("polite", "assertive")
    assert roles["dialog"]
    assert roles["canvas"][0] == 0 and "Arrow keys" in roles["canvas"][1]

    # Tab from the map reaches every control of the game screen, in a sensible order.
    page.focus("#world")
    reached = []
    for _ in range(20):
        page.keyboard.press("Tab")
        reached.append(page.evaluate(
            "document.activeElement.id || document.activeElement.dataset.ability || document.activeElement.className"
        ))
    for want in ["strike", "heal", "pickup", "use_item", "person", "chat-input", "logout"]:
        assert want in reached, (want, reached)
    assert reached.index("strike") < reached.index("chat-input")
