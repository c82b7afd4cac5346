// Wires the client together: sign-in, the connection, the world model, the renderer and the
// panels. Game rules stay on the server; this file turns protocol events into what the player sees.

import { Connection, STATUS } from './protocol.js';
import { TokenKeeper, devLogin, takeFragmentToken } from './auth.js';
import { OidcSession, finishSignIn, isSignInReturn, loadAuthConfig, startSignIn } from './oidc.js';
import { World, chebyshev } from './world.js';
import { loadMap } from './tilemap.js';
import { Renderer } from './render.js';
import { Mover } from './movement.js';
import { installControls } from './input.js';
import { StatusBar } from './ui/status.js';
import { ChatPanel } from './ui/chat.js';
import { AbilityBar } from './ui/abilities.js';
import { InventoryPanel, label as itemLabel } from './ui/inventory.js';
import { NearbyPanel } from './ui/nearby.js';
import { LoginScreen } from './ui/login.js';
import { toast } from './ui/toasts.js';
import { showModal, hideModal } from './ui/modal.js';
import { rejectText, fatalText } from './messages.js';

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content || '';
const VERSION = meta('tilehall-version');
const MODE = meta('tilehall-mode') === 'production' ? 'production' : 'dev';

const world = new World();
const canvas = document.getElementById('world');
const renderer = new Renderer(canvas, world);
const statusBar = new StatusBar();
const stageNote = document.getElementById('stage-note');

let conn = null;
let keeper = null;
const pendingMoves = new Map(); // local action id -> target tile (drawn as a ghost)
const pendingAbilities = new Map(); // local action id -> ability name
const statusLog = []; // every status this page went through, for the record (and the tests)

const mover = new Mover({
  world,
  send: (dx, dy) => sendMove(dx, dy),
  busy: () => pendingMoves.size > 0,
});

const chat = new ChatPanel({ onSend: (text) => sendChat(text) });
const abilities = new AbilityBar({ onUse: (name) => useAbility(name) });
const inventory = new InventoryPanel({ onUse: (item) => useAbility('use_item', item) });
const nearby = new NearbyPanel({ onSelect: (id) => world.setTarget(id) });
const login = new LoginScreen({
  mode: MODE,
  version: VERSION,
  onDevName: async (name) => {
    const { token } = await devLogin(name);
    begin(new TokenKeeper({ token, devName: name, ...keeperHooks() }));
  },
  onToken: async (token) => begin(new TokenKeeper({ token, ...keeperHooks() })),
});

installControls({
  canvas,
  renderer,
  mover,
  enabled: () => conn !== null && document.getElementById('modal').hidden,
  on: {
    ability: (key) => useAbility(abilities.nameForKey(key)),
    chat: () => chat.focus(),
    cycleTarget: () => world.cycleTarget(),
    clearTarget: () => world.setTarget(null),
    clickTile: (tile) => {
      const who = world.occupant(tile.x, tile.y);
      if (who && who.id !== world.selfId) world.setTarget(who.id);
      else if (!mover.walkTo(tile) && !(tile.x === world.self?.x && tile.y === world.self?.y)) {
        toast('No way to get there.', 'info', 2000);
      }
    },
  },
});

// ---- session lifecycle ----

function keeperHooks() {
  return {
    onRenewed: (token) => conn?.reauth(token),
    onExpiring: (at) =>
      toast(`Your sign-in expires at ${new Date(at).toLocaleTimeString()}. Sign in again to keep playing.`, 'warn', 10000),
  };
}

function begin(k) {
  keeper = k;
  keeper.save();
  login.hide();
  document.body.dataset.screen = 'game';
  document.getElementById('game-screen').hidden = false;
  resetGame();
  const claims = keeper.claims;
  document.getElementById('whoami').textContent = claims.name || claims.preferred_username || claims.sub || '';
  const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  conn = new Connection({ url: wsUrl, version: VERSION, getToken: (o) => keeper.get(o) });
  conn
    .on('status', onStatus)
    .on('welcome', onWelcome)
    .on('snapshot', ({ world: w }) => applyWorld(w, null))
    .on('resumed', ({ sync, replayed }) => {
      if (sync === 'snapshot') chat.add({ kind: 'system', text: 'Reconnected. The world was refreshed.' });
      else chat.add({ kind: 'system', text: `Reconnected${replayed ? `; caught up on ${replayed} event${replayed === 1 ? '' : 's'}` : ''}.` });
    })
    .on('event', onEvent)
    .on('ack', onAck)
    .on('reject', onReject)
    .on('pending', ({ actions }) => statusBar.pending(actions))
    .on('latency', ({ ms }) => statusBar.latency(ms))
    .on('notice', ({ message }) => chat.add({ kind: 'alert', text: message }))
    .on('fatal', onFatal);
  conn.start();
  canvas.focus();
}

