"""One tilehall node: the process-wide composition root.

Starts (in order) the embedded servers when no URLs are configured, migrations, the PostgreSQL
pool and Redis client, the actors, then the HTTP/WebSocket listener; stops in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pykka
import redis
import tornado.httpserver
import tornado.netutil
from tornado.ioloop import IOLoop, PeriodicCallback

from actors.base import configure_runtime
from actors.character import CharacterActor
from actors.messages import Claim, Flush, FromPeer, Kick, Resume, RosterTick, StartSession
from actors.runtime import Dispatcher
from actors.session import SessionActor
from actors.storage_actor import StorageActor
from actors.world_map import load_map
from actors.zone import ZoneActor
from config.settings import Settings
from storage.embedded import EmbeddedServices, start_missing
from storage.postgres import db, migrate, partitions, retention
from storage.postgres.characters import load_character, load_or_create_character
from storage.redis.client import open_redis, redis_ready
from storage.redis.leases import LEASE_REFRESH_S, Holder, SessionLeases
from storage.redis.profile_cache import ProfileCache
from storage.redis.reconnect_tokens import ReconnectTokens
from storage.relay.zone_relay import ZoneRelay
from transport.auth import Identity, TokenVerifier
from transport.codec import CODEC
from transport.frames import CloseCode
from transport.metrics import Metrics

log = logging.getLogger(__name__)
CLAIM_TIMEOUT_S = 5.0  # a character actor answers a Claim within this, or the login fails


class Node:
    """Everything one server process owns; ``await start()`` then ``await stop()``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node_id = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.services: EmbeddedServices | None = None
        self.pool = None
        self.redis = None
        self.http_server: tornado.httpserver.HTTPServer | None = None
        self.port: int | None = None
        self._maintenance: PeriodicCallback | None = None
        self._liveness: PeriodicCallback | None = None
        self._lease_timer: PeriodicCallback | None = None
        self._roster_timer: PeriodicCallback | None = None
        self.relay: ZoneRelay | None = None
        self.stopping = False
        self.metrics = Metrics(self.session_statuses)
        self.verifier = TokenVerifier(settings)
        self.world = load_map(settings.game.map)
        self.loop: IOLoop | None = None
        self.sockets: set[Any] = set()
        self.sessions: dict[str, pykka.ActorRef] = {}  # session_id → ref (IOLoop thread only)
        self.session_of_user: dict[str, str] = {}  # user_id → session_id
        self.characters: dict[str, pykka.ActorRef] = {}  # character_id → ref
        self.storage = None
        self.zone = None
        self.tokens: ReconnectTokens | None = None
        self.leases: SessionLeases | None = None
        self.profiles: ProfileCache | None = None

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
        self.loop = IOLoop.current()
        await self.loop.run_in_executor(None, self._start_storage)
        r = self.settings.runtime
        configure_runtime(r.kind, r.pool_workers, r.messages_per_turn)
        self.storage = StorageActor.start(self.pool, self.settings, _StorageObserver(self))
        g = self.settings.game
        self.relay = ZoneRelay(
            self.redis, self.settings.redis.key_prefix, self.world.map_id, self.node_id, self._from_peer,
            on_dropped=self.metrics.cluster_dropped.inc,
        )
        self.zone = ZoneActor.start(
            self.world, g.view_radius, g.item_respawn_s, CODEC, self.relay, self.settings.cluster.peer_timeout_s
        )
        if not await self.loop.run_in_executor(None, self.relay.start):
            log.warning("zone relay: Redis not reachable yet; other nodes will be heard once it is")
        self.metrics.cluster_peers.set_function(self._peer_count)
        from transport.app import make_app  # import here: app imports the node's collaborators

        app = make_app(self)
        s = self.settings.server
        self.http_server = tornado.httpserver.HTTPServer(
            app,
            idle_connection_timeout=s.idle_connection_timeout_s,
            body_timeout=s.body_timeout_s,
            max_header_size=16 * 1024,
            max_body_size=64 * 1024,
        )
        sockets = tornado.netutil.bind_sockets(s.port, address=s.host, backlog=1024)
        self.port = sockets[0].getsockname()[1]
        self.http_server.add_sockets(sockets)
        self._maintenance = PeriodicCallback(
            self._run_maintenance, self.settings.storage.maintenance_interval_s * 1000
        )
        self._maintenance.start()
        self._liveness = PeriodicCallback(self._check_liveness, 1000)
        self._liveness.start()
        self._lease_timer = PeriodicCallback(self.refresh_leases, LEASE_REFRESH_S * 1000)
        self._lease_timer.start()
        self._roster_timer = PeriodicCallback(self._roster_tick, self.settings.cluster.roster_interval_s * 1000)
        self._roster_timer.start()
        self._roster_tick()  # announce this node to the others now
        log.info("tilehall %s listening on %s", self.settings.mode, self.url)

    def _from_peer(self, message: dict[str, Any]) -> None:
        """A message from another node (the relay's reader thread): a lease it took from one of
        our sessions is checked at once; everything else is the zone's."""
        if message.get("t") == "lease_taken":
            user_id = str(message.get("user_id"))
            self.loop.add_callback(self.refresh_leases, user_id)
            return
        zone = self.zone
        if zone is not None:
            try:
                zone.tell(FromPeer(message))
            except pykka.ActorDeadError:
                pass  # shutting down

    def _peer_count(self) -> int:
        """Other nodes the zone knows (read without waiting for the actor, at scrape time)."""
        from actors.base import find_actor

        zone = find_actor(self.zone.actor_urn) if self.zone is not None else None
        return len(getattr(zone, "peers", ()))

    def _roster_tick(self) -> None:
        if self.zone is not None:
            try:
                self.zone.tell(RosterTick())
            except pykka.ActorDeadError:
                pass

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
        rs = self.settings.redis
        self.profiles = ProfileCache(
            self.redis, rs.key_prefix, staleness_ms=rs.cache_staleness_ms, ttl_s=rs.cache_ttl_s,
            metrics=self.metrics,
        )
        self.profiles.start()

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
        if self.stopping:
            problems.append("shutting down")
        if self.pool is None or (reason := db.database_ready(self.pool)):
            problems.append(reason or "postgresql not started")
        if self.redis is None or (reason := redis_ready(self.redis)):
            problems.append(reason or "redis not started")
        return problems

    # ---------------------------------------------------------------- operators' view

    def session_statuses(self) -> list[str]:
        """The status of every session of this node, read without waiting for any actor (the
        /metrics scrape calls it on the IOLoop thread, which owns ``sessions``)."""
        from actors.base import find_actor

        out = []
        for ref in list(self.sessions.values()):
            actor = find_actor(ref.actor_urn)
            status = getattr(actor, "status", None)
            if status is not None:
                out.append(status)
        return out

    # ---------------------------------------------------------------- profiles (any thread)

    def profile_source(self, character_id: str) -> dict[str, Any] | None:
        """The source of truth for a character's public view: its live actor's committed
        state when it is in play (read without waiting for the actor), else PostgreSQL
        (blocking: call from an executor). None for an unknown character."""
        from actors.base import find_actor

        ref = self.characters.get(character_id)
        actor = find_actor(ref.actor_urn) if ref is not None else None
        if actor is not None and not actor.actor_stopped.is_set():
            s = actor.durable  # committed state, rebound (never mutated) by the actor's thread
            return {"character_id": character_id, "display_name": actor.display_name,
                    "x": s.x, "y": s.y, "health": s.health, "max_health": s.max_health}
        record = self._reload(character_id)
        if record is None:
            return None
        return {"character_id": record.character_id, "display_name": record.display_name,
                "x": record.x, "y": record.y, "health": record.health, "max_health": record.max_health}

    def read_profile(self, character_id: str) -> Any:
        """Read-through lookup of a public profile (blocking: call from an executor)."""
        return self.profiles.read(character_id, self.profile_source)

    # ---------------------------------------------------------------- sessions (IOLoop thread)

    def register_socket(self, socket: Any) -> bool:
        """Count an open socket; False when the server is at its connection cap."""
        if self.stopping or len(self.sockets) >= self.settings.server.max_connections:
            return False
        self.sockets.add(socket)
        self.metrics.open_sockets.set(len(self.sockets))
        return True

    def unregister_socket(self, socket: Any) -> None:
        """Forget a closed socket."""
        self.sockets.discard(socket)
        self.metrics.open_sockets.set(len(self.sockets))

    def _check_liveness(self) -> None:
        now, wall = time.monotonic(), time.time()
        for sock in list(self.sockets):
            sock.check_liveness(now, wall)

    async def open_session(
        self, identity: Identity, character_id: str | None, connection: Any, protocol_version: str
    ) -> pykka.ActorRef:
        """Load (or create) the character, replace the user's older session, start a new one."""
        session_id = str(uuid.uuid4())
        record, token, expires_at = await self.loop.run_in_executor(
            None, self._prepare_session, identity, character_id, session_id
        )
        old = self.sessions.get(self.session_of_user.get(identity.user_id, ""))
        if old is not None:
            # Wait (bounded, without blocking the IOLoop) until the old session handled the
            # kick: every action it received before has then been handed to the character,
            # so the new session's welcome counts them in last_action_seq.
            await _ask_quietly(old, Kick("session_replaced", int(CloseCode.SESSION_REPLACED),
                                         "you logged in elsewhere"), timeout=2.0)
        # A session of this user on another node is told by the "lease_taken" message that
        # _prepare_session published; if that is lost, at its node's next lease refresh.
        character = self.characters.get(record.character_id)
        if character is not None and not await _claim(character):
            # It stopped since (or is stopping): its last commits are in the database now.
            record = await self.loop.run_in_executor(None, self._reload, record.character_id)
            character = None
        if character is None:
            character = CharacterActor.start(
                record, self.world, self.settings, self.storage, self.zone, CODEC, self._character_stopped
            )
            self.characters[record.character_id] = character
        session = SessionActor.start(
            session_id=session_id,
            user_id=identity.user_id,
            character_id=record.character_id,
            character=character,
            zone=self.zone,
            storage=self.storage,
            connection=connection,
            codec=CODEC,
            hooks=_SessionHooks(self),
            settings=self.settings,
            reconnect_token=token,
            reconnect_expires_at=expires_at,
            protocol_version=protocol_version,
            node_id=self.node_id,
        )
        self.sessions[session_id] = session
        self.session_of_user[identity.user_id] = session_id
        session.tell(StartSession())
        return session

    def _prepare_session(self, identity: Identity, character_id: str | None, session_id: str) -> tuple:
        """Blocking: the character row (PostgreSQL, required), then the reconnect token and the
        session lease (Redis, best effort: with Redis down the login still works, the welcome
        carries an empty reconnect token and no lease is held)."""
        with self.pool.connection() as conn:
            record, _ = load_or_create_character(
                conn, identity.user_id, identity.display_name, character_id, self.world.spawn_for,
                self.settings.game.max_health,
            )
        try:
            token, expires_at = self.tokens.issue(session_id, identity.user_id, record.last_action_seq)
        except redis.RedisError as exc:
            log.warning("no reconnect token (redis: %s); the session cannot be resumed", exc,
                        extra={"user_id": identity.user_id})
            token, expires_at = "", time.time()
        try:
            previous = self.leases.acquire(identity.user_id, Holder(self.node_id, session_id))
            if previous is not None and previous.node_id != self.node_id and self.relay is not None:
                # Tell that node now rather than at its next lease refresh (that stays the fallback).
                self.relay.publish({"t": "lease_taken", "user_id": identity.user_id})
        except redis.RedisError as exc:
            log.warning("session lease not taken (redis: %s)", exc, extra={"user_id": identity.user_id})
        return record, token, expires_at

    def _reload(self, character_id: str) -> Any:
        with self.pool.connection() as conn:
            return load_character(conn, character_id)

    async def resume_session(
        self, identity: Identity, reconnect_token: str, connection: Any, last_event_seq: int
    ) -> pykka.ActorRef | None:
        """The session a valid reconnect token resumes (None: invalid, used, expired, not yours)."""
        grant = await self.loop.run_in_executor(None, self.tokens.consume, reconnect_token)
        if grant is None or grant.user_id != identity.user_id:
            return None
        session = self.sessions.get(grant.session_id)
        if session is None:  # ended, or a session of another node (resume is per node)
            return None
        token, expires_at = await self.loop.run_in_executor(
            None, self.tokens.issue, grant.session_id, identity.user_id, grant.last_sequence_number
        )
        try:
            session.tell(Resume(connection, last_event_seq, token, expires_at))
        except pykka.ActorDeadError:  # it ended while we were talking to Redis
            return None
        return session

    async def _acks_delivered(self, timeout: float) -> None:
        """Wait (bounded) until no session holds an action whose answer is still on its way."""
        from actors.base import find_actor

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            waiting = 0
            for ref in list(self.sessions.values()):
                actor = find_actor(ref.actor_urn)
                # An action still in the session's inbox is not pending yet.
                waiting += len(actor.pending) + actor.actor_snapshot()["inbox_depth"] if actor is not None else 0
            if not waiting:
                return
            await asyncio.sleep(0.01)

    def _character_stopped(self, character_id: str, ref: pykka.ActorRef) -> None:
        """From a character actor's thread: forget it (on the IOLoop)."""
        def forget() -> None:
            if self.characters.get(character_id) is ref:
                del self.characters[character_id]
        self.loop.add_callback(forget)

    def session_ended(self, session_id: str, user_id: str) -> None:
        """From a session actor's thread: forget it and release its lease (on the IOLoop)."""
        def forget() -> None:
            self.sessions.pop(session_id, None)
            if self.session_of_user.get(user_id) == session_id:
                del self.session_of_user[user_id]
            self.loop.run_in_executor(None, self._release_lease, user_id, session_id)
        self.loop.add_callback(forget)

    def _release_lease(self, user_id: str, session_id: str) -> None:
        try:
            self.leases.release(user_id, Holder(self.node_id, session_id))
        except redis.RedisError as exc:
            log.warning("session lease not released (redis: %s); it expires by itself", exc)

    async def refresh_leases(self, user_id: str | None = None) -> int:
        """Refresh the lease of every session of this node (or of ``user_id``'s only); a
        session whose lease another node took (a newer login there) is kicked with
        ``session_replaced``. Returns how many."""
        held = [
            (u, s) for u, s in self.session_of_user.items()
            if s in self.sessions and (user_id is None or u == user_id)
        ]
        if not held:
            return 0
        lost = await self.loop.run_in_executor(None, self._refresh_leases, held)
        for _user, session_id in lost:
            ref = self.sessions.get(session_id)
            if ref is not None:
                ref.tell(Kick("session_replaced", int(CloseCode.SESSION_REPLACED), "you logged in elsewhere"))
        return len(lost)

    def _refresh_leases(self, held: list[tuple[str, str]]) -> list[tuple[str, str]]:
        try:
            kept = self.leases.refresh_many([(u, Holder(self.node_id, s)) for u, s in held])
        except redis.RedisError as exc:
            log.warning("session leases not refreshed (redis: %s)", exc)
            return []
        return [pair for pair, ok in zip(held, kept, strict=True) if not ok]

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

    async def stop(self) -> None:
        """Graceful: stop accepting, flush storage (acks for what committed), close sockets
        with 1001, stop every actor, then release storage and embedded servers."""
        self.stopping = True
        if self.relay is not None:
            self.relay.publish({"t": "bye"})  # the other nodes drop our characters at once
        for timer in (self._maintenance, self._liveness, self._lease_timer, self._roster_timer):
            if timer:
                timer.stop()
        if self.http_server:
            self.http_server.stop()
        try:
            # Not alive: another node of this process (tests) already stopped every actor.
            if self.storage is not None and self.storage.is_alive():
                await _ask(self.storage, Flush(), timeout=10)
                await self._acks_delivered(timeout=2.0)
            for sock in list(self.sockets):
                sock.fail(CloseCode.GOING_AWAY, "shutdown", "the server is shutting down; reconnect shortly")
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

    def _stop_storage(self) -> None:
        if self.relay is not None:
            self.relay.close()
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


