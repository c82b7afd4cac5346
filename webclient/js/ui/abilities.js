// The ability bar: keys 1-4, each button showing pending and cooldown state.

const ICONS = {
  strike: '<path d="M4 20l4-4m-2 6l-4-4m4-2L19 3h2v2L8 18" />',
  heal: '<path d="M12 4v16M4 12h16" />',
  pickup: '<path d="M7 11V5a1.5 1.5 0 013 0v5m0-1V3.5a1.5 1.5 0 013 0V10m0-1V5a1.5 1.5 0 013 0v7c0 4-2.5 8-6.5 8S6 17 5 15l-2-4a1.5 1.5 0 012.5-1.5L7 12" />',
  use_item: '<path d="M10 3h4M11 3v5l-5 9a2.5 2.5 0 002 4h8a2.5 2.5 0 002-4l-5-9V3M8 15h8" />',
};

export const ABILITIES = [
  { name: 'strike', key: '1', label: 'Strike', hint: 'Hit an adjacent target' },
  { name: 'heal', key: '2', label: 'Heal', hint: 'Heal yourself, or an adjacent target' },
  { name: 'pickup', key: '3', label: 'Pick up', hint: 'Take the item on your tile' },
  { name: 'use_item', key: '4', label: 'Potion', hint: 'Drink a potion from your inventory' },
];

export class AbilityBar {
  constructor({ onUse }) {
    this.nav = document.getElementById('abilities');
    this.buttons = new Map();
    this.readyAt = new Map();
    // The server's defaults; every ack's cooldown_s replaces them with the real figure.
    this.cooldownMs = new Map([['strike', 800], ['heal', 3000], ['pickup', 250], ['use_item', 1000]]);
    for (const a of ABILITIES) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'ability';
      b.dataset.ability = a.name;
      b.title = `${a.hint} (key ${a.key})`;
      b.setAttribute('aria-keyshortcuts', a.key);
      b.innerHTML = `<svg viewBox="0 0 24 24" aria-hidden="true">${ICONS[a.name]}</svg>
        <span class="ability-label">${a.label}</span><kbd>${a.key}</kbd>
        <span class="cooldown" aria-hidden="true"></span><span class="cooldown-text"></span>`;
      b.addEventListener('click', () => onUse(a.name));
      this.nav.append(b);
      this.buttons.set(a.name, b);
    }
    this._loop = this._loop.bind(this);
    requestAnimationFrame(this._loop);
  }

  nameForKey(key) {
    return ABILITIES.find((a) => a.key === key)?.name || null;
  }

  /** Cooldown lengths as the server announces them ({name: ms}). */
  setCooldowns(map) {
    for (const [name, ms] of Object.entries(map || {})) if (typeof ms === 'number') this.cooldownMs.set(name, ms);
  }

  coolingDown(name) {
    return (this.readyAt.get(name) || 0) > performance.now();
  }

  startCooldown(name, ms = this.cooldownMs.get(name)) {
    this.cooldownMs.set(name, ms);
    if (!ms) return;
    this.readyAt.set(name, performance.now() + ms);
    this.buttons.get(name).dataset.cooldownTotal = String(ms);
  }

  setPending(name, on) {
    const b = this.buttons.get(name);
    if (b) b.classList.toggle('pending', on);
  }

  flash(name, ok) {
    const b = this.buttons.get(name);
    if (!b) return;
    b.classList.remove('ok', 'bad');
    void b.offsetWidth; // restart the animation
    b.classList.add(ok ? 'ok' : 'bad');
  }

  setEnabled(name, enabled, why = '') {
    const b = this.buttons.get(name);
    if (!b) return;
    b.setAttribute('aria-disabled', String(!enabled));
    b.dataset.why = why;
  }

  _loop() {
    const now = performance.now();
    for (const [name, b] of this.buttons) {
      const left = (this.readyAt.get(name) || 0) - now;
      const total = Number(b.dataset.cooldownTotal || 1);
      const on = left > 0;
      b.classList.toggle('cooling', on);
      b.style.setProperty('--cd', on ? String(Math.min(1, left / total)) : '0');
      const text = on ? (left / 1000).toFixed(1) : '';
      const el = b.querySelector('.cooldown-text');
      if (el.textContent !== text) el.textContent = text;
    }
    requestAnimationFrame(this._loop);
  }
}
