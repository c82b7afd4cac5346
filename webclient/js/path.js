// Click-to-walk route: breadth-first search over the 8 neighbours, the same steps the server
// accepts. Returns the tiles to step onto (start excluded), or [] when there is no way.

const DIRS = [[1, 0], [-1, 0], [0, 1], [0, -1], [1, 1], [1, -1], [-1, 1], [-1, -1]];
const MAX_NODES = 20000;

export function findPath(from, to, blocked) {
  if (from.x === to.x && from.y === to.y) return [];
  if (blocked(to.x, to.y) && Math.max(Math.abs(from.x - to.x), Math.abs(from.y - to.y)) === 1) return [];
  const key = (x, y) => `${x},${y}`;
  const prev = new Map([[key(from.x, from.y), null]]);
  const queue = [from];
  // Walking to a blocked tile (or a person) means walking next to it.
  const goal = (x, y) => (x === to.x && y === to.y) || (blocked(to.x, to.y) && Math.max(Math.abs(x - to.x), Math.abs(y - to.y)) === 1);
  for (let head = 0; head < queue.length && prev.size < MAX_NODES; head++) {
    const cur = queue[head];
    for (const [dx, dy] of DIRS) {
      const x = cur.x + dx;
      const y = cur.y + dy;
      const k = key(x, y);
      if (prev.has(k) || blocked(x, y)) continue;
      // The server refuses a diagonal step squeezed between two blocked tiles.
      if (dx && dy && blocked(cur.x + dx, cur.y) && blocked(cur.x, cur.y + dy)) continue;
      prev.set(k, cur);
      const node = { x, y };
      if (goal(x, y)) return unwind(node, prev, key);
      queue.push(node);
    }
  }
  return [];
}

function unwind(node, prev, key) {
  const out = [];
  for (let n = node; n; n = prev.get(key(n.x, n.y))) out.push(n);
  out.pop(); // the start
  return out.reverse();
}
