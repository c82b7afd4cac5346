// One actor's detail: its published snapshot and describe() fields (for a PlayerSession, every
// data-model field), links session <-> character <-> zone, messages handled by type, what it
// does now, and the kick action for a session.
import { el, getJson, postJson } from './api.js';
import { actorRows } from './actors.js';
import { confirmAction } from './confirm.js';

let openUrn = null;

function find(cls, entity) {
  return actorRows().find((r) => r.class === cls && (entity === undefined || r.entity_id === entity));
}

function linkTo(label, row, onOpen) {
  if (!row) return el('span', `${label}: not on this node`, { class: 'muted' });
  const b = el('button', `${label} ${row.entity_id ?? row.urn}`, { type: 'button', class: 'link', 'data-link': label });
  b.addEventListener('click', () => onOpen(row.urn));
  return b;
}

function links(a, onOpen) {
  const d = a.detail || {};
  const out = [];
  if (a.class === 'SessionActor') out.push(linkTo('character', find('CharacterActor', d.character_id), onOpen), linkTo('zone', find('ZoneActor'), onOpen));
  if (a.class === 'CharacterActor') out.push(linkTo('session', d.session_id ? find('SessionActor', d.session_id) : null, onOpen), linkTo('zone', find('ZoneActor'), onOpen));
  if (a.class === 'ZoneActor') out.push(el('span', `${actorRows().filter((r) => r.class === 'SessionActor').length} sessions on this node`, { class: 'muted' }));
  return out;
}

function render(a, onOpen) {
  document.getElementById('detail-h').textContent = `${a.class} ${a.entity_id ?? ''}`;
  const age = a.last_message_age_s;
  document.getElementById('detail-now').textContent = a.handling
    ? `Handling ${a.handling} now (began ${age} s ago).`
    : `Idle; last message ${age ?? '–'} s ago; ${a.inbox_depth} waiting in its inbox.${a.stuck ? ' Looks stuck.' : ''}`;
  document.getElementById('detail-links').replaceChildren(...links(a, onOpen));
  const fields = { ...Object.fromEntries(Object.entries(a).filter(([k]) => !['detail', 'message_counts'].includes(k))), ...(a.detail || {}) };
  if (typeof fields.last_heartbeat_at === 'number') fields.last_heartbeat_at = new Date(fields.last_heartbeat_at * 1000).toISOString();
  document.querySelector('#detail-fields tbody').replaceChildren(...Object.entries(fields).map(([k, v]) => {
    const tr = el('tr', null, { 'data-field': k });
    tr.append(el('th', k), el('td', typeof v === 'object' && v !== null ? JSON.stringify(v) : v ?? '–'));
    return tr;
  }));
  const counts = Object.entries(a.message_counts || {});
  document.querySelector('#detail-messages tbody').replaceChildren(...counts.map(([k, n]) => {
    const tr = el('tr', null, { 'data-message': k });
    tr.append(el('th', k), el('td', n));
    return tr;
  }));
  const actions = document.getElementById('detail-actions');
  actions.replaceChildren();
  if (a.class === 'SessionActor' && a.detail && a.status !== 'terminating') {
    const kick = el('button', 'Kick this session…', { type: 'button', class: 'danger', id: 'kick' });
    kick.addEventListener('click', () => kickSession(a.detail));
    actions.append(kick);
  }
}

async function kickSession(d) {
  const ok = await confirmAction(`Kick user ${d.user_id} (session ${d.session_id})? Their socket is closed with "kicked: operator".`, 'Kick');
  if (!ok) return;
  const result = document.getElementById('op-result');
  try {
    await postJson(`/admin/sessions/${encodeURIComponent(d.session_id)}/kick`);
    result.textContent = `Kicked session ${d.session_id} of ${d.user_id}.`;
  } catch (err) {
    result.textContent = `Kick failed: ${err.message}`;
  }
}

export async function openDetail(urn, onOpen) {
  openUrn = urn;
  document.getElementById('detail').hidden = false;
  document.body.classList.add('with-detail');
  await refreshDetail(onOpen);
}

export async function refreshDetail(onOpen) {
  if (!openUrn) return;
  const urn = openUrn;
  try {
    const a = await getJson(`/debug/actors/${encodeURIComponent(urn)}`);
    if (urn === openUrn) render(a, onOpen);
  } catch (err) {
    if (urn === openUrn) document.getElementById('detail-now').textContent = `Gone: ${err.message}`;
  }
}

export function closeDetail() {
  openUrn = null;
  document.getElementById('detail').hidden = true;
  document.body.classList.remove('with-detail');
}
