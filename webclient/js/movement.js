// Turns held keys and click-to-walk routes into move actions, one step at a time: the next step
// goes out once the previous one is acked and the server's move rate allows it.

import { findPath } from './path.js';

const STEP_INTERVAL_MS = 150; // under the server's default 8 moves/s, with room for jitter
const DIAGONAL_GRACE_MS = 45; // a second key pressed this soon after the first makes a diagonal

export const KEY_DIRS = {
  ArrowUp: 'up', KeyW: 'up',
  ArrowDown: 'down', KeyS: 'down',
  ArrowLeft: 'left', KeyA: 'left',
  ArrowRight: 'right', KeyD: 'right',
};

export class Mover {
  /**
   * @param {object} o
   * @param {import('./world.js').World} o.world
   * @param {(dx:number, dy:number) => boolean} o.send   send a move; false if it could not be
   * @param {() => boolean} o.busy                        a move is still waiting for its ack
   */
  constructor({ world, send, busy }) {
    this.world = world;
    this.send = send;
    this.busy = busy;
    this.held = new Set();
    this.tapped = new Set(); // pressed since the last step, even if already released
    this.firstPressAt = 0;
    this.nextAt = 0;
    this.path = [];
    this.goal = null;
  }

  keyDown(dir) {
    if (!this.held.size && !this.tapped.size) this.firstPressAt = performance.now();
    this.held.add(dir);
    this.tapped.add(dir);
    this.path = [];
    this.goal = null;
  }

  keyUp(dir) {
    this.held.delete(dir);
  }

  releaseAll() {
    this.held.clear();
  }

  walkTo(tile) {
    const me = this.world.self;
    if (!me || !this.world.map) return false;
    const blocked = (x, y) => this.world.map.blocked(x, y) || (this.world.occupant(x, y) && !(x === me.x && y === me.y));
    this.path = findPath(me, tile, blocked);
    this.goal = this.path.length ? tile : null;
    return this.path.length > 0;
  }

  stop() {
    this.path = [];
    this.goal = null;
    this.tapped.clear();
  }

  tick(now) {
    if (now < this.nextAt || this.busy()) return;
    const me = this.world.self;
    if (!me) return;
    const keys = new Set([...this.held, ...this.tapped]);
    if (keys.size) {
      if (keys.size === 1 && this.held.size === 1 && now - this.firstPressAt < DIAGONAL_GRACE_MS) return;
      const dx = (keys.has('right') ? 1 : 0) - (keys.has('left') ? 1 : 0);
      const dy = (keys.has('down') ? 1 : 0) - (keys.has('up') ? 1 : 0);
      this.tapped.clear();
      if ((dx || dy) && this.send(dx, dy)) this.nextAt = now + STEP_INTERVAL_MS;
      return;
    }
    while (this.path.length && this.path[0].x === me.x && this.path[0].y === me.y) this.path.shift();
    if (!this.path.length) {
      this.goal = null;
      return;
    }
    const next = this.path[0];
    const dx = next.x - me.x;
    const dy = next.y - me.y;
    if (Math.abs(dx) > 1 || Math.abs(dy) > 1) {
      // We were pushed off the route (respawn, snapshot): plan again from here.
      if (!this.walkTo(this.goal)) return;
      return;
    }
    if (this.send(dx, dy)) this.nextAt = now + STEP_INTERVAL_MS;
  }
}
