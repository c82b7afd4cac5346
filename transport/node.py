"""One tilehall node: the process-wide composition root.

Starts (in order) the embedded servers when no URLs are configured, migrations, the PostgreSQL
pool and Redis client, the actors, the session directory and the cluster link, then the
HTTP/WebSocket listener and the node's timers; stops in reverse order. Who is logged in, and
how one gets in, is :mod:`transport.sessions`; what other nodes say is :mod:`transport.cluster`.

What operators read at scrape time never waits for an actor and never touches one: the session
gauges count what the sessions publish (:meth:`SessionDirectory.session_statuses`), the peer
gauge is a number :class:`~transport.cluster.Cluster` keeps from the zone's last answer, and the
profile API asks a live character for its committed view (off the IOLoop).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pykka
from tornado.ioloop import IOLoop, PeriodicCallback

from actors.base import configure_runtime, tell_if_alive
from actors.messages import Flush, Kick
from actors.runtime import Dispatcher, ask_async
from actors.storage_actor import StorageActor
from actors.vocabulary import CloseCode, ErrorCode, KickReason
from actors.world_map import load_map
from actors.zone import ZoneActor
from config.listen_guard import remote_dev_refusal
from config.settings import Settings, SettingsError
from storage.embedded import EmbeddedServices, start_missing
from storage.postgres import db, migrate, partitions, retention
from storage.redis.client import open_redis, redis_ready
from storage.redis.leases import LEASE_REFRESH_S, SessionLeases
from storage.redis.parked_sessions import ParkedSessions
from storage.redis.profile_cache import ProfileCache
from storage.redis.reconnect_tokens import ReconnectTokens
from transport.app import make_app
from transport.auth import TokenVerifier
from transport.cluster import Cluster
from transport.codec import CODEC
from transport.console_summary import NodeConsole
from transport.http_server import CappedHTTPServer, listen
from transport.liveness import LivenessWheel
from transport.login_limit import LoginGate
from transport.metrics import Metrics
from transport.sessions import SessionDirectory
from transport.worker_role import WorkerRole, node_name

log = logging.getLogger(__name__)


class Node:
    """Everything one server process owns; ``await start()`` then ``await stop()``."""

    def __init__(self, settings: Settings, role: WorkerRole | None = None) -> None:
        self.settings, self.role = settings, role  # role: one worker of ``serve --workers N``
        self.node_id = f"{node_name(role)}-{uuid.uuid4().hex[:8]}"
        self.services: EmbeddedServices | None = None
        self.pool = None
        self.redis = None
        self.http_server: CappedHTTPServer | None = None
        self.port: int | None = None
        self._maintenance: PeriodicCallback | None = None
        self._liveness: PeriodicCallback | None = None
        self.liveness = LivenessWheel()  # the sockets' deadlines, swept every second
        self._lease_timer: PeriodicCallback | None = None
        self.cluster: Cluster | None = None
        self.directory: SessionDirectory | None = None
        self.stopping = False
        self.draining = False  # drain() began: unready, no new session, sessions move away
        self.stop_requested = asyncio.Event()  # POST /admin/drain: the process should exit
        self.metrics = Metrics(self._session_statuses)
        self.console = NodeConsole(self)  # the operators' console: this node's summary, published
        self.verifier = TokenVerifier(settings)
        self.login_gate = LoginGate(settings)
        self.world = load_map(settings.game.map)
        self.loop: IOLoop | None = None
        self.sockets: set[Any] = set()
        self.storage: pykka.ActorRef | None = None
        self.zone: pykka.ActorRef | None = None
        self.tokens: ReconnectTokens | None = None
        self.parked: ParkedSessions | None = None
        self.leases: SessionLeases | None = None
        self.profiles: ProfileCache | None = None
        self.broken: list[str] = []  # shared parts that died: unready for good (IOLoop thread)
        self.storage_failing_since: float | None = None  # the StorageActor cannot commit since

    @property
    def url(self) -> str:
        """The URL a person opens in a browser."""
        host = self.settings.server.host
        shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        return f"http://{shown}:{self.port}/"

    @property
    def database_url(self) -> str:
        assert self.services and self.services.database_url
        return self.services.database_url

    async def start(self) -> None:
        """Bring up storage, actors and the listener. Blocking setup runs off the IOLoop."""
        if refusal := remote_dev_refusal(self.settings):
            raise SettingsError(refusal)
        self.loop = IOLoop.current()
        await self.loop.run_in_executor(None, self._start_storage)
        r = self.settings.runtime
        configure_runtime(r.kind, r.pool_workers, r.messages_per_turn)
        self.storage = StorageActor.start(self.pool, self.settings, _StorageObserver(self))
        g = self.settings.game
        self.cluster = Cluster(
            self.settings, self.redis, self.world.map_id, self.node_id, self.metrics, self._lease_taken,
            self._park_requested,
        )
        self.zone = ZoneActor.start(
            self.world, g.view_radius, g.item_respawn_s, CODEC, self.cluster.relay, self.settings.cluster.peer_timeout_s,
            on_died=self._zone_died,
        )
        self.directory = SessionDirectory(
            settings=self.settings, node_id=self.node_id, world=self.world, metrics=self.metrics,
            loop=self.loop, pool=self.pool, tokens=self.tokens, leases=self.leases, storage=self.storage,
            zone=self.zone, publish=self.cluster.publish, parked=self.parked,
        )
        await self.cluster.start(self.zone)  # subscribes, then announces this node to the others
        self.http_server, self.port = listen(make_app(self), self.settings, self.role)
        self._maintenance = PeriodicCallback(
            self._run_maintenance, self.settings.storage.maintenance_interval_s * 1000
        )
        self._maintenance.start()
        self._liveness = PeriodicCallback(self._check_liveness, 1000)
        self._liveness.start()
        self._lease_timer = PeriodicCallback(self.directory.refresh_leases, LEASE_REFRESH_S * 1000)
        self._lease_timer.start()
        self.console.start()
        log.info("tilehall %s listening on %s", self.settings.mode, self.url)

    def _start_storage(self) -> None:
        self.services = start_missing(
            self.settings.database_url, self.settings.redis_url, Path(self.settings.var_dir)
        )
        applied = migrate.migrate(self.database_url)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        self.pool = db.open_pool(self.settings, self.database_url)
        self.pool.wait(timeout=10)
        with self.pool.connection() as conn:
            db.check_durability(conn, allow_unsafe=self.settings.storage.allow_unsafe_durability)
            partitions.ensure_partitions(conn, days_ahead=self.settings.storage.partitions_ahead_days)
        self.redis = open_redis(self.settings, self.services.redis_url)
        self.tokens = ReconnectTokens(
            self.redis, self.settings.redis.key_prefix, self.settings.session.reconnect_token_ttl_s
        )
        self.leases = SessionLeases(self.redis, self.settings.redis.key_prefix)
        self.parked = ParkedSessions(
            self.redis, self.settings.redis.key_prefix, self.settings.session.reconnect_window_s
        )
        rs = self.settings.redis
        self.profiles = ProfileCache(
            self.redis, rs.key_prefix, staleness_ms=rs.cache_staleness_ms, ttl_s=rs.cache_ttl_s,
            metrics=self.metrics,
        )
        self.profiles.start()

    def _lease_taken(self, user_id: str) -> None:
        """Another node took a lease of ``user_id`` (the relay's thread)."""
        if self.directory is not None:
            self.directory.lease_taken(user_id)

    def _park_requested(self, message: dict[str, Any]) -> None:
        """Another node asks us to park one of our sessions (the relay's thread)."""
        if self.directory is not None:
            self.directory.handover.park_requested(message)

    def _session_statuses(self) -> list[str]:
        return self.directory.session_statuses() if self.directory is not None else []

    async def _run_maintenance(self) -> None:
        await IOLoop.current().run_in_executor(None, self.maintenance)

    def maintenance(self) -> None:
        """Daily partitions ahead of time, then retention (blocking; runs in an executor thread)."""
        try:
            with self.pool.connection() as conn:
                created = partitions.ensure_partitions(
                    conn, days_ahead=self.settings.storage.partitions_ahead_days
                )
            if created:
                log.info("created partitions: %s", ", ".join(created))
            report = retention.retention_job(self.pool, self.settings)
            if report.partitions:
                log.info("retention: %s", report.summary())
        except Exception:
            log.exception("maintenance failed; will retry at the next interval")

    def readiness_problems(self) -> list[str]:
        """Reasons this node cannot serve players now (blocking; call from an executor)."""
        problems = []
        if self.draining:
            problems.append("draining")
        if self.stopping:
            problems.append("shutting down")
        problems.extend(self.broken)
        problems.extend(f"{part} not alive" for part in self.dead_shared_parts()
                        if f"{part} died" not in self.broken)
        if (since := self.storage_failing_since) is not None:
            problems.append(f"storage cannot commit (failing for {max(0.0, time.time() - since):.1f} s)")
        if self.pool is None or (reason := db.database_ready(self.pool)):
            problems.append(reason or "postgresql not started")
        if self.redis is None or (reason := redis_ready(self.redis)):
            problems.append(reason or "redis not started")
        return problems

    # ---------------------------------------------------------------- profiles (any thread)

    def read_profile(self, character_id: str) -> Any:
        """Read-through lookup of a public profile (blocking: call from an executor)."""
        return self.profiles.read(character_id, self.directory.profile_source)

    # ---------------------------------------------------------------- sockets (IOLoop thread)

    def register_socket(self, socket: Any) -> bool:
        """Count an open socket; False when the server is at its connection cap."""
        if self.stopping or len(self.sockets) >= self.settings.server.max_connections:
            return False
        self.sockets.add(socket)
        self.liveness.watch(socket, time.monotonic())
        self.metrics.open_sockets.set(len(self.sockets))
        return True

    def unregister_socket(self, socket: Any) -> None:
        """Forget a closed socket."""
        self.sockets.discard(socket)
        self.liveness.forget(socket)
        self.metrics.open_sockets.set(len(self.sockets))

    def _check_liveness(self) -> None:
        self.supervise()
        self.liveness.sweep(time.monotonic(), time.time())

    # ---------------------------------------------------------------- supervision

    def dead_shared_parts(self) -> list[str]:
        """The shared parts (StorageActor, ZoneActor, the relay's threads) not alive now (any
        thread: reads only ``is_alive()`` flags, never waits for an actor)."""
        dead = []
        if self.storage is not None and not self.storage.is_alive():
            dead.append("storage actor")
        if self.zone is not None and not self.zone.is_alive():
            dead.append("zone actor")
        if self.cluster is not None and not self.cluster.relay_alive():
            dead.append("zone relay threads")
        return dead

    def supervise(self) -> None:
        """The watchdog (node timer, IOLoop thread): a shared part that died without telling
        (no ``on_failure`` callback reached us) is found here within a second."""
        if self.stopping:
            return
        for part in self.dead_shared_parts():
            self._declare_broken(part, "found not alive")

    def shared_part_died(self, part: str, exc: BaseException | None) -> None:
        """A shared actor reports its own death (any thread): the node turns unready for good."""
        if self.loop is not None:
            self.loop.add_callback(self._declare_broken, part, repr(exc))

    def _zone_died(self, exc: BaseException | None) -> None:
        """The ZoneActor's ``on_died`` callback (any thread); the watchdog is the fallback."""
        self.shared_part_died("zone actor", exc)

    def _declare_broken(self, part: str, detail: str) -> None:
        """Mark the node unready for good and end every session with 1011 (IOLoop thread):
        without its shared actors no action of this node can be stored or seen."""
        problem = f"{part} died"
        if self.stopping or problem in self.broken:
            return
        self.broken.append(problem)
        sessions = dict(self.directory.sessions) if self.directory is not None else {}
        log.error(
            "%s (%s): node %s is unready for good; closing %d sessions with 1011 (error internal:"
            " the players are told to reconnect)", problem, detail, self.node_id, len(sessions),
            extra={"node_id": self.node_id, "part": part},
        )
        message = "the server lost an internal component; reconnect to continue"
        kick = Kick(ErrorCode.INTERNAL, int(CloseCode.INTERNAL), message, kicked=False)
        for ref in sessions.values():
            tell_if_alive(ref, kick)
        for sock in list(self.sockets):
            if sock.session is None or not sock.session.is_alive():
                sock.fail(CloseCode.INTERNAL, ErrorCode.INTERNAL, message)

    def drop_all_sockets(self) -> int:
        """Abort every player socket without a logout (tests of reconnect); returns how many."""
        dropped = 0
        for sock in list(self.sockets):
            stream = sock.ws_connection.stream if sock.ws_connection else None
            if stream is not None:
                stream.close()
                dropped += 1
        return dropped

    # ---------------------------------------------------------------- shutdown

    async def drain(self) -> int:
        """Move every player away (IOLoop thread): unready at once (/readyz 503 "draining"), no
        new hello or resume here (1012), commits flushed, every session parked in Redis and its
        socket closed with ``kicked node_draining`` + 1012. The node keeps running (``stop()``
        follows). The flush and the parking wait at most ``server.shutdown_grace_s`` each.
        Returns how many sessions were parked; a second call returns 0 at once."""
        if self.draining or self.stopping:
            return 0
        self.draining = True
        log.info("draining node %s: unready; parking %d sessions", self.node_id,
                 len(self.directory.sessions) if self.directory else 0, extra={"node_id": self.node_id})
        grace = self.settings.server.shutdown_grace_s  # each step waits at most this long
        await self._settle(grace)
        parked = 0
        if self.directory is not None:
            parked = await self.directory.handover.park_all(grace)
        log.info("node %s drained: %d sessions parked", self.node_id, parked, extra={"node_id": self.node_id})
        return parked

    async def stop(self) -> None:
        """Graceful: stop accepting, flush storage (acks for what committed), close sockets
        with 1001, stop every actor, then release storage and embedded servers. The wait for
        storage and acks takes at most ``server.shutdown_grace_s``."""
        self.stopping = True
        if self.cluster is not None:
            self.cluster.stop()  # the other nodes drop our characters at once
        for timer in (self._maintenance, self._liveness, self._lease_timer, self.console):
            if timer:
                timer.stop()
        if self.http_server:
            self.http_server.stop()
        try:
            await self._settle(self.settings.server.shutdown_grace_s)
            for sock in list(self.sockets):
                sock.fail(CloseCode.GOING_AWAY, KickReason.SHUTDOWN, "the server is shutting down; reconnect shortly")
            if self.http_server:
                await asyncio.wait_for(self.http_server.close_all_connections(), timeout=5)
        except (TimeoutError, Exception) as exc:
            log.warning("graceful shutdown cut short: %r", exc)
        finally:
            # Whatever happened above, no actor, pool or embedded server outlives the node.
            await self.loop.run_in_executor(None, _stop_actors)
            self.verifier.close()
            await self.loop.run_in_executor(None, self._stop_storage)
        log.info("tilehall stopped")

    async def _settle(self, grace_s: float) -> None:
        """Wait at most ``grace_s`` for storage to commit what it holds and those acks to go out."""
        deadline = time.monotonic() + grace_s
        try:
            # Not alive: another node of this process (tests) already stopped every actor.
            if self.storage is not None and self.storage.is_alive():
                await ask_async(self.storage, Flush(), timeout=grace_s)
                if self.directory is not None:
                    await self.directory.acks_delivered(timeout=max(0.0, deadline - time.monotonic()))
        except Exception as exc:
            log.warning("shutdown: storage not settled within server.shutdown_grace_s (%g s): %r", grace_s, exc)

    def _stop_storage(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
        if self.profiles is not None:
            self.profiles.close()
        if self.redis is not None:
            self.redis.close()
        if self.pool is not None:
            self.pool.close()
        if self.services is not None:
            self.services.stop()


def _stop_actors() -> None:
    pykka.ActorRegistry.stop_all(block=True, timeout=10)
    Dispatcher.shutdown()


class _StorageObserver:
    """Batch outcomes → metrics and the profile cache's write-through (called on the
    StorageActor's thread; never blocks it: the cache writes on a thread of its own)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.metrics = node.metrics

    def on_commit_health(self, failing_since: float | None) -> None:
        """The StorageActor's commit health (its thread): the wall-clock time since which it
        cannot commit, or None once it commits again; /readyz says 503 while it is set."""
        if (failing_since is None) != (self.node.storage_failing_since is None):
            log.warning("storage commit health: %s", "committing again" if failing_since is None
                        else f"cannot commit since {failing_since:.3f}")
        self.node.storage_failing_since = failing_since

    def on_storage_died(self, exc: BaseException | None) -> None:
        """The StorageActor is dying (its thread): the node turns unready and closes its sessions."""
        self.node.shared_part_died("storage actor", exc)

    def on_batch(self, size: int, seconds: float, committed: list) -> None:
        """Observe one group commit; queue the committed works' profile views for the cache."""
        self.metrics.batch_size.observe(size)
        self.metrics.commit_latency.observe(seconds)
        cache = self.node.profiles
        if cache is not None and committed:
            cache.submit(w.cache_view for w in committed)
