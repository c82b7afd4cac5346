// The operators' console: refreshes the summary and the actor table every second, the cluster
// list every two, and the open actor's detail with them.
import { getJson, postJson } from './api.js';
import { renderActors, wireFilters } from './actors.js';
import { confirmAction } from './confirm.js';
import { closeDetail, openDetail, refreshDetail } from './detail.js';
import { renderCluster, renderSummary } from './summary.js';

const REFRESH_MS = 1000;
const open = (urn) => openDetail(urn, open);
let ticks = 0;
let zone = null;
let own = null; // this node's latest summary

async function refresh() {
  const failures = [];
  const jobs = [
    getJson('/debug/summary').then((s) => { own = s; renderSummary(s); }),
    getJson('/debug/actors').then((listing) => {
      renderActors(listing, open);
      zone = zone ?? listing.actors.find((r) => r.class === 'ZoneActor')?.entity_id ?? null;
      const field = document.getElementById('broadcast-zone');
      if (zone && !field.value) field.value = zone;
    }),
    refreshDetail(open),
  ];
  if (ticks % 2 === 0) jobs.push(getJson('/debug/cluster'));
  ticks += 1;
  const results = await Promise.allSettled(jobs);
  for (const r of results) if (r.status === 'rejected') failures.push(r.reason.message);
  const cluster = results[3];
  if (cluster?.status === 'fulfilled') renderCluster(cluster.value, own);
  document.getElementById('refreshed').textContent = failures.length
    ? `refresh failed: ${failures.join('; ')}`
    : `updated ${new Date().toLocaleTimeString()}`;
  document.body.dataset.refreshed = String(ticks);
}

async function loop() {
  await refresh();
  setTimeout(loop, REFRESH_MS);
}

function result(text) {
  document.getElementById('op-result').textContent = text;
}

document.getElementById('broadcast').addEventListener('submit', async (e) => {
  e.preventDefault();
  const zoneName = document.getElementById('broadcast-zone').value.trim();
  const text = document.getElementById('broadcast-text').value.trim();
  if (!text) return;
  if (!(await confirmAction(`Send "${text}" to every player of zone ${zoneName} (on every node)?`, 'Broadcast'))) return;
  try {
    const a = await postJson('/admin/broadcast', { zone: zoneName, text });
    result(`Broadcast to ${a.sessions} session${a.sessions === 1 ? '' : 's'} of zone ${a.zone} on this node, and to the other nodes' players.`);
  } catch (err) {
    result(`Broadcast failed: ${err.message}`);
  }
});

document.getElementById('drain').addEventListener('click', async () => {
  if (!(await confirmAction('Drain this node? Every player is moved to another node, then this process stops.', 'Drain'))) return;
  result('Draining…');
  try {
    const a = await postJson('/admin/drain');
    result(`Drained: ${a.parked} session${a.parked === 1 ? '' : 's'} moved; the node is stopping.`);
  } catch (err) {
    result(`Drain failed: ${err.message}`);
  }
});

document.getElementById('detail-close').addEventListener('click', closeDetail);
wireFilters(open);
loop();
