// A real OpenID provider for tilehall's sign-in browser tests: panva's oidc-provider with one
// test user, one public client (Authorization Code + PKCE, refresh tokens), short token
// lifetimes, its own login and consent pages, and an admin route that rotates the signing key.
//
//   node idp.mjs --port 0 [--redirect http://127.0.0.1:8888/] [--ttl 30]
//
// Prints one JSON line {"issuer": ...} on stdout once it listens. Admin routes (loopback tests
// only, never a real deployment):
//   POST /_admin/rotate[?keep_old=0]  new RSA key, first in the set, so it signs from now on;
//                                     the old key stays published unless keep_old=0
//   POST /_admin/redirect?uri=URL     the client's redirect (and post-logout) URIs from now on
//   GET  /_admin/keys                 {"signing": kid, "published": [kid, ...]}
//
// The provider's state (sessions, grants, refresh tokens) lives in one in-memory adapter shared
// by every Provider in this process: a rotation builds a new Provider with the new key set and
// swaps it in, and nobody is signed out by it.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';
// The provider's own in-memory store, made once so that every Provider built here shares it
// (a deep import of the pinned version: oidc-provider has no package "exports" map).
import { createMemoryAdapter } from 'oidc-provider/lib/adapters/memory_adapter.js';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    redirect: { type: 'string', multiple: true, default: [] },
    ttl: { type: 'string', default: '30' },
    'client-id': { type: 'string', default: 'tilehall-web' },
    user: { type: 'string', default: 'alice' },
    password: { type: 'string', default: 'wonderland' },
    name: { type: 'string', default: 'Alice' },
    // Set: access tokens are JWTs for this audience (a resource indicator every request gets).
    'access-audience': { type: 'string' },
  },
});

const TTL = Number(args.ttl);
const USER = { id: args.user, password: args.password, name: args.name };
const COOKIE_KEYS = [randomBytes(32).toString('hex')];
let keys = [newKey()];
let redirects = args.redirect;
const ADAPTER = createMemoryAdapter();
let provider = null;

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `k-${randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' };
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body><main><h1>${escapeHtml(title)}</h1>${body}</main></body></html>`;
}

function accessTokenResource() {
  const audience = args['access-audience'];
  if (!audience) return { enabled: false };
  return {
    enabled: true,
    defaultResource: () => audience,
    useGrantedResource: () => true,
    getResourceServerInfo: () => ({ scope: '', audience, accessTokenFormat: 'jwt', accessTokenTTL: TTL }),
  };
}

function build(issuer) {
  const p = new Provider(issuer, {
    clients: [
      {
        client_id: args['client-id'],
        token_endpoint_auth_method: 'none',
        application_type: 'web',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: redirects,
        post_logout_redirect_uris: redirects,
      },
    ],
    adapter: ADAPTER,
    jwks: { keys },
    cookies: { keys: COOKIE_KEYS },
    claims: { openid: ['sub'], profile: ['name', 'preferred_username'] },
    conformIdTokenClaims: false, // the profile claims go in the ID token too (the game shows the name)
    ttl: {
      AccessToken: TTL,
      IdToken: TTL,
      AuthorizationCode: 60,
      RefreshToken: 3600,
      Grant: 3600,
      Session: 3600,
      Interaction: 600,
    },
    // A public client gets a refresh token without offline_access (the default asks for it
    // and for prompt=consent); oidc-provider rotates it on every use.
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      resourceIndicators: accessTokenResource(),
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = page('Sign out of the test IdP?', `${form}
<button type="submit" form="op.logoutForm" value="yes" name="logout" id="logout-yes">Yes, sign me out</button>`);
        },
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(ctx, id) {
      if (id !== USER.id) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, name: USER.name, preferred_username: id };
        },
      };
    },
  });
  p.proxy = false;
  for (const event of ['grant.error', 'server_error', 'end_session.error', 'revocation.error']) {
    p.on(event, (ctx, err) => console.error(`${event}: ${err.message} ${err.error_description || ''} ${err.error_detail || ''}`));
  }
  return p;
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, html) {
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(html);
}

function loginPage(uid, error = '') {
  return page('Sign in to the test IdP', `
<form method="post" action="/interaction/${uid}/login" autocomplete="off">
  ${error ? `<p role="alert" id="error">${escapeHtml(error)}</p>` : ''}
  <label>Username <input name="login" id="login" required></label>
  <label>Password <input name="password" id="password" type="password" required></label>
  <button type="submit" id="sign-in">Sign in</button>
</form>`);
}

function consentPage(uid, details) {
  const scopes = details.missingOIDCScope || [];
  return page('Allow tilehall?', `
<p>tilehall asks for: <span id="scopes">${escapeHtml(scopes.join(' '))}</span></p>
<form method="post" action="/interaction/${uid}/confirm"><button type="submit" id="allow">Allow</button></form>
<form method="post" action="/interaction/${uid}/deny"><button type="submit" id="deny">Deny</button></form>`);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, page('Error', '<p>stale interaction</p>'));
  const { prompt, params, session, grantId } = details;
  if (req.method === 'GET') {
    if (prompt.name === 'login') return send(res, 200, loginPage(uid));
    return send(res, 200, consentPage(uid, prompt.details));
  }
  if (action === 'login') {
    const form = await readForm(req);
    if (form.get('login') !== USER.id || form.get('password') !== USER.password) {
      return send(res, 200, loginPage(uid, 'Wrong username or password.'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: USER.id } }, { mergeWithLastSubmission: false });
  }
  if (action === 'deny') {
    const result = { error: 'access_denied', error_description: 'the player said no' };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  }
  if (action === 'confirm') {
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    if (d.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) grant.addResourceScope(indicator, scopes.join(' '));
    }
    const saved = await grant.save();
    return provider.interactionFinished(req, res, { consent: grantId ? {} : { grantId: saved } }, { mergeWithLastSubmission: true });
  }
  return send(res, 404, page('Not found', ''));
}

function admin(req, res, url) {
  const json = (status, body) => {
    res.writeHead(status, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  if (url.pathname === '/_admin/rotate' && req.method === 'POST') {
    const fresh = newKey();
    keys = url.searchParams.get('keep_old') === '0' ? [fresh] : [fresh, ...keys];
    provider = build(provider.issuer);
    return json(200, { signing: fresh.kid, published: keys.map((k) => k.kid) });
  }
  if (url.pathname === '/_admin/redirect' && req.method === 'POST') {
    // The relying party's page, known only once the tilehall server listens.
    redirects = url.searchParams.getAll('uri');
    provider = build(provider.issuer);
    return json(200, { redirect_uris: redirects });
  }
  if (url.pathname === '/_admin/keys') return json(200, { signing: keys[0].kid, published: keys.map((k) => k.kid) });
  return json(404, { error: 'not_found' });
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://idp.invalid');
  try {
    if (url.pathname.startsWith('/_admin/')) return admin(req, res, url);
    const m = url.pathname.match(/^\/interaction\/([\w-]+)(?:\/(login|confirm|deny))?$/);
    if (m) return await interaction(req, res, m[1], m[2]);
    return provider.callback()(req, res);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) send(res, 500, page('Error', `<p>${escapeHtml(err.message)}</p>`));
  }
});

server.listen(Number(args.port), args.host, () => {
  const { port } = server.address();
  provider = build(`http://${args.host}:${port}`);
  process.stdout.write(`${JSON.stringify({ issuer: provider.issuer, client_id: args['client-id'] })}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
