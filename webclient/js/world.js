// What this client knows about the world: the map, the characters and items in view, the
// player's own character and inventory. Fed by the app from protocol events; read by the
// renderer and the panels. Every change fires a 'change' event.

import { SystemEventKind } from './vocabulary.js';

export class World extends EventTarget {
  constructor() {
    super();
    this.map = null;
    this.mapId = null;
    this.selfId = null;
    this.characters = new Map(); // id -> {id, name, x, y, health, maxHealth, defeated}
    this.items = new Map(); // id -> {id, kind, x, y}
    this.inventory = [];
    this.targetId = null;
  }

  get self() {
    return this.characters.get(this.selfId) || null;
  }

  changed() {
    this.dispatchEvent(new Event('change'));
  }

  /** A welcome: who we are and everything in view. */
  load(self, world) {
    this.selfId = self.id;
    this.replace(world, self);
    this.setInventory(self.inventory);
  }

  /** A snapshot replaces what we know; our own entry is kept if the snapshot leaves it out. */
  replace(world, self = this.self) {
    this.mapId = world.mapId;
    this.characters.clear();
    for (const c of world.characters) this.characters.set(c.id, { ...c });
    if (self && !this.characters.has(self.id)) this.characters.set(self.id, { ...self });
    this.items.clear();
    for (const i of world.items) this.items.set(i.id, { ...i });
    if (this.targetId && !this.characters.has(this.targetId)) this.targetId = null;
    this.changed();
  }

  /** The state an ack reports for our own character: {x, y}, {health}, {inventory}, ... */
  applyOwnState(state) {
    const me = this.self;
    if (!me) return;
    if (Number.isInteger(state.x)) me.x = state.x;
    if (Number.isInteger(state.y)) me.y = state.y;
    if (typeof state.health === 'number') setHealth(me, state.health);
    if (typeof state.max_health === 'number') me.maxHealth = state.max_health;
    if (state.inventory !== undefined) this.setInventory(state.inventory);
    if (typeof state.item_taken === 'string') this.items.delete(state.item_taken);
    this.changed();
  }

  setInventory(raw) {
    this.inventory = normaliseInventory(raw);
  }

  /**
   * Apply another character's (or the server's) event. Returns a line for the message log,
   * or null when there is nothing to say.
   */
  applyEvent(ev) {
    const p = ev.payload;
    let actor = this.characters.get(ev.characterId);
    const ensureActor = () => {
      if (!actor && Number.isInteger(p.x) && Number.isInteger(p.y)) {
        actor = { id: ev.characterId, name: ev.displayName || 'someone', x: p.x, y: p.y, health: null, maxHealth: null, defeated: false };
        this.characters.set(actor.id, actor);
      }
      return actor;
    };
    const name = ev.displayName || actor?.name || 'Someone';
    let line = null;

    if (ev.actionType === 'move') {
      if (ensureActor()) {
        actor.x = p.x;
        actor.y = p.y;
        if (typeof p.health === 'number') setHealth(actor, p.health);
        if (Number.isInteger(p.max_health)) actor.maxHealth = p.max_health;
      }
    } else if (ev.actionType === 'chat') {
      line = { kind: 'chat', from: name, self: ev.characterId === this.selfId, text: String(p.text ?? '') };
    } else if (ev.actionType === 'ability') {
      line = this._ability(ev, name, actor);
    } else if (ev.actionType === 'system') {
      line = this._system(ev, name, ensureActor);
    }
    this.changed();
    return line;
  }

  _ability(ev, name, actor) {
    const p = ev.payload;
    const target = p.target_id ? this.characters.get(p.target_id) : null;
    const onSelf = !p.target_id || p.target_id === ev.characterId;
    if (target && typeof p.target_health === 'number') setHealth(target, p.target_health);
    else if (typeof p.health === 'number') setHealth(target || actor || {}, p.health);
    else if (onSelf && actor && (p.name === 'heal' || p.name === 'use_item') && typeof p.amount === 'number' && typeof actor.health === 'number') {
      // A self-heal has no system event of its own: its amount is all there is to go on.
      // (Effects on others arrive as their own damage/heal events with the new health.)
      // Without a known maximum the result is unknown, and shown as such rather than guessed.
      if (actor.maxHealth) setHealth(actor, Math.min(actor.maxHealth, actor.health + p.amount));
      else actor.health = null;
    }
    const amount = typeof p.amount === 'number' ? ` (${p.amount})` : '';
    const whom = target ? (target.id === this.selfId ? 'you' : target.name) : null;
    switch (p.name) {
      case 'strike': return { kind: 'combat', text: `${name} strikes ${whom || 'at the air'}${amount}.` };
      case 'heal': return { kind: 'combat', text: `${name} heals ${whom && target !== actor ? whom : 'themself'}${amount}.` };
      case 'pickup':
        if (p.item_id) this.items.delete(p.item_id);
        return null;
      case 'use_item': return { kind: 'system', text: `${name} uses ${p.kind || 'an item'}.` };
      default: return { kind: 'system', text: `${name} uses ${p.name}.` };
    }
  }

