// The chat box: a log of chat and system messages (an ARIA live region) and the input.
// Our own lines appear at once as "sending", and are marked sent when the server acks them.

const MAX_LINES = 200;

export class ChatPanel {
  constructor({ onSend }) {
    this.log = document.getElementById('chat-log');
    this.input = document.getElementById('chat-input');
    this.byId = new Map(); // local action id -> <li>
    document.getElementById('chat-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const text = this.input.value.trim();
      if (text) {
        if (onSend(text) === false) return; // not sent: keep the text
        this.input.value = '';
      }
      this.input.blur(); // back to the map
      document.getElementById('world').focus();
    });
    this.input.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') {
        this.input.blur();
        document.getElementById('world').focus();
      }
    });
  }

  focus() {
    this.input.focus();
  }

  clear() {
    this.log.replaceChildren();
    this.byId.clear();
  }

  /** kind: chat | system | alert | combat; own lines carry the local action id. */
  add({ kind = 'system', from = null, text, self = false, id = null, pending = false }) {
    const li = document.createElement('li');
    li.className = `line line-${kind}${self ? ' own' : ''}`;
    const time = document.createElement('time');
    const now = new Date();
    time.dateTime = now.toISOString();
    time.textContent = now.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    li.append(time, ' ');
    if (from) {
      const who = document.createElement('b');
      who.className = 'from';
      who.textContent = `${from}:`;
      li.append(who, ' ');
    }
    const body = document.createElement('span');
    body.className = 'text';
    body.textContent = text;
    li.append(body);
    if (pending) {
      li.dataset.state = 'pending';
      const st = document.createElement('span');
      st.className = 'state';
      st.textContent = 'sending…';
      li.append(' ', st);
    }
    if (id !== null) {
      li.dataset.actionId = String(id);
      this.byId.set(id, li);
    }
    const stick = this.log.scrollTop + this.log.clientHeight >= this.log.scrollHeight - 8;
    this.log.append(li);
    while (this.log.children.length > MAX_LINES) {
      const old = this.log.firstElementChild;
      this.byId.delete(Number(old.dataset.actionId));
      old.remove();
    }
    if (stick) this.log.scrollTop = this.log.scrollHeight;
    return li;
  }

  confirm(id) {
    const li = this.byId.get(id);
    if (!li) return;
    li.dataset.state = 'sent';
    li.querySelector('.state')?.remove();
  }

  fail(id, reason) {
    const li = this.byId.get(id);
    if (!li) return;
    li.dataset.state = 'failed';
    const st = li.querySelector('.state');
    if (st) st.textContent = `not sent: ${reason}`;
  }
}