function resetGame() {
  world.selfId = null;
  world.characters.clear();
  world.items.clear();
  world.inventory = [];
  world.targetId = null;
  pendingMoves.clear();
  pendingAbilities.clear();
  mover.stop();
  renderer.cam = null;
  chat.clear();
  statusBar.pending([]);
  stageNote.textContent = 'Connecting to the hall…';
  stageNote.hidden = false;
}

// `signOut`: the player asked to leave, so the identity provider's session ends too.
function end(message = '', { signOut = false } = {}) {
  conn = null;
  const oidc = keeper?.oidc;
  keeper?.forget();
  keeper = null;
  hideModal();
  login.show(message);
  if (signOut && oidc) {
    oidc.signOut().catch((err) => login.showError(`Signed out here, but the sign-in service could not be reached (${err.message}).`));
  }
}

function onStatus(detail) {
  statusLog.push(detail.status);
  if (statusLog.length > 100) statusLog.shift();
  statusBar.set(detail);
  if (detail.status !== STATUS.ACTIVE) mover.releaseAll();
  if (detail.status === STATUS.RECONNECTING) {
    // A draining server (close SERVICE_RESTART) moves us at once: no alarm, the same short note.
    stageNote.textContent = detail.moving
      ? 'The server is restarting; moving you to another one… Anything you do now is kept and sent when we are back.'
      : 'Connection lost. Reconnecting… Anything you do now is kept and sent when we are back.';
    stageNote.hidden = false;
  } else if (detail.status === STATUS.ACTIVE && world.map) {
    stageNote.hidden = true;
  }
  if (detail.moving) {
    if (detail.retryInMs !== undefined && detail.attempt === 1) chat.add({ kind: 'system', text: 'The server is restarting; moving you to another one…' });
  } else if (detail.status === STATUS.RECONNECTING && detail.retryInMs !== undefined && detail.attempt === 1) {
    const why = detail.reason && detail.reason !== 'Connection lost' ? ` (${detail.reason})` : '';
    chat.add({ kind: 'alert', text: `Connection lost. Reconnecting…${why}` });
  }
}

async function onWelcome({ self, world: w }) {
  if (world.selfId && world.selfId !== self.id) resetGame();
  const first = !world.selfId;
  world.selfId = self.id;
  await applyWorld(w, self);
  renderSelf();
  if (first) chat.add({ kind: 'system', text: `Welcome, ${self.name}. Arrow keys or WASD move, Enter chats, 1–4 use abilities.` });
}

async function applyWorld(w, self) {
  if (!w) return;
  if (world.mapId !== w.mapId || !world.map) {
    stageNote.textContent = 'Loading the map…';
    stageNote.hidden = false;
    try {
      world.map = await loadMap(w.mapId);
    } catch (err) {
      stageNote.textContent = `The map could not be loaded (${err.message}). Reload to try again.`;
      return;
    }
  }
  if (self) world.load(self, w);
  else world.replace(w);
  stageNote.hidden = true;
}

function onEvent(ev) {
  const line = world.applyEvent(ev);
  if (line) chat.add(line);
}

function onAck(a) {
  const state = a.state || {};
  if (a.actionType === 'move') {
    pendingMoves.delete(a.id);
    if (!Number.isInteger(state.x) && world.self) {
      state.x = world.self.x + a.payload.dx;
      state.y = world.self.y + a.payload.dy;
    }
    world.applyOwnState(state);
  } else if (a.actionType === 'chat') {
    chat.confirm(a.id);
  } else if (a.actionType === 'ability') {
    pendingAbilities.delete(a.id);
    abilities.setPending(a.payload.name, [...pendingAbilities.values()].includes(a.payload.name));
    abilities.flash(a.payload.name, true);
    applyAbilityState(a.payload, state);
    // The ack says how long until the ability is ready again (cooldown_s).
    if (typeof state.cooldown_s === 'number') abilities.startCooldown(a.payload.name, state.cooldown_s * 1000);
    else abilities.startCooldown(a.payload.name);
  }
  renderSelf();
}

