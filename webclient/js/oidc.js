// OpenID Connect sign-in: Authorization Code with PKCE against the issuer the server names at
// GET /auth/config, token renewal with the refresh token, and sign-out at the IdP.
// Every protocol step is oauth4webapi's (vendor/oauth4webapi, pinned); this module only keeps
// the state between the steps and picks the token the game server checks (ID or access token).

import * as oauth from './vendor/oauth4webapi/oauth4webapi.js';

const PENDING_KEY = 'tilehall.oidc.pending'; // verifier, state and nonce while at the IdP

/** The server's public sign-in settings; a plain file server (no /auth/config) means dev. */
export async function loadAuthConfig(fallbackMode) {
  try {
    const res = await fetch('/auth/config', { headers: { Accept: 'application/json' } });
    if (res.ok) return await res.json();
  } catch {
    /* offline or not a tilehall server: fall through */
  }
  return { mode: fallbackMode, dev_login: fallbackMode === 'dev', oidc: null };
}

/** The page's own address, where the IdP sends the player back (registered at the IdP). */
export function redirectUri(location = window.location) {
  return `${location.origin}/`;
}

function isLoopback(url) {
  return ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
}

/** An issuer's metadata and client, shared by every step of one sign-in. */
class Provider {
  constructor(config, as) {
    this.config = config;
    this.as = as;
    this.client = { client_id: config.client_id };
    this.clientAuth = oauth.None();
    // Plain http only to an IdP on this machine (the tests' provider); https everywhere else.
    this.options = new URL(config.issuer).protocol === 'http:' && isLoopback(new URL(config.issuer))
      ? { [oauth.allowInsecureRequests]: true }
      : {};
  }

  static async discover(config) {
    const issuer = new URL(config.issuer);
    const opts = issuer.protocol === 'http:' && isLoopback(issuer) ? { [oauth.allowInsecureRequests]: true } : {};
    const response = await oauth.discoveryRequest(issuer, { algorithm: 'oidc', ...opts });
    return new Provider(config, await oauth.processDiscoveryResponse(issuer, response));
  }

  /** The token the game server checks, from a token endpoint result. */
  gameToken(result) {
    const token = this.config.token === 'access' ? result.access_token : result.id_token;
    if (!token) throw new Error(`The identity provider sent no ${this.config.token === 'access' ? 'access' : 'ID'} token.`);
    return token;
  }
}

const providers = new Map(); // issuer -> Promise<Provider>
function provider(config) {
  if (!providers.has(config.issuer)) {
    const p = Provider.discover(config);
    p.catch(() => providers.delete(config.issuer));
    providers.set(config.issuer, p);
  }
  return providers.get(config.issuer);
}

/** Go to the IdP's sign-in page (the page unloads; finishSignIn runs when it comes back). */
export async function startSignIn(config, location = window.location) {
  const p = await provider(config);
  const verifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  const nonce = oauth.generateRandomNonce();
  const url = new URL(p.as.authorization_endpoint);
  for (const [k, v] of Object.entries(config.auth_params || {})) url.searchParams.set(k, v);
  url.searchParams.set('client_id', config.client_id);
  url.searchParams.set('redirect_uri', redirectUri(location));
  url.searchParams.set('response_type', 'code');
  url.searchParams.set('scope', config.scopes.join(' '));
  url.searchParams.set('code_challenge', await oauth.calculatePKCECodeChallenge(verifier));
  url.searchParams.set('code_challenge_method', 'S256');
  url.searchParams.set('state', state);
  url.searchParams.set('nonce', nonce);
  sessionStorage.setItem(PENDING_KEY, JSON.stringify({ verifier, state, nonce, issuer: config.issuer }));
  location.assign(url.href);
}

/** True when this page load is the IdP sending the player back (?code= or ?error=). */
export function isSignInReturn(location = window.location) {
  const q = new URLSearchParams(location.search);
  return sessionStorage.getItem(PENDING_KEY) !== null && (q.has('code') || q.has('error')) && q.has('state');
}

/**
 * Finish a sign-in on the way back from the IdP: check the response, trade the code for
 * tokens, and clean the address bar. Returns an {@link OidcSession}.
 */
export async function finishSignIn(config, location = window.location, history = window.history) {
  const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) || 'null');
  sessionStorage.removeItem(PENDING_KEY);
  const current = new URL(location.href);
  history.replaceState(null, '', location.pathname); // the code is single-use: never keep it
  if (!pending || pending.issuer !== config.issuer) throw new Error('This sign-in was not started here; please sign in again.');
  const p = await provider(config);
  let params;
  try {
    params = oauth.validateAuthResponse(p.as, p.client, current, pending.state);
  } catch (err) {
    if (err instanceof oauth.AuthorizationResponseError) {
      throw new Error(`The identity provider refused the sign-in: ${err.error_description || err.error}.`);
    }
    throw err;
  }
  const extra = new URLSearchParams(config.auth_params || {});
  const response = await oauth.authorizationCodeGrantRequest(
    p.as, p.client, p.clientAuth, params, redirectUri(location), pending.verifier,
    { additionalParameters: extra, ...p.options },
  );
  const result = await oauth.processAuthorizationCodeResponse(p.as, p.client, response, {
    expectedNonce: pending.nonce,
    requireIdToken: true,
  });
  return new OidcSession(config, {
    token: p.gameToken(result),
    idToken: result.id_token,
    refreshToken: result.refresh_token || null,
  });
}

/** One signed-in player's tokens: renews with the refresh token, signs out at the IdP. */
export class OidcSession {
  constructor(config, { token, idToken, refreshToken }) {
    this.config = config;
    this.token = token;
    this.idToken = idToken;
    this.refreshToken = refreshToken;
  }

  get canRenew() {
    return Boolean(this.refreshToken);
  }

  /** A fresh game token from the refresh token (rotated refresh tokens are kept). */
  async renew() {
    if (!this.refreshToken) throw new Error('no refresh token: sign in again');
    const p = await provider(this.config);
    const response = await oauth.refreshTokenGrantRequest(
      p.as, p.client, p.clientAuth, this.refreshToken,
      { additionalParameters: new URLSearchParams(this.config.auth_params || {}), ...p.options },
    );
    const result = await oauth.processRefreshTokenResponse(p.as, p.client, response);
    if (result.refresh_token) this.refreshToken = result.refresh_token;
    if (result.id_token) this.idToken = result.id_token;
    this.token = p.gameToken(result);
    return this.token;
  }

  /** Leave the IdP session too: its end_session_endpoint, back to this page afterwards. */
  async signOut(location = window.location) {
    const p = await provider(this.config);
    if (this.refreshToken && p.as.revocation_endpoint) {
      try {
        await oauth.processRevocationResponse(
          await oauth.revocationRequest(p.as, p.client, p.clientAuth, this.refreshToken, p.options),
        );
      } catch {
        /* the IdP session end below ends the grant anyway */
      }
    }
    this.refreshToken = null;
    if (!p.as.end_session_endpoint) return false;
    const url = new URL(p.as.end_session_endpoint);
    url.searchParams.set('client_id', this.config.client_id);
    if (this.idToken) url.searchParams.set('id_token_hint', this.idToken);
    url.searchParams.set('post_logout_redirect_uri', redirectUri(location));
    location.assign(url.href);
    return true;
  }

  toJSON() {
    return { token: this.token, idToken: this.idToken, refreshToken: this.refreshToken };
  }
}
