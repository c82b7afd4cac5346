// A blocking notice with buttons (version mismatch, session replaced, signed out).

let lastFocus = null;

export function showModal({ title, body, actions = [], kind = 'info' }) {
  const modal = document.getElementById('modal');
  document.getElementById('modal-title').textContent = title;
  document.getElementById('modal-body').textContent = body;
  const box = document.getElementById('modal-actions');
  box.replaceChildren();
  for (const a of actions) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = a.label;
    if (a.primary) b.className = 'primary';
    b.addEventListener('click', () => a.onClick?.());
    box.append(b);
  }
  modal.dataset.kind = kind;
  lastFocus = document.activeElement;
  modal.hidden = false;
  (box.querySelector('.primary') || box.querySelector('button'))?.focus();
}

export function hideModal() {
  document.getElementById('modal').hidden = true;
  lastFocus?.focus?.();
}

// Keep Tab inside the dialog while it is open.
document.addEventListener('keydown', (e) => {
  const modal = document.getElementById('modal');
  if (modal.hidden || e.key !== 'Tab') return;
  const buttons = [...modal.querySelectorAll('button')];
  if (!buttons.length) return;
  const i = buttons.indexOf(document.activeElement);
  const next = e.shiftKey ? (i <= 0 ? buttons.length - 1 : i - 1) : (i + 1) % buttons.length;
  buttons[next].focus();
  e.preventDefault();
});