function applyAbilityState(payload, state) {
  const target = payload.target_id ? world.characters.get(payload.target_id) : null;
  world.applyOwnState(state);
  if (target && typeof state.target_health === 'number') {
    target.health = state.target_health;
    target.defeated = state.target_health <= 0;
    world.changed();
  }
  const name = target?.name;
  const lines = {
    strike: `You strike ${name || 'your target'}.`,
    heal: target && target.id !== world.selfId ? `You heal ${name}.` : 'You heal yourself.',
    pickup: 'You pick it up.',
    use_item: 'You use the item.',
  };
  chat.add({ kind: 'combat', text: lines[payload.name] || `You use ${payload.name}.` });
}

function onReject(r) {
  if (r.actionType === 'move') {
    pendingMoves.delete(r.id);
    mover.stop();
  } else if (r.actionType === 'chat') {
    chat.fail(r.id, rejectText(r));
  } else if (r.actionType === 'ability') {
    pendingAbilities.delete(r.id);
    abilities.setPending(r.payload.name, [...pendingAbilities.values()].includes(r.payload.name));
    abilities.flash(r.payload.name, false);
  }
  toast(rejectText(r), 'warn');
}

function onFatal({ kind, message, serverVersion }) {
  mover.stop();
  const t = fatalText(kind, { message, serverVersion, clientVersion: VERSION });
  if (kind === 'version') {
    stageNote.textContent = 'This page is out of date. Reload to play.';
    stageNote.hidden = false;
    showModal({ title: t.title, body: t.body, kind: 'version', actions: [{ label: 'Reload', primary: true, onClick: () => location.reload() }] });
  } else if (kind === 'replaced') {
    showModal({
      title: t.title,
      body: t.body,
      actions: [
        { label: 'Play here instead', primary: true, onClick: () => { hideModal(); begin(keeper); } },
        { label: 'Sign out', onClick: () => end('', { signOut: true }) },
      ],
    });
  } else if (kind === 'auth') {
    end(t.body);
  } else if (kind === 'kicked') {
    showModal({ title: t.title, body: t.body, kind: 'kicked', actions: [{ label: 'Sign in again', primary: true, onClick: () => { hideModal(); end(); } }] });
  } else {
    end('', { signOut: true }); // signed out on purpose: nothing to explain
  }
}

// ---- actions ----

function ready() {
  return Boolean(conn && conn.status === STATUS.ACTIVE && world.self);
}

function sendMove(dx, dy) {
  if (!ready()) return false;
  const me = world.self;
  const id = conn.sendAction('move', { dx, dy });
  if (id === null) return false;
  pendingMoves.set(id, { x: me.x + dx, y: me.y + dy });
  return true;
}

function sendChat(text) {
  // Chat may be typed while reconnecting: it waits as pending and goes out on resume.
  if (!conn || conn.nextSeq === null || !world.self) {
    toast('Not connected yet: your message was kept in the box.', 'info', 2500);
    return false;
  }
  const id = conn.sendAction('chat', { text });
  chat.add({ kind: 'chat', from: world.self.name, text, self: true, id, pending: true });
  return true;
}

function useAbility(name, item = null) {
  if (!name) return;
  if (!conn || conn.nextSeq === null || !world.self) return;
  const label = { strike: 'Strike', heal: 'Heal', pickup: 'Pick up', use_item: 'Potion' }[name];
  if (abilities.coolingDown(name)) {
    toast(`${label} is cooling down.`, 'info', 1500);
    return;
  }
  const me = world.self;
  const payload = { name };
  const target = world.target;
  if (name === 'strike') {
    const victim = target && !target.defeated ? target : world.nearby().find((c) => c.distance <= 1 && !c.defeated);
    if (!victim) {
      toast('Strike: nobody to strike. Pick a target with T, or click someone.', 'info', 2500);
      return;
    }
    payload.target_id = victim.id;
  } else if (name === 'heal') {
    if (target && chebyshev(target, me) <= 1 && !target.defeated) payload.target_id = target.id;
  } else if (name === 'pickup') {
    const here = world.itemAt(me.x, me.y);
    if (here) payload.item_id = here.id;
  } else if (name === 'use_item') {
    const it = item || world.inventory.find((i) => i.kind === 'potion') || world.inventory.find((i) => i.kind === 'herb');
    if (!it) {
      toast('Potion: you carry nothing to drink. Pick up a potion or herb first.', 'info', 2500);
      return;
    }
    payload.item_id = it.id;
  }
  const id = conn.sendAction('ability', payload);
  if (id === null) return;
  pendingAbilities.set(id, name);
  abilities.setPending(name, true);
}

// ---- drawing and panels ----

