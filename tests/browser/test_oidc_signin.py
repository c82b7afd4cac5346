"""Signing in through a real identity provider (issue 13): panva's oidc-provider, run by Node.js
from tests/oidc/, in front of a production-mode server that checks its tokens by JWKS.

Headless Chromium signs in on the provider's own login and consent pages (Authorization Code
with PKCE), plays, gets its short-lived token renewed on the live socket (one WebSocket, one
hello, the server counts the reauth), keeps playing across a signing-key rotation (the renewed
token carries the new key id and the server fetches it), and signs out: the game session ends,
the refresh token is revoked and the provider's session is gone (it asks for the password again).
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request

import pytest
from oidc_idp import IdentityProvider, ensure_installed, node_missing
from test_play import WAIT_MS, me, step_options, wait_position
from waiting import wait_until

# The story waits out real token lifetimes (and `npm ci` on a first run): more than the suite's
# default per-test timeout.
pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

TOKEN_TTL_S = 20  # the provider's ID and access token lifetime: renewal happens within the test
LEEWAY_S = 1
ARROWS = {(1, 0): "ArrowRight", (-1, 0): "ArrowLeft", (0, -1): "ArrowUp", (0, 1): "ArrowDown"}

# Counts the page's WebSockets and the frame types it sends (the app's own code is untouched).
# The types are kept in sessionStorage too (this origin's), to read them after the IdP's pages.
WATCH_SOCKETS = """
window.__ws = { opened: 0, sent: [] };
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) { super(...args); window.__ws.opened += 1; }
  send(data) {
    try { window.__ws.sent.push(JSON.parse(data).type); } catch { /* not JSON */ }
    sessionStorage.setItem('test.sent', JSON.stringify(window.__ws.sent)); // survives the IdP's pages
    return super.send(data);
  }
};
"""


API_AUDIENCE = "urn:tilehall:game"


def start_idp(**kwargs) -> IdentityProvider:
    why = node_missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the sign-in tests cannot run in CI: {why}")
        pytest.skip(why)
    ensure_installed()
    return IdentityProvider(ttl_s=TOKEN_TTL_S, **kwargs)


@pytest.fixture(scope="module")
def idp():
    """The provider for ID-token sign-in (opaque access tokens)."""
    provider = start_idp()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def api_idp():
    """A provider whose access tokens are JWTs for :data:`API_AUDIENCE`."""
    provider = start_idp(access_audience=API_AUDIENCE)
    yield provider
    provider.stop()


def production_server(start_server, idp: IdentityProvider, token: str, audience: str):
    """A production-mode server whose players sign in at ``idp`` and send its ``token`` token."""
    server = start_server(
        mode="production",
        admin_token="test-admin-token",
        auth={
            "jwks_url": idp.jwks_url,
            "issuer": idp.issuer,
            "audience": audience,
            "client_id": idp.client_id,
            "scopes": ["openid", "profile"],
            "client_token": token,
            "leeway_s": LEEWAY_S,
        },
    )
    idp.allow_redirect(server.url + "/")
    return server


@pytest.fixture
def oidc_server(idp, start_server):
    """Players send the ID token (its audience is the client id)."""
    return production_server(start_server, idp, "id", idp.client_id)


def metric(server, name: str, **labels: str) -> float:
    """A sample of the server's own registry (what /metrics would show), 0 when absent."""
    return server.node.metrics.registry.get_sample_value(name, labels) or 0.0


def jwt_part(token: str, index: int) -> dict:
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def saved_session(page) -> dict:
    return page.evaluate("JSON.parse(sessionStorage.getItem('tilehall.session') || 'null')")


def sign_in_at_idp(page, idp: IdentityProvider, base_url: str) -> None:
    """Click "Sign in", fill the provider's login (and consent) page, come back playing."""
    page.goto(base_url + "/")
    page.click("#oidc-sign-in")
    page.wait_for_url(idp.issuer + "/interaction/**", timeout=WAIT_MS)
    page.fill("#login", idp.user)
    page.fill("#password", idp.password)
    page.click("#sign-in")
    page.wait_for_selector("#allow, #game-screen:not([hidden])", timeout=WAIT_MS)
    if page.url.startswith(idp.issuer):
        page.click("#allow")
    page.wait_for_url(base_url + "/", timeout=WAIT_MS)  # the code is gone from the address bar
    page.wait_for_selector('#status[data-status="active"]', timeout=WAIT_MS)
    page.wait_for_function("window.tilehall.self !== null", timeout=WAIT_MS)
    page.wait_for_selector("#stage-note", state="hidden", timeout=WAIT_MS)


