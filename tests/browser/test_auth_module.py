"""webclient/js/auth.js's TokenKeeper with an OIDC session, in a real browser, no server.

A rotated refresh token is single-use, and a provider that sees one used twice revokes the
whole grant: so a timer renewal and a reconnect's renewal at the same moment must be one
refresh. The end-to-end flow against a real provider is test_oidc_signin.py.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

# An OidcSession stand-in: renew() takes a while and hands out numbered tokens.
KEEPER = """async () => {
  const { TokenKeeper } = await import('/js/auth.js');
  const b64 = (o) => btoa(JSON.stringify(o)).replace(/=+$/, '').replace(/\\+/g, '-').replace(/\\//g, '_');
  const now = Math.floor(Date.now() / 1000);
  const jwt = (n) => `${b64({ alg: 'RS256' })}.${b64({ sub: 'alice', iat: now, exp: now + 3600, n })}.sig`;
  const oidc = {
    calls: 0,
    get canRenew() { return true; },
    async renew() { this.calls += 1; await new Promise((r) => setTimeout(r, 50)); return jwt(this.calls); },
    toJSON() { return { token: 'x', idToken: 'y', refreshToken: 'z' }; },
  };
  const renewed = [];
  const keeper = new TokenKeeper({ token: jwt(0), oidc, onRenewed: (t) => renewed.push(t) });
  const [a, b, c] = await Promise.all([keeper.renew(), keeper.renew(), keeper.get({ refresh: true })]);
  const after = await keeper.renew();
  keeper.forget();
  return { calls: oidc.calls, same: a === b && b === c, renewed: renewed.length, fresh: after !== a };
}"""


def test_concurrent_renewals_are_one_refresh(new_page, client_files):
    page = new_page()
    page.goto(client_files + "/blank.html")
    result = page.evaluate(KEEPER)
    assert result == {"calls": 2, "same": True, "renewed": 2, "fresh": True}
    assert page.errors == []
