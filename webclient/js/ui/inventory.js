// The inventory panel: one row per item, each with a "use" button.

export class InventoryPanel {
  constructor({ onUse }) {
    this.list = document.getElementById('inventory');
    this.onUse = onUse;
    this._key = null;
  }

  render(items) {
    const key = JSON.stringify(items);
    if (key === this._key) return; // keep focus on the buttons while nothing changed
    this._key = key;
    this.list.replaceChildren();
    if (!items.length) {
      const li = document.createElement('li');
      li.className = 'empty';
      li.textContent = 'Empty. Walk onto an item and press 3 to pick it up.';
      this.list.append(li);
      return;
    }
    for (const it of items) {
      const li = document.createElement('li');
      li.dataset.itemId = it.id;
      const name = document.createElement('span');
      name.className = 'item-name';
      name.textContent = it.count > 1 ? `${label(it.kind)} ×${it.count}` : label(it.kind);
      const use = document.createElement('button');
      use.type = 'button';
      use.textContent = 'Use';
      use.setAttribute('aria-label', `Use ${label(it.kind)}`);
      use.addEventListener('click', () => this.onUse(it));
      li.append(name, use);
      this.list.append(li);
    }
  }
}

export function label(kind) {
  const s = String(kind).replace(/_/g, ' ');
  return s.charAt(0).toUpperCase() + s.slice(1);
}
