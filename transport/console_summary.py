"""What the operators' console says about one node, and its publication to the cluster.

:class:`NodeConsole` samples the node's counters every :data:`SUMMARY_INTERVAL_S` (so rates
"over the last minute" are differences between two samples, not a scan of anything), builds the
node's summary (uptime, sessions by status, actors by class, storage batches and commit latency,
cache hit ratio, rejects by code) and publishes it in Redis (:mod:`storage.redis.node_summaries`)
so every node's console lists the whole cluster. Everything read here is what the actors and
the metrics publish: nothing waits for an actor, and the Redis calls run in an executor.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from tornado.ioloop import PeriodicCallback

from actors.base import live_actors
from config.version import SERVER_VERSION
from storage.redis.node_summaries import NodeSummaries
from transport.metrics import SESSION_STATUSES

log = logging.getLogger(__name__)

SUMMARY_INTERVAL_S = 2.0  # sample the counters and publish the summary this often
SUMMARY_TTL_S = 10.0  # a node not heard from for this long leaves the cluster list
WINDOW_S = 60.0  # "over the last minute"
STUCK_AFTER_S = 5.0  # messages waiting (or one being handled) and nothing handled for this long


def iso(epoch_s: float | None) -> str | None:
    """``epoch_s`` as an ISO-8601 UTC timestamp with milliseconds, or None."""
    if epoch_s is None:
        return None
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def looks_stuck(snap: dict[str, Any], now: float) -> bool:
    """True for an actor that handled nothing for :data:`STUCK_AFTER_S` while messages wait in
    its inbox, or that has been inside one handler that long."""
    last = snap.get("last_message_at") or snap.get("started_at")
    if last is None or now - last < STUCK_AFTER_S:
        return False
    return snap.get("handling") is not None or bool(snap.get("inbox_depth"))


def _samples(metric: Any) -> Iterable[Any]:
    for family in metric.collect():
        yield from family.samples


class CounterWindow:
    """Samples of the node's counters over the last minute; differences give the rates."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics
        self.samples: deque[tuple[float, dict[str, float]]] = deque()

    def read(self) -> dict[str, float]:
        """The counters now (flat: ``batches``, ``works``, ``commits``, ``commit_s``,
        ``commit_le_<bound>``, ``acks``, ``reject:<code>``)."""
        m = self.metrics
        out: dict[str, float] = {}
        for s in _samples(m.batch_size):
            if s.name.endswith("_count"):
                out["batches"] = s.value
            elif s.name.endswith("_sum"):
                out["works"] = s.value
        for s in _samples(m.commit_latency):
            if s.name.endswith("_count"):
                out["commits"] = s.value
            elif s.name.endswith("_sum"):
                out["commit_s"] = s.value
            elif s.name.endswith("_bucket"):
                out["commit_le_" + s.labels["le"]] = s.value
        for s in _samples(m.acks):
            if s.name.endswith("_total"):
                out["acks"] = s.value
        for s in _samples(m.rejects):
            if s.name.endswith("_total"):
                out["reject:" + s.labels["code"]] = s.value
        return out

    def sample(self, now: float) -> None:
        """Record the counters now; forget samples older than the window (keeping one)."""
        self.samples.append((now, self.read()))
        while len(self.samples) > 2 and self.samples[1][0] <= now - WINDOW_S:
            self.samples.popleft()

    def last_minute(self, now: float) -> dict[str, Any]:
        """Storage, acks and rejects between the oldest kept sample and now."""
        current = self.read()
        then, old = self.samples[0] if self.samples else (now, current)
        delta = {k: v - old.get(k, 0.0) for k, v in current.items()}
        commits = delta.get("commits", 0.0)
        rejects = {k[7:]: int(v) for k, v in sorted(delta.items()) if k.startswith("reject:") and v > 0}
        return {
            "window_s": round(max(0.0, now - then), 1),
            "batches": int(delta.get("batches", 0)),
            "works": int(delta.get("works", 0)),
            "commit_avg_ms": round(1000 * delta.get("commit_s", 0.0) / commits, 2) if commits else None,
            "commit_p95_ms": _quantile_ms(delta, commits, 0.95),
            "acks": int(delta.get("acks", 0)),
            "rejects": rejects,
            "rejects_total": sum(rejects.values()),
        }


