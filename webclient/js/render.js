// Draws the world on the canvas: tiles, items, characters (names, health bars), the camera
// following the player, and smooth steps between tiles. Works in device pixels with integer
// tile sizes and integer offsets so nothing is ever scaled or blurred.

import { tileImage, tileVariant, shade } from './tiles.js';

const BASE_TILE = 32;
const ZOOMS = [0.5, 0.75, 1, 1.25, 1.5, 2, 2.5, 3];
const STEP_MS = 140;

export class Renderer {
  constructor(canvas, world) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d', { alpha: false });
    this.world = world;
    this.zoomIndex = ZOOMS.indexOf(1.5);
    this.dpr = 1;
    this.anim = new Map(); // id -> {fx, fy, tx, ty, t0, face}
    this.health = new Map(); // id -> last seen health, for floating numbers
    this.floaters = [];
    this.cam = null; // camera centre in tiles
    this.pendingSteps = []; // [{x, y}] our unacked moves, drawn as ghosts
    this.path = []; // click-to-walk route
    this.hover = null;
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
  }

  get tilePx() {
    return Math.max(4, Math.round(BASE_TILE * ZOOMS[this.zoomIndex] * this.dpr));
  }

  zoom(delta) {
    this.zoomIndex = Math.min(ZOOMS.length - 1, Math.max(0, this.zoomIndex + delta));
  }

  resetZoom() {
    this.zoomIndex = ZOOMS.indexOf(1.5);
  }

  resize() {
    this.dpr = window.devicePixelRatio || 1;
    const r = this.canvas.getBoundingClientRect();
    this.canvas.width = Math.max(1, Math.round(r.width * this.dpr));
    this.canvas.height = Math.max(1, Math.round(r.height * this.dpr));
  }

  /** The tile under a mouse position, or null. */
  tileAt(clientX, clientY) {
    if (!this.cam) return null;
    const r = this.canvas.getBoundingClientRect();
    const t = this.tilePx;
    const { ox, oy } = this._origin();
    const x = Math.floor(((clientX - r.left) * this.dpr - ox) / t);
    const y = Math.floor(((clientY - r.top) * this.dpr - oy) / t);
    return this.world.map?.inside(x, y) ? { x, y } : null;
  }

  /** Page coordinates of a tile's centre; null while the camera is still gliding. */
  clientPoint(x, y) {
    const me = this.world.self && this.anim.get(this.world.selfId);
    if (!this.cam || !me) return null;
    const p = position(me, performance.now());
    if (Math.abs(p.x - this.cam.x) > 0.01 || Math.abs(p.y - this.cam.y) > 0.01 || p.x !== me.tx || p.y !== me.ty) return null;
    const r = this.canvas.getBoundingClientRect();
    const t = this.tilePx;
    const { ox, oy } = this._origin();
    return { x: r.left + (ox + (x + 0.5) * t) / this.dpr, y: r.top + (oy + (y + 0.5) * t) / this.dpr };
  }

  // Device-pixel position of tile (0, 0), rounded so tiles land on whole pixels.
  _origin() {
    const t = this.tilePx;
    return {
      ox: Math.round(this.canvas.width / 2 - (this.cam.x + 0.5) * t),
      oy: Math.round(this.canvas.height / 2 - (this.cam.y + 0.5) * t),
    };
  }

  frame(now) {
    const { ctx, canvas, world } = this;
    ctx.imageSmoothingEnabled = false;
    ctx.fillStyle = '#0b0e13';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!world.map) return;

    this._track(now);
    const me = world.self && this.anim.get(world.selfId);
    if (me) {
      const p = position(me, now);
      if (!this.cam) this.cam = { ...p };
      // Ease the camera after the player; snap when far (respawn, snapshot).
      const k = Math.hypot(p.x - this.cam.x, p.y - this.cam.y) > 6 ? 1 : 0.18;
      this.cam.x += (p.x - this.cam.x) * k;
      this.cam.y += (p.y - this.cam.y) * k;
    } else if (!this.cam) {
      this.cam = { x: world.map.width / 2, y: world.map.height / 2 };
    }

    const t = this.tilePx;
    const { ox, oy } = this._origin();
    const x0 = Math.max(0, Math.floor(-ox / t));
    const y0 = Math.max(0, Math.floor(-oy / t));
    const x1 = Math.min(world.map.width - 1, Math.ceil((canvas.width - ox) / t));
    const y1 = Math.min(world.map.height - 1, Math.ceil((canvas.height - oy) / t));

    const map = world.map;
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const i = y * map.width + x;
        const v = tileVariant(x, y);
        const ground = map.tileAt(map.ground, x, y);
        if (ground) ctx.drawImage(tileImage(ground, t, v), ox + x * t, oy + y * t);
        // The collision layer usually repeats the ground (walls, water); draw it only where it adds a tile.
        if (map.collision[i] && map.collision[i] !== map.ground[i]) {
          ctx.drawImage(tileImage(map.tileAt(map.collision, x, y), t, v), ox + x * t, oy + y * t);
        }
      }
    }

    if (this.hover) this._outline(ox, oy, this.hover, 'rgba(255,255,255,0.35)', [], 1);
    for (const p of this.path) this._dot(ox, oy, p, 'rgba(255,255,255,0.45)');
    for (const item of world.items.values()) this._item(ox, oy, item, now);
    for (const p of this.pendingSteps) this._outline(ox, oy, p, 'rgba(250,204,21,0.9)', [4 * this.dpr, 3 * this.dpr], 2);

    const chars = [...world.characters.values()]
      .map((c) => ({ c, p: position(this.anim.get(c.id), now) }))
      .sort((a, b) => a.p.y - b.p.y);
    for (const { c, p } of chars) this._character(ox, oy, c, p, now);
    // Labels: ours first, then the target's, then the rest; a label that would cover one
    // already drawn moves up above it.
    const rank = ({ c }) => (c.id === world.selfId ? 0 : c.id === world.targetId ? 1 : 2);
    const placed = [];
    for (const item of [...chars].sort((a, b) => rank(a) - rank(b))) this._label(ox, oy, item.c, item.p, placed);
    this._floaters(ox, oy, now);
  }

  // Start a tween whenever a character's tile changes; note health changes for floaters.
  _track(now) {
    const seen = new Set();
    for (const c of this.world.characters.values()) {
      seen.add(c.id);
      let a = this.anim.get(c.id);
      if (!a) {
        a = { fx: c.x, fy: c.y, tx: c.x, ty: c.y, t0: 0, face: 1 };
        this.anim.set(c.id, a);
      } else if (a.tx !== c.x || a.ty !== c.y) {
        const cur = position(a, now);
        const far = Math.abs(c.x - cur.x) > 2.5 || Math.abs(c.y - cur.y) > 2.5;
        Object.assign(a, { fx: far ? c.x : cur.x, fy: far ? c.y : cur.y, tx: c.x, ty: c.y, t0: now });
        if (c.x !== cur.x) a.face = Math.sign(c.x - cur.x) || a.face;
      }
      const before = this.health.get(c.id);
      if (typeof before === 'number' && typeof c.health === 'number' && c.health !== before) {
        const d = c.health - before;
        this.floaters.push({ x: c.x, y: c.y, text: d > 0 ? `+${d}` : `${d}`, color: d > 0 ? '#4ade80' : '#f87171', t0: now });
      }
      this.health.set(c.id, c.health);
    }
    for (const id of this.anim.keys()) if (!seen.has(id)) { this.anim.delete(id); this.health.delete(id); }
  }

  _character(ox, oy, c, p, now) {
    const { ctx } = this;
    const t = this.tilePx;
    const cx = ox + (p.x + 0.5) * t;
    const cy = oy + (p.y + 0.5) * t;
    const r = t * 0.32;
    const isSelf = c.id === this.world.selfId;
    const hue = hueOf(c.id);
    ctx.save();
    if (c.defeated) ctx.globalAlpha = 0.45;
    ctx.fillStyle = 'rgba(0,0,0,0.35)';
    ctx.beginPath();
    ctx.ellipse(cx, cy + r * 0.9, r * 0.9, r * 0.35, 0, 0, Math.PI * 2);
    ctx.fill();
    if (c.id === this.world.targetId) {
      ctx.strokeStyle = '#f87171';
      ctx.lineWidth = Math.max(2, t / 16);
      ctx.setLineDash([t / 8, t / 10]);
      ctx.lineDashOffset = -now / 40;
      ctx.beginPath();
      ctx.arc(cx, cy, r * 1.35, 0, Math.PI * 2);
      ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.fillStyle = c.defeated ? '#6b7280' : `hsl(${hue} 65% 55%)`;
    ctx.strokeStyle = isSelf ? '#f8fafc' : `hsl(${hue} 60% 25%)`;
    ctx.lineWidth = Math.max(1.5, t / (isSelf ? 12 : 20));
    ctx.beginPath();
    ctx.arc(cx, cy, r, 0, Math.PI * 2);
    ctx.fill();
    ctx.stroke();
    // Eyes look the way the character last walked.
    const face = this.anim.get(c.id)?.face || 1;
    ctx.fillStyle = '#0b0e13';
    for (const dx of [-0.28, 0.28]) {
      ctx.beginPath();
      ctx.arc(cx + (dx + face * 0.18) * r, cy - r * 0.15, Math.max(1, r * 0.13), 0, Math.PI * 2);
      ctx.fill();
    }
    if (c.defeated) {
      ctx.globalAlpha = 1;
      ctx.strokeStyle = '#f87171';
      ctx.lineWidth = Math.max(2, t / 14);
      ctx.beginPath();
      ctx.moveTo(cx - r * 0.6, cy - r * 0.6);
      ctx.lineTo(cx + r * 0.6, cy + r * 0.6);
      ctx.moveTo(cx + r * 0.6, cy - r * 0.6);
      ctx.lineTo(cx - r * 0.6, cy + r * 0.6);
      ctx.stroke();
    }
    ctx.restore();
  }

  _label(ox, oy, c, p, placed) {
    const { ctx } = this;
    const t = this.tilePx;
    const cx = Math.round(ox + (p.x + 0.5) * t);
    const top = Math.round(oy + p.y * t);
    const size = Math.round(Math.max(10 * this.dpr, Math.min(15 * this.dpr, t * 0.3)));
    ctx.font = `600 ${size}px system-ui, -apple-system, "Segoe UI", sans-serif`;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'bottom';
    const name = c.id === this.world.selfId ? `${c.name} (you)` : c.name;
    const w = Math.ceil(ctx.measureText(name).width) + size;
    const h = size + 4;
    const barH = Math.max(3, Math.round(t / 12));
    const barW = Math.round(t * 0.8);
    const barY = top - barH - 2;
    let labelY = barY - 3;
    const box = () => ({ x: cx - w / 2, y: labelY - size - 2, w, h });
    for (let tries = 0; tries < 6 && placed.some((r) => overlaps(r, box())); tries++) labelY -= h + 2;
    placed.push(box());
    ctx.fillStyle = 'rgba(11,14,19,0.78)';
    roundRect(ctx, cx - w / 2, labelY - size - 2, w, h, size / 3);
    ctx.fillStyle = c.id === this.world.selfId ? '#fde68a' : '#f1f5f9';
    ctx.fillText(name, cx, labelY + 1);
    if (typeof c.health === 'number' && c.maxHealth) {
      const f = Math.max(0, Math.min(1, c.health / c.maxHealth));
      ctx.fillStyle = 'rgba(11,14,19,0.85)';
      ctx.fillRect(cx - barW / 2 - 1, barY - 1, barW + 2, barH + 2);
      ctx.fillStyle = f > 0.5 ? '#4ade80' : f > 0.25 ? '#facc15' : '#f87171';
      ctx.fillRect(cx - barW / 2, barY, Math.round(barW * f), barH);
    }
  }

  _item(ox, oy, item, now) {
    const { ctx } = this;
    const t = this.tilePx;
    const bob = Math.sin(now / 400 + item.x * 1.7 + item.y) * t * 0.04;
    const cx = ox + (item.x + 0.5) * t;
    const cy = oy + (item.y + 0.55) * t + bob;
    const s = t * 0.2;
    ctx.save();
    ctx.fillStyle = 'rgba(0,0,0,0.3)';
    ctx.beginPath();
    ctx.ellipse(cx, oy + (item.y + 0.82) * t, s, s * 0.35, 0, 0, Math.PI * 2);
    ctx.fill();
    if (/potion|flask|elixir/i.test(item.kind)) {
      ctx.fillStyle = '#e11d48';
      ctx.strokeStyle = '#fecdd3';
      ctx.lineWidth = Math.max(1, t / 32);
      ctx.beginPath();
      ctx.arc(cx, cy + s * 0.3, s, 0, Math.PI * 2);
      ctx.fill();
      ctx.stroke();
      ctx.fillStyle = '#cbd5e1';
      ctx.fillRect(cx - s * 0.35, cy - s * 1.3, s * 0.7, s * 0.8);
      ctx.fillStyle = 'rgba(255,255,255,0.6)';
      ctx.beginPath();
      ctx.arc(cx - s * 0.35, cy, s * 0.25, 0, Math.PI * 2);
      ctx.fill();
    } else if (/herb|leaf|plant/i.test(item.kind)) {
      ctx.strokeStyle = '#14532d';
      ctx.lineWidth = Math.max(1, t / 32);
      for (const a of [-0.6, 0, 0.6]) {
        ctx.fillStyle = a ? '#22c55e' : '#4ade80';
        ctx.beginPath();
        ctx.ellipse(cx + Math.sin(a) * s * 0.6, cy - Math.cos(a) * s * 0.5, s * 0.35, s * 0.8, a, 0, Math.PI * 2);
        ctx.fill();
        ctx.stroke();
      }
    } else {
      ctx.fillStyle = '#fbbf24';
      ctx.strokeStyle = shade('#fbbf24', -0.4);
      ctx.lineWidth = Math.max(1, t / 32);
      ctx.beginPath();
      ctx.moveTo(cx, cy - s * 1.1);
      ctx.lineTo(cx + s, cy);
      ctx.lineTo(cx, cy + s * 1.1);
      ctx.lineTo(cx - s, cy);
      ctx.closePath();
      ctx.fill();
      ctx.stroke();
    }
    ctx.restore();
  }

  _outline(ox, oy, p, color, dash, width) {
    const { ctx } = this;
    const t = this.tilePx;
    const w = Math.max(1, Math.round(width * this.dpr));
    ctx.save();
    ctx.strokeStyle = color;
    ctx.lineWidth = w;
    ctx.setLineDash(dash);
    ctx.strokeRect(ox + p.x * t + w / 2, oy + p.y * t + w / 2, t - w, t - w);
    ctx.restore();
  }

  _dot(ox, oy, p, color) {
    const t = this.tilePx;
    this.ctx.fillStyle = color;
    this.ctx.beginPath();
    this.ctx.arc(ox + (p.x + 0.5) * t, oy + (p.y + 0.5) * t, Math.max(2, t / 12), 0, Math.PI * 2);
    this.ctx.fill();
  }

  _floaters(ox, oy, now) {
    const { ctx } = this;
    const t = this.tilePx;
    this.floaters = this.floaters.filter((f) => now - f.t0 < 1100);
    ctx.textAlign = 'center';
    ctx.font = `700 ${Math.round(Math.max(12 * this.dpr, t * 0.38))}px system-ui, sans-serif`;
    for (const f of this.floaters) {
      const k = (now - f.t0) / 1100;
      ctx.globalAlpha = 1 - k;
      ctx.fillStyle = f.color;
      ctx.fillText(f.text, ox + (f.x + 0.5) * t, oy + (f.y + 0.3 - k * 0.8) * t);
    }
    ctx.globalAlpha = 1;
  }
}

function position(a, now) {
  if (!a) return { x: 0, y: 0 };
  const k = Math.min(1, Math.max(0, (now - a.t0) / STEP_MS));
  const e = 1 - (1 - k) * (1 - k); // ease out
  return { x: a.fx + (a.tx - a.fx) * e, y: a.fy + (a.ty - a.fy) * e };
}

function overlaps(a, b) {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

function hueOf(id) {
  let h = 0;
  for (const ch of String(id)) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return h % 360;
}

function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  ctx.roundRect(x, y, w, h, r);
  ctx.fill();
}