let panelsDirty = true;
world.addEventListener('change', () => {
  panelsDirty = true;
});

function renderSelf() {
  const me = world.self;
  document.getElementById('self-card').hidden = !me;
  if (!me) return;
  document.getElementById('self-name').textContent = me.name;
  const hp = typeof me.health === 'number' ? me.health : null;
  const max = me.maxHealth || hp || 1;
  const fill = document.getElementById('self-health-fill');
  const f = hp === null ? 1 : Math.max(0, Math.min(1, hp / max));
  fill.style.width = `${f * 100}%`;
  fill.dataset.level = f > 0.5 ? 'good' : f > 0.25 ? 'ok' : 'bad';
  document.getElementById('self-health').textContent = hp === null ? '' : `${hp}/${max} health${me.defeated ? ' (defeated)' : ''}`;
  document.getElementById('self-pos').textContent = `(${me.x}, ${me.y})`;
  document.getElementById('self-card').dataset.x = String(me.x);
  document.getElementById('self-card').dataset.y = String(me.y);
}

function renderPanels() {
  renderSelf();
  nearby.render(world.nearby(), world.targetId);
  inventory.render(world.inventory);
  const t = world.target;
  const el = document.getElementById('target');
  if (!t) {
    el.textContent = 'No target. Press T or pick someone below.';
    el.dataset.targetId = '';
  } else {
    const d = world.self ? chebyshev(t, world.self) : 0;
    const hp = typeof t.health !== 'number' ? '' : t.maxHealth ? ` · ${t.health}/${t.maxHealth} health` : ` · ${t.health} health`;
    el.textContent = `${t.name}${hp} · ${d <= 1 ? 'within reach' : `${d} tiles away`}`;
    el.dataset.targetId = t.id;
  }
  const me = world.self;
  const here = me && world.itemAt(me.x, me.y);
  abilities.setEnabled('pickup', Boolean(here), here ? '' : 'Nothing here');
  document.getElementById('abilities').dataset.itemHere = here ? itemLabel(here.kind) : '';
}

function loop(now) {
  if (conn) {
    mover.tick(now);
    renderer.pendingSteps = [...pendingMoves.values()];
    renderer.path = mover.path;
    renderer.frame(now);
    if (panelsDirty) {
      panelsDirty = false;
      renderPanels();
    }
  }
  requestAnimationFrame(loop);
}
requestAnimationFrame(loop);

window.addEventListener('online', () => conn?.retryNow());
document.getElementById('logout').addEventListener('click', () => {
  if (conn) conn.logout();
  else end('', { signOut: true });
});

// Read-only hooks for the browser tests and for curious players in the console.
window.tilehall = {
  version: VERSION,
  mode: MODE,
  get status() { return conn?.status ?? 'idle'; },
  get stats() { return conn ? { ...conn.stats } : null; },
  get pending() { return conn ? conn.pendingActions().map((a) => ({ seq: a.seq, type: a.actionType })) : []; },
  get self() { return world.self ? { ...world.self } : null; },
  get signIn() { return keeper ? { kind: keeper.oidc ? 'oidc' : keeper.devName ? 'dev' : 'token', expiresAtMs: keeper.expiresAtMs } : null; },
  get sessionId() { return conn?.sessionId ?? null; },
  get characters() { return [...world.characters.values()].map((c) => ({ ...c })); },
  statusLog,
  clientPoint: (x, y) => renderer.clientPoint(x, y),
  blocked: (x, y) => (world.map ? world.map.blocked(x, y) : true),
};

// ---- start ----

async function start() {
  const authConfig = await loadAuthConfig(MODE);
  const oidcConfig = authConfig.oidc;
  if (oidcConfig) login.enableOidc(oidcConfig.issuer, () => startSignIn(oidcConfig));
  const handed = takeFragmentToken();
  if (handed) {
    begin(new TokenKeeper({ token: handed, ...keeperHooks() }));
    return;
  }
  if (oidcConfig && isSignInReturn()) {
    try {
      const oidc = await finishSignIn(oidcConfig);
      begin(new TokenKeeper({ token: oidc.token, oidc, ...keeperHooks() }));
    } catch (err) {
      login.show(err.message || 'Sign-in failed.');
    }
    return;
  }
  const reviveOidc = (saved) => (oidcConfig ? new OidcSession(oidcConfig, saved) : null);
  const restored = TokenKeeper.restore({ ...keeperHooks(), reviveOidc });
  if (restored) begin(restored);
  else login.show();
}
start();
