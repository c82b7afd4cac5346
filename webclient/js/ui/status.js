// The status banner (connecting / active / reconnecting / terminating), the pending-actions
// counter and the latency figure.

const LABELS = {
  connecting: 'Connecting…',
  active: 'Connected',
  reconnecting: 'Reconnecting…',
  terminating: 'Signing out…',
  closed: 'Disconnected',
};

export class StatusBar {
  constructor() {
    this.el = document.getElementById('status');
    this.text = document.getElementById('status-text');
    this.pendingEl = document.getElementById('pending');
    this.latencyEl = document.getElementById('latency');
    this._tick = null;
  }

  set(detail) {
    const { status, attempt, retryInMs, reason } = detail;
    clearInterval(this._tick);
    this.el.dataset.status = status;
    document.body.dataset.status = status;
    let label = LABELS[status] || status;
    if (status === 'terminating' && reason) label = reason;
    if ((status === 'reconnecting' || status === 'connecting') && retryInMs !== undefined) {
      const until = Date.now() + retryInMs;
      const render = () => {
        const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
        const why = reason ? `${reason}. ` : '';
        this.text.textContent = `${label} ${why}Attempt ${attempt}${left > 0 ? `, next try in ${left} s` : ''}`;
      };
      render();
      this._tick = setInterval(render, 250);
      return;
    }
    if (status === 'reconnecting' && attempt) label = `Reconnecting… (attempt ${attempt})`;
    this.text.textContent = label;
    if (status !== 'active') this.latencyEl.textContent = '— ms';
  }

  latency(ms) {
    this.latencyEl.textContent = `${ms} ms`;
    this.latencyEl.dataset.level = ms < 80 ? 'good' : ms < 250 ? 'ok' : 'bad';
  }

  pending(actions) {
    const n = actions.length;
    this.pendingEl.hidden = n === 0;
    this.pendingEl.textContent = n === 1 ? '1 action pending' : `${n} actions pending`;
    this.pendingEl.dataset.count = String(n);
  }
}