def step(page) -> None:
    """One acked move with the keyboard (the position changes only on the server's ack)."""
    dx, dy = step_options(page, diagonal=False)[0]
    pos = me(page)
    page.focus("#world")
    page.keyboard.press(ARROWS[(dx, dy)])
    wait_position(page, pos["x"] + dx, pos["y"] + dy)


def wait_renewed(page, server, old_token: str) -> str:
    """The page renews ``old_token`` and sends the new one on the live socket as ``reauth``; the
    server accepts it. Returns the new token."""
    accepted_before = metric(server, "tilehall_reauths_total", outcome="accepted")
    sent_before = page.evaluate("window.__ws.sent.filter((t) => t === 'reauth').length")
    page.wait_for_function(
        "([old, n]) => { const s = JSON.parse(sessionStorage.getItem('tilehall.session') || 'null');"
        " return s && s.token !== old && window.__ws.sent.filter((t) => t === 'reauth').length > n; }",
        arg=[old_token, sent_before], timeout=(TOKEN_TTL_S + 15) * 1000,
    )
    wait_until(
        lambda: metric(server, "tilehall_reauths_total", outcome="accepted") > accepted_before,
        timeout=10, what="the server accepting the reauth",
    )
    return saved_session(page)["token"]


def wait_past_expiry(page, token: str) -> None:
    """Until the server would have ended a session still on ``token`` (exp + leeway)."""
    until_ms = (jwt_part(token, 1)["exp"] + LEEWAY_S + 1) * 1000
    page.wait_for_function("(t) => Date.now() > t", arg=until_ms, timeout=(TOKEN_TTL_S + 15) * 1000)


