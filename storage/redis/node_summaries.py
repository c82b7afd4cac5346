"""Node summaries: what each node tells the operators' consoles of the cluster.

One Redis key per node, ``<prefix>node:<node_id>``, holding the node's latest summary as JSON
with a TTL a few times its publishing interval: a node that dies (or loses Redis) vanishes
from every console once its key expires; one that stops gracefully deletes its key at once.

Every call is blocking Redis I/O: run it off the IOLoop. Callers treat :class:`redis.RedisError`
as "the cluster view is unavailable now" (the node's own console still works).
"""

from __future__ import annotations

import json
from typing import Any

import redis


class NodeSummaries:
    """Publish this node's summary; list every node's."""

    def __init__(self, client: redis.Redis, key_prefix: str, ttl_s: float) -> None:
        self.client = client
        self.prefix = f"{key_prefix}node:"
        self.ttl_ms = max(1, int(ttl_s * 1000))

    def publish(self, node_id: str, summary: dict[str, Any]) -> None:
        """Write (or refresh) ``node_id``'s summary; it expires after the TTL unless refreshed."""
        self.client.set(self.prefix + node_id, json.dumps(summary, separators=(",", ":")), px=self.ttl_ms)

    def withdraw(self, node_id: str) -> None:
        """Remove ``node_id``'s summary (a graceful stop)."""
        self.client.delete(self.prefix + node_id)

    def all(self) -> list[dict[str, Any]]:
        """Every live node's summary, ordered by node id (unreadable entries are skipped)."""
        keys = sorted(self.client.scan_iter(match=self.prefix + "*", count=200))
        if not keys:
            return []
        out = []
        for raw in self.client.mget(keys):
            if raw is None:
                continue  # expired between the scan and the read
            try:
                summary = json.loads(raw)
            except ValueError:
                continue
            if isinstance(summary, dict):
                out.append(summary)
        return sorted(out, key=lambda s: str(s.get("node_id", "")))
