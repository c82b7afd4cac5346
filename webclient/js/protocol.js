// Protocol v1 (DESIGN section 4). The only module that sees raw frames: the rest of the client
// talks to a Connection through methods and the events listed below.
//
// Events (CustomEvent, data in .detail):
//   status   {status, attempt, retryInMs, reason, moving?}   connecting | active | reconnecting | terminating | closed
//                                                  (moving: the node drains, close SERVICE_RESTART; resuming at once)
//   welcome  {self, world, serverVersion, sessionId}  a full picture of the world (first login or fresh hello)
//   snapshot {world}                                  resumed with sync=snapshot: replace the world
//   resumed  {sync, replayed}
//   event    {eventSeq, actionId, characterId, displayName, actionType, payload, persistedAt}
//   ack      {id, seq, actionType, payload, state, actionId, persistedAt}
//   reject   {id, seq, actionType, payload, code, message}
//   pending  {actions}                                unacked actions changed
//   latency  {ms}
//   notice   {message}                                something a person should read (error frames)
//   fatal    {kind, message, serverVersion?}         version | auth | replaced | closed: no reconnect

import { CloseCode, Feature, KickReason } from './vocabulary.js';

// Protocol v1 additions this client handles (docs/protocol.md 4.1): several events in one
// `events` frame, and the own action's event inside its `ack`.
export const FEATURES = Object.freeze([Feature.EVENTS, Feature.ACK_EVENT]);

export const STATUS = Object.freeze({
  CONNECTING: 'connecting',
  ACTIVE: 'active',
  RECONNECTING: 'reconnecting',
  TERMINATING: 'terminating',
  CLOSED: 'closed',
});

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;
const TOO_MANY_BASE_MS = 10000;
const HANDSHAKE_TIMEOUT_MS = 10000;
const SEEN_ACTION_IDS = 4096;
const NO_ANSWER_MS = 20000; // an action unanswered this long on a live socket is given up
// The browser's code for a socket that ended without a close frame; never sent on the wire.
const ABNORMAL_CLOSURE = 1006;
// The code the client closes a socket with when it gives up on it (no answer to the handshake,
// no pong); the server does not read it, and the socket's handlers are detached first.
const GAVE_UP = CloseCode.VERSION_MISMATCH;

// Jittered exponential backoff ("equal jitter"): never zero, never above the cap.
export function backoffDelay(attempt, base = BACKOFF_BASE_MS, cap = BACKOFF_CAP_MS, rand = Math.random) {
  const ceiling = Math.min(cap, base * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + rand() * (ceiling / 2));
}