def refresh_grant(idp: IdentityProvider, refresh_token: str) -> int:
    """HTTP status of a refresh-token grant at the provider's token endpoint."""
    body = urllib.parse.urlencode(
        {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": idp.client_id}
    ).encode()
    try:
        with urllib.request.urlopen(idp.issuer + "/token", data=body, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_sign_in_play_renew_rotate_and_sign_out(idp, oidc_server, new_page, screenshot):
    base = oidc_server.url
    page = new_page()
    page.add_init_script(WATCH_SOCKETS)

    # --- the page knows the provider only from the server's /auth/config ---
    page.goto(base + "/")
    page.wait_for_selector("#oidc-sign-in", state="visible", timeout=WAIT_MS)
    assert page.locator("#dev-login-form").is_hidden()  # production: no dev sign-in
    assert page.text_content("#oidc-issuer") == urllib.parse.urlsplit(idp.issuer).netloc
    screenshot(page, "sign-in-oidc")

    # --- sign in on the provider's own pages, play ---
    sign_in_at_idp(page, idp, base)
    assert page.evaluate("window.tilehall.signIn.kind") == "oidc"
    assert page.text_content("#whoami") == idp.name
    assert me(page)["name"] == idp.name
    first = saved_session(page)
    assert first["oidc"]["refreshToken"]
    claims = jwt_part(first["token"], 1)
    assert claims["iss"] == idp.issuer and claims["aud"] == idp.client_id and claims["sub"] == idp.user
    step(page)

    # --- renewal on the live socket: no second WebSocket, no second hello ---
    renewed = wait_renewed(page, oidc_server, first["token"])
    assert jwt_part(renewed, 1)["exp"] > claims["exp"]
    wait_past_expiry(page, first["token"])  # a session still on the first token would be closed now
    step(page)
    assert page.evaluate("window.__ws.opened") == 1
    assert page.evaluate("window.__ws.sent.filter((t) => t === 'hello' || t === 'resume').length") == 1
    assert metric(oidc_server, "tilehall_connect_attempts_total") == 1
    assert saved_session(page)["oidc"]["refreshToken"] != first["oidc"]["refreshToken"]  # rotated

    # --- the provider rotates its signing key: the next token is signed with a key the server
    # has never seen, and it fetches the JWKS again to accept it ---
    old_kid = jwt_part(renewed, 0)["kid"]
    rotated = idp.rotate_key(keep_old=True)
    assert rotated["signing"] != old_kid
    after_rotation = wait_renewed(page, oidc_server, renewed)
    assert jwt_part(after_rotation, 0)["kid"] == rotated["signing"]
    wait_past_expiry(page, renewed)
    step(page)
    assert page.evaluate("window.__ws.opened") == 1
    assert metric(oidc_server, "tilehall_reauths_total", outcome="refused") == 0

    # --- sign out: the game session ends, then the provider's session and grant ---
    refresh_token = saved_session(page)["oidc"]["refreshToken"]
    page.click("#logout")
    page.wait_for_url(idp.issuer + "/session/end**", timeout=WAIT_MS)
    page.click("#logout-yes")
    page.wait_for_url(base + "/", timeout=WAIT_MS)
    assert page.evaluate("JSON.parse(sessionStorage.getItem('test.sent'))")[-1] == "logout"
    page.wait_for_selector("#oidc-sign-in", state="visible", timeout=WAIT_MS)
    assert saved_session(page) is None
    wait_until(lambda: metric(oidc_server, "tilehall_open_websockets") == 0, what="the game socket closed")
    assert refresh_grant(idp, refresh_token) == 400  # revoked: it renews nothing any more
    page.click("#oidc-sign-in")
    page.wait_for_url(idp.issuer + "/interaction/**", timeout=WAIT_MS)
    page.wait_for_selector("#password", timeout=WAIT_MS)  # no IdP session: the password again
    assert page.errors == []


def test_access_token_mode_signs_in_and_renews(api_idp, start_server, new_page):
    """``client_token = "access"``: the page sends the JWT access token for the server's API
    audience (not the ID token), and renews that one on the live socket."""
    server = production_server(start_server, api_idp, "access", API_AUDIENCE)
    page = new_page()
    page.add_init_script(WATCH_SOCKETS)
    sign_in_at_idp(page, api_idp, server.url)
    first = saved_session(page)
    claims = jwt_part(first["token"], 1)
    assert claims["aud"] == API_AUDIENCE and claims["client_id"] == api_idp.client_id
    assert first["token"] != first["oidc"]["idToken"]
    step(page)
    renewed = wait_renewed(page, server, first["token"])
    assert jwt_part(renewed, 1)["aud"] == API_AUDIENCE
    wait_past_expiry(page, first["token"])
    step(page)
    assert page.evaluate("window.__ws.opened") == 1
    assert metric(server, "tilehall_connect_attempts_total") == 1

    # A reload (say, after an upgrade) signs straight back in with the tab's OIDC session,
    # which still renews: its refresh token came back from sessionStorage.
    page.reload()
    page.wait_for_selector('#status[data-status="active"]', timeout=WAIT_MS)
    assert page.evaluate("window.tilehall.signIn.kind") == "oidc"
    wait_renewed(page, server, saved_session(page)["token"])
    assert page.errors == []


def test_refused_consent_is_told_and_leaves_no_session(idp, oidc_server, new_page):
    """The player denies the consent: back on the sign-in screen with the provider's reason,
    nothing kept in the address bar or the tab."""
    base = oidc_server.url
    page = new_page()
    page.goto(base + "/")
    page.click("#oidc-sign-in")
    page.wait_for_url(idp.issuer + "/interaction/**", timeout=WAIT_MS)
    page.fill("#login", idp.user)
    page.fill("#password", idp.password)
    page.click("#sign-in")
    page.click("#deny")
    page.wait_for_url(base + "/", timeout=WAIT_MS)
    page.wait_for_function(
        "document.getElementById('login-error').textContent.includes('the player said no')", timeout=WAIT_MS,
    )
    assert "refused the sign-in" in page.text_content("#login-error")
    assert saved_session(page) is None
    assert page.evaluate("sessionStorage.getItem('tilehall.oidc.pending')") is None
    assert page.locator("#game-screen").is_hidden()
    assert page.errors == []