async def _ask(ref: pykka.ActorRef, message: Any, timeout: float) -> Any:
    """The actor's answer to ``message``, awaited without blocking the IOLoop. Raises
    ActorDeadError (it had stopped or stops first), TimeoutError, or what the handler raised."""
    future = ref.ask(message, block=False)
    return await asyncio.wait_for(asyncio.wrap_future(_as_concurrent(future)), timeout)


async def _ask_quietly(ref: pykka.ActorRef, message: Any, timeout: float) -> None:
    """Tell ``message`` and wait until the actor handled it; a dead, crashing or slow actor
    ends the wait (at most ``timeout`` seconds) without an error."""
    try:
        await _ask(ref, message, timeout)
    except Exception as exc:
        log.debug("%s not confirmed by %s: %s", type(message).__name__, ref, exc)


async def _claim(character: pykka.ActorRef) -> bool:
    """Ask a character actor to wait for the session about to attach: True once it promised,
    False when it had stopped. A character too busy to answer within CLAIM_TIMEOUT_S fails the
    login (TimeoutError) rather than risk a second actor writing the same character."""
    try:
        return bool(await _ask(character, Claim(), CLAIM_TIMEOUT_S))
    except pykka.ActorDeadError:
        return False


def _as_concurrent(future: Any) -> Any:
    """A concurrent.futures.Future resolved by a Pykka future's callback (never blocks)."""
    import concurrent.futures

    out: concurrent.futures.Future = concurrent.futures.Future()

    def done(f: Any) -> None:
        try:
            out.set_result(f.get())
        except Exception as exc:
            out.set_exception(exc)

    future.add_done_callback(done)
    return out


class _SessionHooks:
    """Session events → metrics and the node's registry (any thread). The session gauges are
    not kept here: /metrics counts the live sessions' statuses when it is scraped."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.metrics = node.metrics

    def session_ended(self, session_id: str, user_id: str) -> None:
        """The session is over: the node forgets it (its status leaves the gauges with it)."""
        self.node.session_ended(session_id, user_id)

    def action_answered(self, latency_s: float, acked: bool, code: str | None) -> None:
        self.metrics.action_latency.observe(latency_s)
        if acked:
            self.metrics.acks.inc()
        else:
            self.metrics.rejects.labels(code or "unknown").inc()

    def snapshot_forced(self) -> None:
        self.metrics.state_refresh_forced.inc()


class _StorageObserver:
    """Batch outcomes → metrics and the profile cache's write-through (called on the
    StorageActor's thread; never blocks it: the cache writes on a thread of its own)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.metrics = node.metrics

    def on_batch(self, size: int, seconds: float, committed: list) -> None:
        """Observe one group commit; queue the committed works' profile views for the cache."""
        self.metrics.batch_size.observe(size)
        self.metrics.commit_latency.observe(seconds)
        cache = self.node.profiles
        if cache is not None and committed:
            cache.submit(w.cache_view for w in committed)
