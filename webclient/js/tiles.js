// Procedural tile art: the map's tileset has no image, only a name and a colour per tile.
// Each tile is painted once per on-screen pixel size (and a few variants, so fields of grass do
// not look stamped) into a small canvas; the world is then built from exact-size copies, which
// keeps every zoom level crisp.

const VARIANTS = 4;
const cache = new Map();

export function tileVariant(x, y) {
  // A cheap, stable hash of the position.
  let h = (x * 374761393 + y * 668265263) | 0;
  h = Math.imul(h ^ (h >>> 13), 1274126177);
  return ((h ^ (h >>> 16)) >>> 0) % VARIANTS;
}

export function tileImage(def, size, variant) {
  const key = `${def.gid}:${def.name}:${def.color}:${size}:${variant}`;
  let img = cache.get(key);
  if (!img) {
    img = document.createElement('canvas');
    img.width = img.height = size;
    paint(img.getContext('2d'), def, size, rng(def.gid * 97 + variant * 7919 + 1));
    if (cache.size > 2000) cache.clear(); // zooming through many sizes: start over
    cache.set(key, img);
  }
  return img;
}

function paint(ctx, def, s, rand) {
  const base = def.color;
  ctx.fillStyle = base;
  ctx.fillRect(0, 0, s, s);
  const painter = PAINTERS.find(([re]) => re.test(def.name))?.[1] || speckle;
  painter(ctx, base, s, rand);
}

const PAINTERS = [
  [/water|sea|lake|river|pond/i, water],
  [/wall|brick/i, bricks],
  [/tree|forest|bush|hedge/i, tree],
  [/rock|mountain|boulder|cliff/i, rock],
  [/flower|blossom/i, flowers],
  [/door|gate/i, door],
  [/grass|meadow|field/i, grass],
  [/sand|beach|desert/i, sand],
  [/dirt|path|road|mud|soil/i, pebbles],
  [/wood|plank|bridge|deck/i, planks],
  [/stone|floor|cobble|tile|flag|pave/i, flagstones],
  [/lava|fire/i, lava],
];

function grass(ctx, base, s, rand) {
  speckle(ctx, base, s, rand, 0.04);
  ctx.lineWidth = Math.max(1, Math.round(s / 24));
  ctx.lineCap = 'round';
  const tufts = 3 + Math.floor(rand() * 3);
  for (let i = 0; i < tufts; i++) {
    const x = rand() * s * 0.8 + s * 0.1;
    const y = rand() * s * 0.75 + s * 0.2;
    const h = s * (0.1 + rand() * 0.08);
    ctx.strokeStyle = shade(base, rand() < 0.5 ? -0.22 : 0.18);
    ctx.beginPath();
    ctx.moveTo(x - h * 0.5, y - h);
    ctx.lineTo(x, y);
    ctx.lineTo(x + h * 0.5, y - h);
    ctx.moveTo(x, y);
    ctx.lineTo(x, y - h * 1.2);
    ctx.stroke();
  }
}

function flowers(ctx, base, s, rand) {
  grass(ctx, base, s, rand);
  const colours = ['#f9a8d4', '#fde047', '#f8fafc', '#c4b5fd'];
  const r = Math.max(1, s / 18);
  for (let i = 0; i < 5; i++) {
    const x = s * (0.12 + rand() * 0.76);
    const y = s * (0.12 + rand() * 0.76);
    ctx.fillStyle = colours[Math.floor(rand() * colours.length)];
    for (const [dx, dy] of [[-1, 0], [1, 0], [0, -1], [0, 1]]) {
      ctx.beginPath();
      ctx.arc(x + dx * r, y + dy * r, r, 0, Math.PI * 2);
      ctx.fill();
    }
    ctx.fillStyle = '#facc15';
    ctx.beginPath();
    ctx.arc(x, y, r * 0.8, 0, Math.PI * 2);
    ctx.fill();
  }
}

function door(ctx, base, s, rand) {
  planks(ctx, base, s, rand);
  ctx.strokeStyle = shade(base, -0.45);
  ctx.lineWidth = Math.max(1, Math.round(s / 16));
  ctx.strokeRect(s * 0.08, s * 0.06, s * 0.84, s * 0.94);
  ctx.fillStyle = '#e2c275';
  ctx.beginPath();
  ctx.arc(s * 0.74, s * 0.55, Math.max(1, s / 16), 0, Math.PI * 2);
  ctx.fill();
}

function water(ctx, base, s, rand) {
  const grad = ctx.createLinearGradient(0, 0, 0, s);
  grad.addColorStop(0, shade(base, 0.06));
  grad.addColorStop(1, shade(base, -0.08));
  ctx.fillStyle = grad;
  ctx.fillRect(0, 0, s, s);
  ctx.strokeStyle = shade(base, 0.3);
  ctx.lineWidth = Math.max(1, Math.round(s / 28));
  for (let i = 0; i < 3; i++) {
    const y = s * (0.2 + i * 0.28) + rand() * s * 0.08;
    const x = rand() * s * 0.5;
    const w = s * (0.25 + rand() * 0.2);
    ctx.beginPath();
    ctx.moveTo(x, y);
    ctx.quadraticCurveTo(x + w / 4, y - s * 0.06, x + w / 2, y);
    ctx.quadraticCurveTo(x + (3 * w) / 4, y + s * 0.06, x + w, y);
    ctx.stroke();
  }
}

