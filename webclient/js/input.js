// Keyboard and mouse: maps keys and clicks to the game's intents. Nothing here sends frames.

import { KEY_DIRS } from './movement.js';

/**
 * @param {object} o
 * @param {HTMLCanvasElement} o.canvas
 * @param {import('./render.js').Renderer} o.renderer
 * @param {import('./movement.js').Mover} o.mover
 * @param {object} o.on  handlers: ability(name), chat(), cycleTarget(), clearTarget(), clickTile(tile)
 */
export function installControls({ canvas, renderer, mover, on, enabled }) {
  const typing = (el) => el && (el.tagName === 'INPUT' || el.tagName === 'TEXTAREA' || el.isContentEditable);

  document.addEventListener('keydown', (e) => {
    if (!enabled() || e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    const dir = KEY_DIRS[e.code];
    if (dir) {
      e.preventDefault(); // no page scrolling
      if (!e.repeat) mover.keyDown(dir);
      return;
    }
    if (e.repeat) return;
    if (/^[1-4]$/.test(e.key)) {
      e.preventDefault();
      on.ability(e.key);
    } else if (e.key === 'Enter' && !(e.target instanceof HTMLButtonElement) && !(e.target instanceof HTMLAnchorElement)) {
      e.preventDefault();
      on.chat();
    } else if (e.key === 't' || e.key === 'T') {
      on.cycleTarget();
    } else if (e.key === 'Escape') {
      mover.stop();
      on.clearTarget();
    } else if (e.key === '+' || e.key === '=') {
      renderer.zoom(1);
    } else if (e.key === '-' || e.key === '_') {
      renderer.zoom(-1);
    } else if (e.key === '0') {
      renderer.resetZoom();
    }
  });

  document.addEventListener('keyup', (e) => {
    const dir = KEY_DIRS[e.code];
    if (dir) mover.keyUp(dir);
  });

  // A key released while the window had no focus would otherwise walk on forever.
  window.addEventListener('blur', () => mover.releaseAll());
  document.addEventListener('focusin', (e) => {
    if (typing(e.target)) mover.releaseAll();
  });

  canvas.addEventListener('click', (e) => {
    if (!enabled()) return;
    canvas.focus();
    const tile = renderer.tileAt(e.clientX, e.clientY);
    if (tile) on.clickTile(tile);
  });
  canvas.addEventListener('mousemove', (e) => {
    renderer.hover = renderer.tileAt(e.clientX, e.clientY);
  });
  canvas.addEventListener('mouseleave', () => {
    renderer.hover = null;
  });
  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    renderer.zoom(e.deltaY < 0 ? 1 : -1);
  }, { passive: false });
}
