// Who is nearby: nearest first, with health and distance; a click or Enter picks the target.

export class NearbyPanel {
  constructor({ onSelect }) {
    this.list = document.getElementById('nearby');
    this.count = document.getElementById('nearby-count');
    this.onSelect = onSelect;
    this._key = null;
  }

  render(people, targetId) {
    const key = JSON.stringify([people.map((p) => [p.id, p.name, p.x, p.y, p.distance, p.health, p.maxHealth, p.defeated]), targetId]);
    if (key === this._key) return;
    this._key = key;
    this.count.textContent = people.length ? `(${people.length})` : '';
    const focusedId = document.activeElement?.closest?.('#nearby li')?.dataset.characterId;
    this.list.replaceChildren();
    if (!people.length) {
      const li = document.createElement('li');
      li.className = 'empty';
      li.textContent = 'Nobody in sight.';
      this.list.append(li);
      return;
    }
    for (const p of people) {
      const li = document.createElement('li');
      li.dataset.characterId = p.id;
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'person';
      b.setAttribute('aria-pressed', String(p.id === targetId));
      // Someone first seen arriving may have no known maximum yet: show what we know.
      const known = typeof p.health === 'number';
      const hp = known ? (p.maxHealth ? `${p.health}/${p.maxHealth}` : `${p.health} health`) : '';
      const f = known && p.maxHealth ? Math.max(0, Math.min(1, p.health / p.maxHealth)) : 1;
      b.innerHTML = `<span class="person-name"></span>
        <span class="person-meta"></span>
        <span class="bar" aria-hidden="true"><span class="bar-fill"></span></span>`;
      b.querySelector('.person-name').textContent = p.name + (p.defeated ? ' (defeated)' : '');
      const where = p.distance <= 1 ? 'adjacent' : `${p.distance} tiles`;
      b.querySelector('.person-meta').textContent = `${hp ? `${hp} · ` : ''}${where} · (${p.x}, ${p.y})`;
      b.querySelector('.bar').hidden = !(known && p.maxHealth);
      const fill = b.querySelector('.bar-fill');
      fill.style.width = `${f * 100}%`;
      fill.dataset.level = f > 0.5 ? 'good' : f > 0.25 ? 'ok' : 'bad';
      b.addEventListener('click', () => this.onSelect(p.id === targetId ? null : p.id));
      li.append(b);
      this.list.append(li);
      if (p.id === focusedId) b.focus();
    }
  }
}