function bricks(ctx, base, s, rand) {
  const rows = 4;
  const rh = s / rows;
  for (let r = 0; r < rows; r++) {
    const offset = r % 2 ? s / 4 : 0;
    for (let c = -1; c < 2; c++) {
      const x = c * (s / 2) + offset;
      ctx.fillStyle = shade(base, (rand() - 0.5) * 0.16);
      ctx.fillRect(Math.round(x) + 1, Math.round(r * rh) + 1, Math.round(s / 2) - 2, Math.round(rh) - 2);
    }
  }
  ctx.fillStyle = shade(base, 0.22);
  ctx.fillRect(0, 0, s, Math.max(1, Math.round(s / 32)));
  ctx.fillStyle = shade(base, -0.35);
  ctx.fillRect(0, s - Math.max(1, Math.round(s / 16)), s, Math.max(1, Math.round(s / 16)));
}

function flagstones(ctx, base, s, rand) {
  ctx.fillStyle = shade(base, -0.25);
  ctx.fillRect(0, 0, s, s);
  const g = Math.max(1, Math.round(s / 20));
  const half = Math.round(s / 2);
  const cells = [[0, 0, half, half], [half, 0, s - half, half], [0, half, s - half, s - half], [s - half, half, half, s - half]];
  for (const [x, y, w, h] of cells) {
    ctx.fillStyle = shade(base, (rand() - 0.5) * 0.14);
    ctx.fillRect(x + g, y + g, w - 2 * g, h - 2 * g);
  }
}

function sand(ctx, base, s, rand) {
  speckle(ctx, base, s, rand, 0.12, 14);
}

function pebbles(ctx, base, s, rand) {
  speckle(ctx, base, s, rand, 0.06);
  for (let i = 0; i < 4; i++) {
    ctx.fillStyle = shade(base, rand() < 0.5 ? -0.2 : 0.15);
    ctx.beginPath();
    ctx.ellipse(rand() * s, rand() * s, s * 0.05, s * 0.035, rand() * Math.PI, 0, Math.PI * 2);
    ctx.fill();
  }
}

function planks(ctx, base, s, rand) {
  const n = 4;
  for (let i = 0; i < n; i++) {
    ctx.fillStyle = shade(base, (rand() - 0.5) * 0.14);
    ctx.fillRect(Math.round((i * s) / n), 0, Math.round(s / n) - 1, s);
  }
  ctx.fillStyle = shade(base, -0.3);
  for (let i = 1; i < n; i++) ctx.fillRect(Math.round((i * s) / n) - 1, 0, 1, s);
}

function tree(ctx, base, s, rand) {
  ctx.fillStyle = shade(base, -0.15);
  ctx.fillRect(0, 0, s, s);
  const blobs = [[0.5, 0.45, 0.4], [0.3, 0.55, 0.25], [0.7, 0.58, 0.25]];
  for (const [x, y, r] of blobs) {
    ctx.fillStyle = shade(base, -0.05 + rand() * 0.1);
    ctx.beginPath();
    ctx.arc(x * s, y * s, r * s, 0, Math.PI * 2);
    ctx.fill();
  }
  ctx.fillStyle = shade(base, 0.25);
  ctx.beginPath();
  ctx.arc(s * 0.42, s * 0.35, s * 0.1, 0, Math.PI * 2);
  ctx.fill();
}

function rock(ctx, base, s, rand) {
  speckle(ctx, base, s, rand, 0.05);
  ctx.fillStyle = shade(base, 0.15);
  ctx.beginPath();
  ctx.moveTo(s * 0.1, s * 0.85);
  ctx.lineTo(s * (0.4 + rand() * 0.2), s * 0.15);
  ctx.lineTo(s * 0.9, s * 0.85);
  ctx.closePath();
  ctx.fill();
  ctx.fillStyle = shade(base, -0.2);
  ctx.beginPath();
  ctx.moveTo(s * 0.5, s * 0.85);
  ctx.lineTo(s * 0.62, s * 0.4);
  ctx.lineTo(s * 0.9, s * 0.85);
  ctx.closePath();
  ctx.fill();
}

function lava(ctx, base, s, rand) {
  for (let i = 0; i < 5; i++) {
    ctx.fillStyle = shade(base, 0.2 + rand() * 0.3);
    ctx.beginPath();
    ctx.arc(rand() * s, rand() * s, s * (0.05 + rand() * 0.08), 0, Math.PI * 2);
    ctx.fill();
  }
}

function speckle(ctx, base, s, rand, amount = 0.06, count = 8) {
  const d = Math.max(1, Math.round(s / 16));
  for (let i = 0; i < count; i++) {
    ctx.fillStyle = shade(base, (rand() - 0.5) * 2 * amount);
    ctx.fillRect(Math.floor(rand() * s), Math.floor(rand() * s), d, d);
  }
}

/** Lighten (amount > 0) or darken (amount < 0) a #rrggbb colour. */
export function shade(hex, amount) {
  const n = parseInt(hex.slice(1), 16);
  const ch = [(n >> 16) & 255, (n >> 8) & 255, n & 255].map((v) =>
    Math.round(amount >= 0 ? v + (255 - v) * amount : v * (1 + amount)),
  );
  return `rgb(${ch[0]},${ch[1]},${ch[2]})`;
}

function rng(seed) {
  // mulberry32
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
