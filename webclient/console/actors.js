// The actor table: search, sort, filter by class, status, inbox depth and last-message age;
// actors that look stuck (flagged by the server, or whose inbox grew since the last refresh
// while they handled nothing) stand out.
import { el } from './api.js';

const filters = { search: '', cls: '', status: '', inbox: 0, age: 0, stuck: false };
let sortKey = 'class';
let sortDir = 1;
let rows = [];
const previous = new Map(); // urn -> {inbox, handled} at the last refresh

export function growing(row) {
  const before = previous.get(row.urn);
  return Boolean(before && row.inbox_depth > before.inbox && row.messages_handled === before.handled && row.inbox_depth > 0);
}

function options(select, values) {
  const keep = select.value;
  select.replaceChildren(el('option', 'all', { value: '' }), ...values.map((v) => el('option', v, { value: v })));
  select.value = values.includes(keep) ? keep : '';
}

function matches(r) {
  if (filters.cls && r.class !== filters.cls) return false;
  if (filters.status && r.status !== filters.status) return false;
  if ((r.inbox_depth || 0) < filters.inbox) return false;
  if (filters.age > 0 && !(r.last_message_age_s >= filters.age)) return false;
  if (filters.stuck && !r.lookStuck) return false;
  if (filters.search) {
    const hay = `${r.class} ${r.urn} ${r.entity_id ?? ''} ${r.status} ${r.handling ?? ''}`.toLowerCase();
    if (!hay.includes(filters.search)) return false;
  }
  return true;
}

function compare(a, b) {
  const x = a[sortKey];
  const y = b[sortKey];
  if (x === y) return a.urn < b.urn ? -1 : 1;
  if (x === null || x === undefined) return 1;
  if (y === null || y === undefined) return -1;
  return (x < y ? -1 : 1) * sortDir;
}

export function renderActors(listing, onOpen) {
  rows = listing.actors.map((r) => ({ ...r, lookStuck: r.stuck || growing(r) }));
  previous.clear();
  for (const r of listing.actors) previous.set(r.urn, { inbox: r.inbox_depth, handled: r.messages_handled });
  options(document.getElementById('actor-class'), Object.keys(listing.by_class).sort());
  options(document.getElementById('actor-status'), [...new Set(rows.map((r) => r.status))].sort());
  draw(onOpen);
}

export function draw(onOpen) {
  const shown = rows.filter(matches).sort(compare);
  document.getElementById('actor-count').textContent = `${shown.length} of ${rows.length}`;
  document.querySelector('#actors tbody').replaceChildren(...shown.map((r) => {
    const tr = el('tr', null, { 'data-urn': r.urn, 'data-class': r.class, 'data-entity': r.entity_id ?? '' });
    if (r.lookStuck) tr.classList.add('stuck');
    const entity = el('td');
    const open = el('button', r.entity_id ?? r.urn, { type: 'button', class: 'link', title: r.urn });
    open.addEventListener('click', () => onOpen(r.urn));
    entity.append(open);
    tr.append(el('td', r.class), entity, el('td', r.status), el('td', r.inbox_depth),
      el('td', r.messages_handled ?? '–'), el('td', r.last_message_age_s ?? '–'),
      el('td', r.handling ?? (r.lookStuck ? 'stuck?' : 'idle')), el('td', (r.started_at || '').slice(11, 19), { title: r.started_at || '' }));
    return tr;
  }));
}

export function actorRows() {
  return rows;
}

export function wireFilters(onOpen) {
  const on = (id, key, read) => document.getElementById(id).addEventListener('input', (e) => { filters[key] = read(e.target); draw(onOpen); });
  on('actor-search', 'search', (t) => t.value.trim().toLowerCase());
  on('actor-class', 'cls', (t) => t.value);
  on('actor-status', 'status', (t) => t.value);
  on('actor-inbox', 'inbox', (t) => Number(t.value) || 0);
  on('actor-age', 'age', (t) => Number(t.value) || 0);
  on('actor-stuck', 'stuck', (t) => t.checked);
  for (const th of document.querySelectorAll('#actors th[data-sort]')) {
    th.tabIndex = 0;
    const sort = () => {
      sortDir = sortKey === th.dataset.sort ? -sortDir : 1;
      sortKey = th.dataset.sort;
      for (const other of document.querySelectorAll('#actors th')) other.removeAttribute('aria-sort');
      th.setAttribute('aria-sort', sortDir > 0 ? 'ascending' : 'descending');
      draw(onOpen);
    };
    th.addEventListener('click', sort);
    th.addEventListener('keydown', (e) => { if (e.key === 'Enter') sort(); });
  }
}
