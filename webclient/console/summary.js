// This node's summary cards and the cluster table.
import { duration, el } from './api.js';

function card(title, lines) {
  const box = el('div', null, { class: 'card' });
  box.append(el('h3', title));
  const dl = el('dl');
  for (const [k, v] of lines) dl.append(el('dt', k), el('dd', v));
  box.append(dl);
  return box;
}

const ms = (v) => (v === null || v === undefined ? '–' : `${v} ms`);

export function renderSummary(s) {
  document.getElementById('node-id').textContent = s.node_id;
  const health = document.getElementById('health');
  health.textContent = s.health;
  health.dataset.health = s.health.split(':')[0].replace(' ', '-');
  const m = s.last_minute;
  const rejects = Object.entries(m.rejects);
  const cards = [
    card('Node', [['id', s.node_id], ['version', s.version], ['mode', s.mode], ['uptime', duration(s.uptime_s)], ['open sockets', s.open_sockets]]),
    card(`Sessions (${s.sessions_total})`, Object.entries(s.sessions)),
    card(`Actors (${s.actors_total})`, [...Object.entries(s.actors), ['inbox total', s.inbox_total], ['stuck', s.stuck_actors]]),
    card(`Storage, last ${Math.round(m.window_s)} s`, [['batches', m.batches], ['works', m.works], ['commit avg', ms(m.commit_avg_ms)], ['commit p95 ≤', ms(m.commit_p95_ms)], ['acks', m.acks]]),
    card('Cache', [['hit ratio', s.cache_hit_ratio === null ? '–' : `${(100 * s.cache_hit_ratio).toFixed(1)} %`]]),
    card(`Rejects, last ${Math.round(m.window_s)} s (${m.rejects_total})`, rejects.length ? rejects : [['none', '']]),
  ];
  const box = document.getElementById('summary');
  box.replaceChildren(...cards);
  const stuckCard = box.children[2];
  stuckCard.classList.toggle('alert', s.stuck_actors > 0);
}

/** The cluster table; this node's row uses ``own`` (its summary just read), not the published copy. */
export function renderCluster(answer, own = null) {
  const nodes = answer.nodes.map((n) => (own && n.node_id === own.node_id ? own : n));
  if (own && !nodes.some((n) => n.node_id === own.node_id)) nodes.push(own);
  const body = document.querySelector('#cluster tbody');
  body.replaceChildren(...nodes.map((n) => {
    const tr = el('tr', null, { 'data-node': n.node_id });
    const name = el('td');
    const link = el('a', n.node_id, { href: n.console_url || '#' });
    name.append(link);
    if (n.node_id === answer.node_id) name.append(el('span', ' (this node)', { class: 'muted' }));
    const sessions = Object.entries(n.sessions).filter(([, c]) => c).map(([k, c]) => `${c} ${k}`).join(', ');
    tr.append(name, el('td', n.health, { class: 'health', 'data-health': n.health.split(':')[0].replace(' ', '-') }),
      el('td', `${n.sessions_total}${sessions ? ` (${sessions})` : ''}`), el('td', n.actors_total),
      el('td', n.stuck_actors), el('td', n.last_minute.batches), el('td', duration(n.uptime_s)), el('td', n.version));
    if (n.stuck_actors > 0) tr.classList.add('stuck');
    return tr;
  }));
  document.getElementById('cluster-note').textContent = answer.error
    ? `The cluster list is unavailable (${answer.message}); showing this node only.`
    : `${nodes.length} node${nodes.length === 1 ? '' : 's'} publishing a summary within the last 10 s.`;
}
