"""This node's side of the cluster: what other nodes say (through the zone relay), this node's
roster every ``cluster.roster_interval_s``, and the ``tilehall_cluster_peers`` gauge.

The peer count is the zone's answer to a question asked at each roster tick (its ``describe()``,
computed on its own turn) and kept here, so the /metrics scrape reads a number the node owns
and never waits for the zone; it lags the zone by at most one roster interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pykka
from tornado.ioloop import IOLoop, PeriodicCallback

from actors.base import tell_if_alive
from actors.messages import FromPeer, RosterTick
from config.settings import Settings
from storage.relay.zone_relay import ZoneRelay
from transport.metrics import Metrics

log = logging.getLogger(__name__)


class Cluster:
    """The relay to the other nodes of this map, and the roster timer; ``start(zone)`` once the
    zone runs, ``stop()`` when the node drains, ``close()`` with the storage."""

    def __init__(
        self, settings: Settings, redis_client: Any, map_id: str, node_id: str, metrics: Metrics,
        on_lease_taken: Callable[[str], None], on_park: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_lease_taken = on_lease_taken
        self.on_park = on_park  # another node asks for one of our sessions (the directory's)
        self.zone: pykka.ActorRef | None = None
        self._zone_proxy: Any = None
        self.peers = 0  # other nodes the zone knew at its last answer
        self._timer: PeriodicCallback | None = None
        self.relay = ZoneRelay(
            redis_client, settings.redis.key_prefix, map_id, node_id, self._from_peer,
            on_dropped=metrics.cluster_dropped.inc,
        )
        metrics.cluster_peers.set_function(lambda: self.peers)

    async def start(self, zone: pykka.ActorRef) -> None:
        """Subscribe (off the IOLoop), start the roster timer and announce this node now."""
        self.zone, self._zone_proxy = zone, zone.proxy()
        if not await IOLoop.current().run_in_executor(None, self.relay.start):
            log.warning("zone relay: Redis not reachable yet; other nodes will be heard once it is")
        self._timer = PeriodicCallback(self.roster_tick, self.settings.cluster.roster_interval_s * 1000)
        self._timer.start()
        self.roster_tick()

    def publish(self, message: dict[str, Any]) -> None:
        """Send ``message`` to the other nodes (best effort, never blocks)."""
        self.relay.publish(message)

    def _from_peer(self, message: dict[str, Any]) -> None:
        """A message from another node (the relay's reader thread): a lease it took from one of
        our sessions is checked at once, a request to park a session goes to the directory;
        everything else is the zone's."""
        if message.get("t") == "lease_taken":
            self.on_lease_taken(str(message.get("user_id")))
            return
        if message.get("t") == "park":
            if self.on_park is not None:
                self.on_park(message)
            return
        if self.zone is not None:
            tell_if_alive(self.zone, FromPeer(message))  # dead: shutting down

    def roster_tick(self) -> None:
        """Tell the zone to send its roster; ask it how many peers it knows (IOLoop thread)."""
        if self.zone is not None and tell_if_alive(self.zone, RosterTick()):
            IOLoop.current().spawn_callback(self._count_peers)

    async def _count_peers(self) -> None:
        try:
            detail = await asyncio.wait_for(self._zone_proxy.describe(), self.settings.cluster.roster_interval_s)
        except Exception as exc:  # stopped or busy: keep the last count
            log.debug("zone peer count not read: %r", exc)
            return
        self.peers = len(detail.get("peers", ()))

    def relay_alive(self) -> bool:
        """True while the relay's writer and reader threads run (or were never started)."""
        # merged with the storage branch: ZoneRelay could expose this itself.
        threads = getattr(self.relay, "_threads", [])
        return all(t.is_alive() for t in threads)

    def stop(self) -> None:
        """Say goodbye (the other nodes drop our characters at once) and stop the roster timer."""
        self.relay.publish({"t": "bye"})
        if self._timer is not None:
            self._timer.stop()

    def close(self) -> None:
        """Close the relay (blocking: from an executor)."""
        self.relay.close()
