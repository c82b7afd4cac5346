// Where the sign-in token comes from, and keeping it fresh.
// Sources: the URL fragment (#token=<JWT>, never the query string), a pasted token, or, on a dev
// server, POST /auth/dev-login with a name. The token lives in sessionStorage (this tab only) so a
// reload keeps you signed in.

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

/** Holds the current token; renews dev tokens before they expire and reports each renewal. */
export class TokenKeeper {
  constructor({ token, devName = null, onRenewed = () => {}, onExpiring = () => {} }) {
    this.token = token;
    this.devName = devName;
    this.onRenewed = onRenewed;
    this.onExpiring = onExpiring;
    this._timer = null;
    this._schedule();
  }

  static restore(opts) {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || 'null');
      if (!saved?.token) return null;
      const exp = tokenClaims(saved.token).exp;
      if (exp && exp * 1000 < Date.now() && !saved.devName) return null;
      return new TokenKeeper({ ...opts, token: saved.token, devName: saved.devName || null });
    } catch {
      return null;
    }
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
    sessionStorage.setItem(STORE_KEY, JSON.stringify({ token: this.token, devName: this.devName }));
  }

  forget() {
    clearTimeout(this._timer);
    sessionStorage.removeItem(STORE_KEY);
  }

  /** The token to send; renewed first when asked to, or when it is about to expire. */
  async get({ refresh = false } = {}) {
    const soon = this.expiresAtMs - Date.now() < this.refreshLeadMs;
    if ((refresh || soon) && this.devName) await this.renew();
    else if (refresh) throw new Error('token expired');
    return this.token;
  }

  async renew() {
    const { token } = await devLogin(this.devName);
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
      if (this.devName) this.renew().catch(() => this.onExpiring(this.expiresAtMs));
      else this.onExpiring(this.expiresAtMs);
    }, Math.min(Math.max(wait, 1000), 2 ** 31 - 1));
  }
}
