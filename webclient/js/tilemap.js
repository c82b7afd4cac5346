// The Tiled JSON map (/maps/<map_id>.tmj): tile layers "ground" and "collision" and an
// embedded tileset whose tiles carry the properties `name` and `color`.

const FLIP_MASK = 0x1fffffff; // Tiled keeps flip flags in the top three bits of a gid

export async function loadMap(mapId) {
  const res = await fetch(`/maps/${encodeURIComponent(mapId)}.tmj`);
  if (!res.ok) throw new Error(`map ${mapId}: HTTP ${res.status}`);
  return new TileMap(await res.json());
}

export class TileMap {
  constructor(tmj) {
    this.width = tmj.width;
    this.height = tmj.height;
    this.tileDefs = new Map(); // gid -> {gid, name, color, blocks}
    for (const ts of tmj.tilesets || []) {
      for (const t of ts.tiles || []) {
        const props = Object.fromEntries((t.properties || []).map((p) => [p.name, p.value]));
        const gid = ts.firstgid + t.id;
        this.tileDefs.set(gid, {
          gid,
          name: String(props.name || t.type || 'floor'),
          color: /^#[0-9a-f]{6}$/i.test(props.color || '') ? props.color : '#556070',
        });
      }
    }
    const layers = (tmj.layers || []).filter((l) => l.type === 'tilelayer');
    const byName = (n) => layers.find((l) => l.name === n);
    this.ground = layerData(byName('ground') || layers[0], this.width * this.height);
    this.collision = layerData(byName('collision'), this.width * this.height);
  }

  inside(x, y) {
    return x >= 0 && y >= 0 && x < this.width && y < this.height;
  }

  tileAt(layer, x, y) {
    if (!this.inside(x, y)) return null;
    const gid = layer[y * this.width + x];
    return gid ? this.tileDefs.get(gid) || { gid, name: 'unknown', color: '#556070' } : null;
  }

  /** The server's rule: outside the map, or anything in the collision layer, blocks. */
  blocked(x, y) {
    return !this.inside(x, y) || this.collision[y * this.width + x] !== 0;
  }
}

function layerData(layer, size) {
  const out = new Uint32Array(size);
  if (!layer) return out;
  let data = layer.data;
  if (typeof data === 'string') {
    if (layer.compression) throw new Error('compressed Tiled layers are not supported');
    const bytes = Uint8Array.from(atob(data.trim()), (c) => c.charCodeAt(0));
    data = new Uint32Array(bytes.buffer, 0, Math.floor(bytes.length / 4));
  }
  for (let i = 0; i < size && i < data.length; i++) out[i] = data[i] & FLIP_MASK;
  return out;
}