export class Connection extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.url          ws:// or wss:// URL of /ws
   * @param {string} opts.version      protocol_version (the build version of this page)
   * @param {(o:{refresh:boolean}) => Promise<string>} opts.getToken  current (or refreshed) JWT
   * @param {string} [opts.characterId]
   */
  constructor({ url, version, getToken, characterId = null }) {
    super();
    this.url = url;
    this.version = version;
    this.getToken = getToken;
    this.characterId = characterId;

    this.status = STATUS.CLOSED;
    this.ws = null;
    this.sessionId = null;
    this.selfId = null;
    this.reconnectToken = null;
    this.reconnectExpiresAt = 0;
    this.heartbeatMs = 5000;
    this.lastEventSeq = null;
    this.nextSeq = null;
    this.pending = new Map(); // seq -> {id, seq, actionType, payload, sentAt}
    this.attempt = 0;
    this.latencyMs = null;
    this.stats = { acksApplied: 0, duplicateAcks: 0, eventsApplied: 0, duplicateEvents: 0, resent: 0 };

    this._localId = 0;
    this._seen = new Set(); // action ids already applied (acks and events), bounded
    this._timers = {};
    this._lastError = null;
    this._stopped = false;
    this._logoutRequested = false;
  }

  on(name, fn) {
    this.addEventListener(name, (e) => fn(e.detail));
    return this;
  }

  start() {
    this._stopped = false;
    this._open(false);
  }

  /** Queue an action; it is sent now when active, else after the next welcome/resume. */
  sendAction(actionType, payload) {
    if (this.nextSeq === null) return null; // no session yet: nothing to number it with
    const action = { id: ++this._localId, seq: this.nextSeq++, actionType, payload, sentAt: null };
    this.pending.set(action.seq, action);
    if (this.status === STATUS.ACTIVE) this._transmit(action);
    this._emitPending();
    return action.id;
  }

  pendingActions() {
    return [...this.pending.values()].sort((a, b) => a.seq - b.seq);
  }

  reauth(token) {
    if (this.status === STATUS.ACTIVE) this._send({ type: 'reauth', token });
  }

  logout() {
    this._logoutRequested = true;
    this._stopped = true;
    this._clearTimer('retry');
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this._setStatus(STATUS.TERMINATING, { reason: 'Signing out' });
      this._send({ type: 'logout' });
      // The server closes with NORMAL; do not wait forever if it does not.
      this._timer('logout', 3000, () => this._dropSocket(CloseCode.NORMAL, 'logout'));
    } else {
      this._dropSocket(CloseCode.NORMAL, 'logout');
      this._setStatus(STATUS.CLOSED, { reason: 'Signed out' });
    }
  }

  /** Reconnect now (the "try now" button, or the browser says we are online again). */
  retryNow() {
    if (this._stopped || this.status === STATUS.ACTIVE) return;
    if (this._timers.retry) {
      this._clearTimer('retry');
      this._open(this.sessionId !== null);
    }
  }

  // ---- socket lifecycle ----

  async _open(resuming) {
    this._setStatus(resuming ? STATUS.RECONNECTING : STATUS.CONNECTING, { attempt: this.attempt });
    let token;
    try {
      token = await this.getToken({ refresh: false });
    } catch (err) {
      this._fatal('auth', `Could not get a sign-in token: ${err.message}`);
      return;
    }
    if (this._stopped) return;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._scheduleReconnect(`Cannot open ${this.url}: ${err.message}`);
      return;
    }
    this.ws = ws;
    this._lastError = null;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      const canResume = this.reconnectToken && Date.now() < this.reconnectExpiresAt;
      if (canResume) {
        this._send({
          type: 'resume',
          protocol_version: this.version,
          token,
          reconnect_token: this.reconnectToken,
          last_event_seq: this.lastEventSeq ?? 0,
          features: FEATURES,
        });
      } else {
        const hello = { type: 'hello', protocol_version: this.version, token, features: FEATURES };
        if (this.characterId) hello.character_id = this.characterId;
        this._send(hello);
      }
      this._timer('handshake', HANDSHAKE_TIMEOUT_MS, () => {
        this._dropSocket(GAVE_UP, 'handshake timeout');
        this._scheduleReconnect('The server did not answer');
      });
    };
    ws.onmessage = (msg) => {
      if (ws !== this.ws) return;
      let frame;
      try {
        frame = JSON.parse(msg.data);
      } catch {
        return; // not ours to crash on
      }
      this._onFrame(frame);
    };
    ws.onclose = (e) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this._onClose(e.code, e.reason);
    };
  }

  _onClose(code, reason) {
    this._clearTimer('handshake');
    this._clearTimer('heartbeat');
    this._clearTimer('logout');
    const said = this._lastError?.message || reason || '';
    if (this._logoutRequested) {
      this._setStatus(STATUS.CLOSED, { reason: 'Signed out' });
      this.dispatchEvent(new CustomEvent('fatal', { detail: { kind: 'closed', message: 'You signed out.' } }));
      return;
    }
    switch (code) {
      case CloseCode.VERSION_MISMATCH:
        this._fatal('version', said, this._serverVersionFrom(said));
        return;
      case CloseCode.BAD_TOKEN:
      case CloseCode.CHARACTER_NOT_OWNED:
        this._fatal('auth', said || 'The server did not accept your sign-in.');
        return;
      case CloseCode.TOKEN_EXPIRED:
        // Token expired: a fresh one (dev mode can fetch it) lets us resume.
        this.getToken({ refresh: true }).then(
          () => this._scheduleReconnect('Sign-in expired, renewing', 0),
          () => this._fatal('auth', 'Your sign-in expired. Please sign in again.'),
        );
        return;
      case CloseCode.RECONNECT_INVALID:
        this.reconnectToken = null; // resume impossible: start a fresh session
        this._scheduleReconnect('Starting a fresh session', 0);
        return;
      case CloseCode.SESSION_REPLACED:
        this._fatal('replaced', said || 'You signed in somewhere else.');
        return;
      case CloseCode.KICKED_BY_OPERATOR: // final: resuming would only find the session ended
        this._fatal('kicked', said || kickedText(KickReason.OPERATOR));
        return;
      case CloseCode.TOO_MANY:
        this._scheduleReconnect(said || 'Too many connections, waiting', null, TOO_MANY_BASE_MS);
        return;
      case CloseCode.GOING_AWAY:
        this._scheduleReconnect('The server is restarting');
        return;
      case CloseCode.SERVICE_RESTART:
        // The node is draining and parked our session: resume at once through the same URL
        // (the balancer picks a live node). Only a repeat (we hit a draining node again)
        // waits, with the usual backoff, so a cluster that is all draining is not hammered.
        this._scheduleReconnect(kickedText(KickReason.NODE_DRAINING), this.attempt === 0 ? 0 : null, BACKOFF_BASE_MS, true);
        return;
      default:
        this._scheduleReconnect(said || (code === ABNORMAL_CLOSURE ? 'Connection lost' : `Connection closed (${code})`));
    }
  }

  _scheduleReconnect(reason, delayMs = null, base = BACKOFF_BASE_MS, moving = false) {
    if (this._stopped) return;
    this.attempt += 1;
    const wait = delayMs ?? backoffDelay(this.attempt, base);
    const resuming = this.sessionId !== null;
    this._setStatus(resuming ? STATUS.RECONNECTING : STATUS.CONNECTING, {
      attempt: this.attempt,
      retryInMs: wait,
      reason,
      ...(moving ? { moving: true } : {}),
    });
    this._timer('retry', wait, () => this._open(resuming));
  }

  _fatal(kind, message, serverVersion = null) {
    this._stopped = true;
    this._clearTimer('retry');
    this._clearTimer('heartbeat');
    this._dropSocket(CloseCode.NORMAL, kind);
    this._setStatus(STATUS.CLOSED, { reason: message });
    this.dispatchEvent(new CustomEvent('fatal', { detail: { kind, message, serverVersion } }));
  }

  // Forget a socket at once (half-open sockets can take minutes to report their close).
  _dropSocket(code, reason) {
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try {
      ws.close(code, reason);
    } catch {
      /* already closing */
    }
  }

  // ---- frames in ----

  _onFrame(f) {
    switch (f.type) {
      case 'welcome': return this._onWelcome(f);
      case 'resumed': return this._onResumed(f);
      case 'ack': return this._onAck(f);
      case 'reject': return this._onReject(f);
      case 'event': return this._onEvent(f);
      case 'events':
        for (const e of f.events || []) this._onEvent(e);
        return;
      case 'resync_required': return this._onResync(f);
      case 'pong': return this._onPong(f);
      case 'kicked':
        this._lastError = { code: f.reason, message: kickedText(f.reason) };
        if (f.reason === KickReason.NODE_DRAINING) {
          // Not an ending: the close SERVICE_RESTART that follows moves us to another node (see _onClose).
          const status = this.sessionId !== null ? STATUS.RECONNECTING : STATUS.CONNECTING;
          this._setStatus(status, { reason: this._lastError.message, moving: true });
          return;
        }
        this._setStatus(STATUS.TERMINATING, { reason: this._lastError.message });
        if (f.reason === KickReason.SESSION_REPLACED) this._fatal('replaced', this._lastError.message);
        if (f.reason === KickReason.OPERATOR) this._fatal('kicked', this._lastError.message);
        return;
      case 'error':
        this._lastError = { code: f.code, message: f.message || f.code };
        this.dispatchEvent(new CustomEvent('notice', { detail: { message: this._lastError.message, code: f.code } }));
        return;
      default:
        return; // a newer server may add frames; ignore what we do not know
    }
  }

  _established(f) {
    this._clearTimer('handshake');
    this.sessionId = f.session_id;
    this.reconnectToken = f.reconnect_token;
    this.reconnectExpiresAt = expiryMs(f.reconnect_expires_at);
    this.attempt = 0;
    if (f.heartbeat_interval_ms) this.heartbeatMs = f.heartbeat_interval_ms;
    this._startHeartbeat();
  }

  _onWelcome(f) {
    this._established(f);
    this.lastEventSeq = f.event_seq ?? 0;
    const self = normaliseCharacter(f.character);
    this.selfId = self.id;
    this.characterId = self.id;
    this._renumberAfterWelcome(f.last_action_seq);
    this.dispatchEvent(new CustomEvent('welcome', {
      detail: { self, world: normaliseWorld(f.world), serverVersion: f.server_version, sessionId: f.session_id },
    }));
    this._setStatus(STATUS.ACTIVE);
    this._resendPending();
  }

  _onResumed(f) {
    this._established(f);
    if (f.sync === 'snapshot') {
      // Everything up to event_seq is in the snapshot; replayed deltas, if any, come after.
      this.lastEventSeq = f.event_seq ?? this.lastEventSeq;
      this.dispatchEvent(new CustomEvent('snapshot', { detail: { world: normaliseWorld(f.world) } }));
    }
    this.dispatchEvent(new CustomEvent('resumed', { detail: { sync: f.sync, replayed: f.replayed ?? 0 } }));
    this._setStatus(STATUS.ACTIVE);
    this._resendPending();
  }

  _onAck(f) {
    // The own event inside the ack numbers like any event (gap-free event_seq for the resume).
    if (f.event) this._onEvent(f.event);
    const action = this.pending.get(f.seq);
    if (!action) {
      this.stats.duplicateAcks += 1; // e.g. the original ack of a resent action we already had
      return;
    }
    this.pending.delete(f.seq);
    this._remember(f.action_id);
    this.stats.acksApplied += 1;
    this.dispatchEvent(new CustomEvent('ack', {
      detail: {
        id: action.id, seq: f.seq, actionType: action.actionType, payload: action.payload,
        state: f.state || {}, actionId: f.action_id, persistedAt: f.persisted_at,
      },
    }));
    this._emitPending();
  }

  _onReject(f) {
    const action = this.pending.get(f.seq);
    if (!action) return;
    this.pending.delete(f.seq);
    this.dispatchEvent(new CustomEvent('reject', {
      detail: {
        id: action.id, seq: f.seq, actionType: action.actionType, payload: action.payload,
        code: f.code, message: f.message || '',
      },
    }));
    this._emitPending();
  }

  _onEvent(f) {
    if (this.lastEventSeq !== null && f.event_seq <= this.lastEventSeq) {
      this.stats.duplicateEvents += 1;
      return;
    }
    this.lastEventSeq = f.event_seq;
    // Our own actions take effect through their acks; an event echoing one is not applied again.
    if (f.action_id && this._seen.has(f.action_id)) {
      this.stats.duplicateEvents += 1;
      return;
    }
    if (f.character_id === this.selfId && f.action_type !== 'system') {
      this._remember(f.action_id);
      return;
    }
    this._remember(f.action_id);
    this.stats.eventsApplied += 1;
    this.dispatchEvent(new CustomEvent('event', {
      detail: {
        eventSeq: f.event_seq, actionId: f.action_id, characterId: f.character_id,
        displayName: f.display_name, actionType: f.action_type, payload: f.payload || {},
        persistedAt: f.persisted_at,
      },
    }));
  }

  // The server saw a gap: nothing from expected_seq on was applied. Renumber and resend those.
  _onResync(f) {
    const expected = f.expected_seq;
    const later = this.pendingActions().filter((a) => a.seq >= expected);
    for (const a of later) this.pending.delete(a.seq);
    let seq = expected;
    for (const a of later) {
      a.seq = seq++;
      this.pending.set(a.seq, a);
    }
    this.nextSeq = seq;
    for (const a of later) this._transmit(a);
    this._emitPending();
  }

  _onPong(f) {
    this._lastPongAt = Date.now();
    if (typeof f.t !== 'number') return;
    const sample = Math.max(0, Date.now() - f.t);
    this.latencyMs = this.latencyMs === null ? sample : Math.round(this.latencyMs * 0.7 + sample * 0.3);
    this.dispatchEvent(new CustomEvent('latency', { detail: { ms: this.latencyMs } }));
  }

  // ---- frames out ----

  _send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  _transmit(action) {
    if (action.sentAt !== null) this.stats.resent += 1;
    action.sentAt = Date.now();
    this._send({ type: 'action', seq: action.seq, action_type: action.actionType, payload: action.payload });
  }

  // After a fresh hello the server tells us the last seq it has. Actions at or below it were
  // processed (resending them returns the original answer); later ones must follow on from it.
  _renumberAfterWelcome(lastActionSeq) {
    const all = this.pendingActions();
    this.pending.clear();
    let next = lastActionSeq + 1;
    for (const a of all) {
      if (a.seq > lastActionSeq) a.seq = next++;
      this.pending.set(a.seq, a);
    }
    this.nextSeq = next;
  }

  // Every action gets an ack or a reject; one that never does (the server lost it) must not
  // stay "pending" for ever and block the next move.
  _giveUpUnanswered() {
    const now = Date.now();
    for (const a of this.pendingActions()) {
      if (a.sentAt === null || now - a.sentAt < NO_ANSWER_MS) continue;
      this.pending.delete(a.seq);
      this.dispatchEvent(new CustomEvent('reject', {
        detail: {
          id: a.id, seq: a.seq, actionType: a.actionType, payload: a.payload,
          code: 'no_answer', message: 'the server never answered; it may or may not have happened',
        },
      }));
      this._emitPending();
    }
  }

  _resendPending() {
    for (const a of this.pendingActions()) this._transmit(a);
    this._emitPending();
  }

  _startHeartbeat() {
    this._clearTimer('heartbeat');
    this._lastPongAt = Date.now();
    const beat = () => {
      // No pong for a while: the socket is dead even if the browser has not noticed.
      if (Date.now() - this._lastPongAt > this.heartbeatMs * 3 + 2000) {
        this._dropSocket(GAVE_UP, 'heartbeat timeout');
        this._onClose(ABNORMAL_CLOSURE, 'No answer from the server');
        return;
      }
      this._send({ type: 'ping', t: Date.now() });
      this._giveUpUnanswered();
      this._timer('heartbeat', this.heartbeatMs, beat);
    };
    this._send({ type: 'ping', t: Date.now() });
    this._timer('heartbeat', this.heartbeatMs, beat);
  }

  // ---- helpers ----

  _setStatus(status, extra = {}) {
    this.status = status;
    this.dispatchEvent(new CustomEvent('status', { detail: { status, ...extra } }));
  }

  _emitPending() {
    this.dispatchEvent(new CustomEvent('pending', { detail: { actions: this.pendingActions() } }));
  }

  _remember(actionId) {
    if (!actionId) return;
    this._seen.add(actionId);
    if (this._seen.size > SEEN_ACTION_IDS) this._seen.delete(this._seen.values().next().value);
  }

  _timer(name, ms, fn) {
    this._clearTimer(name);
    this._timers[name] = setTimeout(() => {
      delete this._timers[name];
      fn();
    }, ms);
  }

  _clearTimer(name) {
    if (this._timers[name]) clearTimeout(this._timers[name]);
    delete this._timers[name];
  }

  // The error frame names the server's version; it is the version in it that is not ours.
  _serverVersionFrom(message) {
    const found = (message || '').match(/\d+\.\d+(?:\.\d+)?[\w.+-]*/g) || [];
    return found.map((v) => v.replace(/[.,;:]+$/, '')).find((v) => v !== this.version) || null;
  }
}