def _quantile_ms(delta: dict[str, float], count: float, q: float) -> float | None:
    """The upper bound of the histogram bucket holding the ``q`` quantile (Prometheus style)."""
    if not count:
        return None
    bounds = sorted((float(k[10:]), v) for k, v in delta.items() if k.startswith("commit_le_"))
    for bound, seen in bounds:
        if seen >= q * count:
            return None if bound == float("inf") else round(bound * 1000, 2)
    return None


class NodeConsole:
    """The node's side of the console: its summary, sampled and published every few seconds."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.started_at = time.time()
        self.window = CounterWindow(node.metrics)
        self._timer: Any = None
        self._publishing = False
        self.summaries: NodeSummaries | None = None

    def start(self) -> None:
        """Begin sampling and publishing (IOLoop thread, once Redis and the listener are up)."""
        if self.node.redis is not None:
            self.summaries = NodeSummaries(self.node.redis, self.node.settings.redis.key_prefix, SUMMARY_TTL_S)
        self.window.sample(time.time())
        self._timer = PeriodicCallback(self._tick, SUMMARY_INTERVAL_S * 1000)
        self._timer.start()
        self._tick()

    def stop(self) -> None:
        """Stop publishing and withdraw the summary (in an executor: the consoles drop us now)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
            if self.summaries is not None and self.node.loop is not None:
                self.node.loop.run_in_executor(None, self._withdraw)

    def _withdraw(self) -> None:
        try:
            self.summaries.withdraw(self.node.node_id)
        except Exception as exc:  # Redis away or already closed: the TTL removes it
            log.debug("node summary not withdrawn: %r", exc)

    def _tick(self) -> None:
        now = time.time()
        self.window.sample(now)
        if self.summaries is None or self._publishing:
            return
        summary = self.summary(now)
        self._publishing = True
        future = self.node.loop.run_in_executor(None, self._publish, summary)
        future.add_done_callback(lambda _: setattr(self, "_publishing", False))

    def _publish(self, summary: dict[str, Any]) -> None:
        try:
            self.summaries.publish(self.node.node_id, summary)
        except Exception as exc:  # Redis away (or closed at shutdown): the next tick tries again
            log.debug("node summary not published: %r", exc)

    def cluster(self) -> list[dict[str, Any]]:
        """Every node's published summary (blocking Redis: call from an executor)."""
        if self.summaries is None:
            return [self.summary()]
        return self.summaries.all()

    def health(self) -> str:
        """``ready``, ``draining``, ``stopping``, ``broken: ...`` or ``storage failing``."""
        node = self.node
        if node.broken:
            return "broken: " + ", ".join(node.broken)
        if node.stopping:
            return "stopping"
        if node.draining:
            return "draining"
        if getattr(node, "storage_failing_since", None) is not None:
            return "storage failing"
        return "ready"

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """This node's summary as the console shows it (IOLoop thread; reads no actor)."""
        now = time.time() if now is None else now
        node = self.node
        statuses = node.directory.session_statuses() if node.directory is not None else []
        sessions = {status: 0 for status in SESSION_STATUSES}
        for status in statuses:
            sessions[status] = sessions.get(status, 0) + 1
        actors: dict[str, int] = {}
        inbox = stuck = 0
        for snap in live_actors():
            actors[snap["class"]] = actors.get(snap["class"], 0) + 1
            inbox += snap.get("inbox_depth") or 0
            stuck += looks_stuck(snap, now)
        ratio = next((s.value for s in _samples(node.metrics.cache_hit_ratio)), None)
        return {
            "node_id": node.node_id,
            "version": SERVER_VERSION,
            "mode": node.settings.mode,
            "console_url": _console_url(node),
            "started_at": iso(self.started_at),
            "uptime_s": round(now - self.started_at, 1),
            "generated_at": iso(now),
            "health": self.health(),
            "sessions": sessions,
            "sessions_total": len(statuses),
            "open_sockets": len(getattr(node, "sockets", ())),
            "actors": dict(sorted(actors.items())),
            "actors_total": sum(actors.values()),
            "inbox_total": inbox,
            "stuck_actors": stuck,
            "cache_hit_ratio": ratio,
            "last_minute": self.window.last_minute(now),
        }


def _console_url(node: Any) -> str | None:
    """Where the other nodes' consoles link to this one: its listening address, or the host's
    name when it listens on every interface (127.0.0.1 would point at the reader's own host)."""
    port = getattr(node, "port", None)
    if port is None:
        return None
    host = node.settings.server.host
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/debug/"
