"""Every Prometheus metric tilehall exports (DESIGN section 7), in one registry per node.

Counters are exposed with the ``_total`` suffix (prometheus-client adds it), latencies in
seconds. ``GET /metrics`` serves :attr:`Metrics.registry`; the names and what they count are
listed in docs/operations.md ("Metrics").
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from actors.base import live_actors
from actors.vocabulary import RejectCode
from config.version import SERVER_VERSION

# Sub-50 ms is the target on the action path: fine buckets there, a few coarse ones above.
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05,
                   0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SESSION_STATUSES = ("connecting", "active", "reconnecting", "terminating")
OPERATOR_ACTIONS = ("kick", "broadcast", "drain")


class ActorCollector(Collector):
    """``tilehall_actors{class}`` and ``tilehall_actor_inbox_depth{class}``, read at scrape time
    from the actor registry's lock-free snapshots (never waits for an actor)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One sample per actor class currently registered."""
        count: Tally[str] = Tally()
        depth: Tally[str] = Tally()
        for snap in live_actors():
            count[snap["class"]] += 1
            depth[snap["class"]] += snap["inbox_depth"] or 0
        actors = GaugeMetricFamily("tilehall_actors", "live actors in the registry, by class", labels=["class"])
        inbox = GaugeMetricFamily(
            "tilehall_actor_inbox_depth", "messages waiting in actors' inboxes, summed by class", labels=["class"])
        for cls in sorted(count):
            actors.add_metric([cls], count[cls])
            inbox.add_metric([cls], depth[cls])
        yield actors
        yield inbox

    def describe(self) -> list:
        """Nothing up front: the families depend on which actors are alive."""
        return []


class SessionCollector(Collector):
    """``tilehall_active_sessions`` and ``tilehall_sessions{status}``, counted at scrape time from
    the node's live sessions (``statuses()`` yields one status per session), so they can never
    drift from the truth the way incremented gauges can when a transition is missed."""

    def __init__(self, statuses: Callable[[], Iterable[str]]) -> None:
        self.statuses = statuses

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The two session gauges."""
        tally = Tally(self.statuses())
        active = GaugeMetricFamily("tilehall_active_sessions", "sessions in status active on this node")
        active.add_metric([], tally["active"])
        by_status = GaugeMetricFamily(
            "tilehall_sessions", "sessions on this node by status (removed sessions are not counted)",
            labels=["status"])
        for status in SESSION_STATUSES:
            by_status.add_metric([status], tally[status])
        yield active
        yield by_status

    def describe(self) -> list:
        """Nothing up front (the collector is registered after the registry is built)."""
        return []


class Metrics:
    """The node's metrics; ``registry`` is what /metrics exposes."""

    def __init__(self, session_statuses: Callable[[], Iterable[str]] = tuple) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        Info("tilehall_build", "the build serving this node (protocol version)", registry=r).info(
            {"version": SERVER_VERSION})
        self.connect_attempts = Counter(
            "tilehall_connect_attempts", "hello frames received (login attempts)", registry=r)
        self.connect_success = Counter(
            "tilehall_connect_success", "logins that reached welcome (token and version valid)", registry=r)
        self.reconnect_attempts = Counter(
            "tilehall_reconnect_attempts", "resume frames received", registry=r)
        self.reconnect_success = Counter(
            "tilehall_reconnect_success", "resumes answered with resumed", registry=r)
        self.version_reject = Counter(
            "tilehall_version_reject", "hello/resume refused for a protocol version mismatch (close 4000)",
            registry=r)
        self.state_refresh_forced = Counter(
            "tilehall_state_refresh_forced",
            "resumes that needed a full snapshot because the missed events were no longer buffered",
            registry=r)
        self.action_latency = Histogram(
            "tilehall_action_latency_seconds",
            "time from an action frame's arrival to its ack or reject being handed to the socket",
            buckets=LATENCY_BUCKETS, registry=r)
        self.rejects = Counter(
            "tilehall_action_rejects", "actions answered with reject, by reject code", ["code"], registry=r)
        self.acks = Counter("tilehall_action_acks", "actions acknowledged after their commit", registry=r)
        self.batch_size = Histogram(
            "tilehall_storage_batch_size", "works (actions and system events) per StorageActor transaction",
            buckets=BATCH_BUCKETS, registry=r)
        self.commit_latency = Histogram(
            "tilehall_storage_commit_seconds", "duration of one StorageActor group commit, retries included",
            buckets=LATENCY_BUCKETS, registry=r)
        self.cache_hit_ratio = Gauge(
            "tilehall_cache_hit_ratio",
            "profile cache lookups answered from a fresh Redis entry / all lookups, since start", registry=r)
        self.cache_lookups = Counter(
            "tilehall_cache_lookups",
            "profile cache lookups by result: hit (fresh entry served), miss (absent, stale or Redis down)",
            ["result"], registry=r)
        self.cache_writes = Counter(
            "tilehall_cache_writes", "profiles written to the Redis cache (write-through and refills)",
            registry=r)
        self.cache_errors = Counter(
            "tilehall_cache_errors", "Redis calls of the profile cache that failed (the cache was bypassed)",
            registry=r)
        self.cache_available = Gauge(
            "tilehall_cache_available",
            "1 while the profile cache uses Redis, 0 while its circuit breaker bypasses it", registry=r)
        self.reauths = Counter(
            "tilehall_reauths", "reauth frames by outcome: accepted (a fresh token of the same user) or refused",
            ["outcome"], registry=r)
        self.frames_in = Counter("tilehall_frames_in", "WebSocket frames received from clients", registry=r)
        self.frames_out = Counter("tilehall_frames_out", "WebSocket frames sent to clients", registry=r)
        self.open_sockets = Gauge("tilehall_open_websockets", "open WebSocket connections", registry=r)
        self.cluster_peers = Gauge(
            "tilehall_cluster_peers", "other nodes this node's zone has heard from within cluster.peer_timeout_s",
            registry=r)
        self.cluster_dropped = Counter(
            "tilehall_cluster_messages_dropped",
            "zone messages not published to the other nodes (Redis away or the queue full)", registry=r)
        self.operator_actions = Counter(
            "tilehall_operator_actions", "operator actions taken through the console or the admin API, by action",
            ["action"], registry=r)
        for action in OPERATOR_ACTIONS:
            self.operator_actions.labels(action)
        r.register(ActorCollector())
        r.register(SessionCollector(session_statuses))
        for code in RejectCode:
            self.rejects.labels(code)
        for outcome in ("accepted", "refused"):
            self.reauths.labels(outcome)
        for result in ("hit", "miss"):
            self.cache_lookups.labels(result)
        self.cache_available.set(1)
        self._cache_lock = threading.Lock()
        self._cache_hits = 0
        self._cache_lookups = 0

    def cache_lookup(self, hit: bool) -> None:
        """Count one profile lookup (any thread) and update the hit ratio."""
        self.cache_lookups.labels("hit" if hit else "miss").inc()
        with self._cache_lock:
            self._cache_lookups += 1
            self._cache_hits += hit
            self.cache_hit_ratio.set(self._cache_hits / self._cache_lookups)