  _system(ev, name, ensureActor) {
    const p = ev.payload;
    if (p.kind === SystemEventKind.ITEM_SPAWNED) { // an event of the world itself, not of a character
      if (p.item_id) this.items.set(p.item_id, { id: p.item_id, kind: p.item_kind || 'item', x: p.x, y: p.y });
      return null;
    }
    if (p.kind === SystemEventKind.ANNOUNCEMENT) { // an operator's message to the whole zone
      return typeof p.text === 'string' ? { kind: 'alert', text: `Announcement: ${p.text}` } : null;
    }
    const isSelf = ev.characterId === this.selfId;
    const who = isSelf ? 'You' : name;
    const actor = ensureActor();
    if (actor && Number.isInteger(p.max_health)) actor.maxHealth = p.max_health;
    switch (p.kind) {
      case SystemEventKind.LOGIN:
        if (actor && typeof p.health === 'number') setHealth(actor, p.health);
        return isSelf ? null : { kind: 'system', text: `${name} arrived.` };
      case SystemEventKind.LOGOUT:
        this.characters.delete(ev.characterId);
        if (this.targetId === ev.characterId) this.targetId = null;
        return { kind: 'system', text: `${name} left.` };
      case SystemEventKind.DEFEATED:
        if (actor) setHealth(actor, 0);
        return { kind: 'alert', text: `${who} ${isSelf ? 'were' : 'was'} defeated.` };
      case SystemEventKind.RESPAWN:
        if (actor) {
          if (Number.isInteger(p.x)) actor.x = p.x;
          if (Number.isInteger(p.y)) actor.y = p.y;
          setHealth(actor, typeof p.health === 'number' ? p.health : actor.maxHealth);
        }
        return { kind: 'system', text: `${who} ${isSelf ? 'are' : 'is'} back on their feet.` };
      case SystemEventKind.DAMAGE:
      case SystemEventKind.HEAL:
        if (actor && typeof p.health === 'number') setHealth(actor, p.health);
        if (!isSelf) return null;
        return { kind: p.kind === SystemEventKind.DAMAGE ? 'alert' : 'system', text: p.kind === SystemEventKind.DAMAGE ? `You are hurt (${p.health} health left).` : `You are healed (${p.health} health).` };
      case SystemEventKind.IN_VIEW: // presence, not an action: someone we had not seen is near now
        if (actor && typeof p.health === 'number') setHealth(actor, p.health);
        return null;
      case SystemEventKind.OUT_OF_VIEW:
        if (!isSelf) this.characters.delete(ev.characterId);
        if (this.targetId === ev.characterId) this.targetId = null;
        return null;
      default:
        return null;
    }
  }

  occupant(x, y) {
    for (const c of this.characters.values()) if (c.x === x && c.y === y) return c;
    return null;
  }

  itemAt(x, y) {
    for (const i of this.items.values()) if (i.x === x && i.y === y) return i;
    return null;
  }

  /** Everyone but us, nearest first. */
  nearby() {
    const me = this.self;
    const list = [...this.characters.values()].filter((c) => c.id !== this.selfId);
    const dist = (c) => (me ? Math.max(Math.abs(c.x - me.x), Math.abs(c.y - me.y)) : 0);
    return list.map((c) => ({ ...c, distance: dist(c) })).sort((a, b) => a.distance - b.distance || a.name.localeCompare(b.name));
  }

  setTarget(id) {
    this.targetId = id && this.characters.has(id) ? id : null;
    this.changed();
  }

  cycleTarget() {
    const list = this.nearby();
    if (!list.length) return this.setTarget(null);
    const i = list.findIndex((c) => c.id === this.targetId);
    this.setTarget(list[(i + 1) % list.length].id);
  }

  get target() {
    return this.targetId ? this.characters.get(this.targetId) || null : null;
  }
}

function setHealth(c, health) {
  c.health = health;
  c.defeated = health <= 0;
}

/** Inventory as a list of {id, kind, count}, whatever reasonable shape the server used. */
export function normaliseInventory(raw) {
  if (!raw) return [];
  const list = Array.isArray(raw) ? raw : Array.isArray(raw.items) ? raw.items : Object.entries(raw).map(([kind, count]) => ({ kind, count }));
  return list.map((it, i) =>
    typeof it === 'string'
      ? { id: it, kind: it, count: 1 }
      : { id: it.item_id ?? it.id ?? `${it.kind}-${i}`, kind: it.kind ?? it.name ?? 'item', count: it.count ?? it.quantity ?? 1 },
  );
}

export const chebyshev = (a, b) => Math.max(Math.abs(a.x - b.x), Math.abs(a.y - b.y));
