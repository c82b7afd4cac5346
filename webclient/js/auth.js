// Where the sign-in token comes from, and keeping it fresh.
// Sources: the identity provider (OpenID Connect, js/oidc.js), the URL fragment (#token=<JWT>,
// never the query string), a pasted token, or, on a dev server, POST /auth/dev-login with a name.
// The token (and an OIDC refresh token) lives in sessionStorage (this tab only) so a reload keeps
// you signed in.

const STORE_KEY = 'tilehall.session';
const REFRESH_BEFORE_MS = 5 * 60 * 1000;

/** Read the JWT payload (no verification: the server does that) for exp / sub / name. */
export function tokenClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '='));
    return JSON.parse(decodeURIComponent(escape(json)));
  } catch {
    return {};
  }
}

/** Take a token handed over as /#token=<JWT> and remove it from the address bar. */
export function takeFragmentToken(location = window.location, history = window.history) {
  const params = new URLSearchParams(location.hash.replace(/^#/, ''));
  const token = params.get('token');
  if (!token) return null;
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
  return token.trim();
}

export async function devLogin(name) {
  const res = await fetch('/auth/dev-login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  if (res.status === 404) throw new Error('This server does not offer dev sign-in.');
  if (!res.ok) {
    let detail = '';
    try {
      detail = (await res.json()).message || '';
    } catch {
      /* not JSON */
    }
    throw new Error(detail || `Sign-in failed (HTTP ${res.status}).`);
  }
  return res.json(); // {token, user_id, expires_at}
}

/**
 * Holds the current token; renews it before it expires (a dev token from /auth/dev-login, an
 * OIDC one with its refresh token: `oidc` is a js/oidc.js OidcSession) and reports each renewal.
 */
export class TokenKeeper {
  constructor({ token, devName = null, oidc = null, onRenewed = () => {}, onExpiring = () => {} }) {
    this.token = token;
    this.devName = devName;
    this.oidc = oidc;
    this._renewing = null;
    this.onRenewed = onRenewed;
    this.onExpiring = onExpiring;
    this._timer = null;
    this._schedule();
  }

  /** The tab's saved sign-in; `reviveOidc(saved)` rebuilds an OidcSession (null: none). */
  static restore({ reviveOidc = () => null, ...opts }) {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || 'null');
      if (!saved?.token) return null;
      const oidc = saved.oidc ? reviveOidc(saved.oidc) : null;
      const exp = tokenClaims(saved.token).exp;
      if (exp && exp * 1000 < Date.now() && !saved.devName && !oidc?.canRenew) return null;
      return new TokenKeeper({ ...opts, token: saved.token, devName: saved.devName || null, oidc });
    } catch {
      return null;
    }
  }

  get canRenew() {
    return Boolean(this.devName || this.oidc?.canRenew);
  }

  get claims() {
    return tokenClaims(this.token);
  }

  get expiresAtMs() {
    const exp = this.claims.exp;
    return exp ? exp * 1000 : Infinity;
  }

  // Renew 5 minutes ahead, or a fifth of the lifetime ahead for short-lived tokens.
  get refreshLeadMs() {
    const { exp, iat } = this.claims;
    if (!exp || !iat) return REFRESH_BEFORE_MS;
    return Math.min(REFRESH_BEFORE_MS, ((exp - iat) * 1000) / 5);
  }

  save() {
    const saved = { token: this.token, devName: this.devName, oidc: this.oidc ? this.oidc.toJSON() : null };
    sessionStorage.setItem(STORE_KEY, JSON.stringify(saved));
  }

  forget() {
    clearTimeout(this._timer);
    sessionStorage.removeItem(STORE_KEY);
  }

  /** The token to send; renewed first when asked to, or when it is about to expire. */
  async get({ refresh = false } = {}) {
    const soon = this.expiresAtMs - Date.now() < this.refreshLeadMs;
    if ((refresh || soon) && this.canRenew) await this.renew();
    else if (refresh) throw new Error('token expired');
    return this.token;
  }

  // One renewal at a time: a rotated refresh token is single-use, and an IdP that sees one used
  // twice revokes the whole grant.
  renew() {
    if (!this._renewing) {
      this._renewing = this._renewOnce().finally(() => {
        this._renewing = null;
      });
    }
    return this._renewing;
  }

  async _renewOnce() {
    const token = this.devName ? (await devLogin(this.devName)).token : await this.oidc.renew();
    this.token = token;
    this.save();
    this._schedule();
    this.onRenewed(token);
    return token;
  }

  _schedule() {
    clearTimeout(this._timer);
    const wait = this.expiresAtMs - Date.now() - this.refreshLeadMs;
    if (!Number.isFinite(wait)) return;
    // setTimeout overflows past ~24.8 days; long-lived tokens just get checked again later.
    this._timer = setTimeout(() => {
      if (this.canRenew) this.renew().catch(() => this.onExpiring(this.expiresAtMs));
      else this.onExpiring(this.expiresAtMs);
    }, Math.min(Math.max(wait, 1000), 2 ** 31 - 1));
  }
}