function kickedText(reason) {
  if (reason === KickReason.SESSION_REPLACED) return 'You signed in somewhere else, so this tab was disconnected.';
  if (reason === KickReason.SHUTDOWN) return 'The server is restarting';
  if (reason === KickReason.NODE_DRAINING) return 'Moving you to another server';
  if (reason === KickReason.LOGOUT) return 'Signed out';
  if (reason === KickReason.OPERATOR) return 'An operator of this server ended your session.';
  return `The server ended this session (${reason})`;
}

function expiryMs(value) {
  if (typeof value === 'number') return value < 1e12 ? value * 1000 : value; // epoch s or ms
  const parsed = Date.parse(value);
  return Number.isNaN(parsed) ? Date.now() + 60000 : parsed;
}

// Wire shapes -> the client's own shapes (so the UI never depends on frame field names).
export function normaliseCharacter(c) {
  return {
    id: c.character_id,
    name: c.display_name ?? c.character_id,
    x: c.x ?? c.position_x,
    y: c.y ?? c.position_y,
    health: c.health ?? null,
    maxHealth: c.max_health ?? null,
    inventory: c.inventory ?? c.inventory_json ?? null,
    defeated: c.defeated ?? (c.health === 0),
  };
}

export function normaliseWorld(w) {
  if (!w) return null;
  return {
    mapId: w.map_id,
    width: w.width,
    height: w.height,
    characters: (w.characters || []).map(normaliseCharacter),
    items: (w.items || []).map((i) => ({ id: i.item_id, kind: i.kind, x: i.x, y: i.y })),
  };
}
