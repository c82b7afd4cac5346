"""The session directory: who is logged in on this node, and the rules of getting in.

:class:`SessionDirectory` owns login (:meth:`~SessionDirectory.open_session`), resume
(:meth:`~SessionDirectory.resume_session`), the takeover of a user's older session (here: a
``session_replaced`` kick; on another node: the ``lease_taken`` message and the lease refresh),
the claim of a character actor still in play, the Redis session leases, and the two registries
(sessions by id and by user, character actors by id).

Threads: the registries belong to the IOLoop thread. The actors' callbacks
(:meth:`~SessionDirectory.session_ended`, :meth:`~SessionDirectory.character_stopped`) and the
relay's :meth:`~SessionDirectory.lease_taken` may come from any thread and hop onto the IOLoop.
Blocking Redis and PostgreSQL calls run in executor threads, never on the IOLoop.

Nothing here reads an actor's private state: a session's status is what the actor publishes
in its introspection snapshot (:func:`actors.base.published_snapshot`), and what the directory
must know from an actor (a character's committed view, a session's unanswered actions) it
*asks* (:mod:`transport.asking`, or a Pykka proxy read answered on the actor's own turn).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pykka
import redis

from actors.base import published_snapshot, tell_if_alive
from actors.character import CharacterActor
from actors.messages import Claim, Kick, Resume, StartSession
from actors.runtime import ask_async
from actors.session import SessionActor
from actors.vocabulary import CloseCode, KickReason
from actors.world_map import WorldMap
from config.settings import Settings
from storage.postgres.characters import (
    PUBLIC_FIELDS,
    CharacterRecord,
    load_character,
    load_or_create_character,
    public_view,
    take_ownership,
)
from storage.redis.leases import Holder, SessionLeases
from storage.redis.parked_sessions import ParkedSessions
from storage.redis.reconnect_tokens import ReconnectTokens, TokenGrant
from transport.auth import Identity
from transport.codec import CODEC
from transport.handover import Handover
from transport.metrics import Metrics
from transport.session_hooks import SessionHooks

log = logging.getLogger(__name__)
CLAIM_TIMEOUT_S = 5.0  # a character actor answers a Claim within this, or the login fails
PROFILE_ASK_S = 2.0  # a live character answers a profile read within this, else PostgreSQL does
REPLACED = "you logged in elsewhere"


class SessionDirectory:
    """The sessions and character actors of one node, and login/resume/takeover/leases.

    Public interface: :meth:`open_session`, :meth:`resume_session`, :meth:`refresh_leases`,
    :meth:`lease_taken`, :meth:`session_ended`, :meth:`character_stopped`,
    :meth:`session_statuses`, :meth:`acks_delivered`,
    :meth:`profile_source`; the registries ``sessions``, ``session_of_user`` and ``characters``
    (read-only outside, IOLoop thread).
    """

    def __init__(
        self, *, settings: Settings, node_id: str, world: WorldMap, metrics: Metrics, loop: Any,
        pool: Any, tokens: ReconnectTokens, leases: SessionLeases, storage: pykka.ActorRef,
        zone: pykka.ActorRef, publish: Any, parked: ParkedSessions,
    ) -> None:
        self.settings = settings
        self.node_id = node_id
        self.world = world
        self.metrics = metrics
        self.loop = loop
        self.pool = pool
        self.tokens = tokens
        self.leases = leases
        self.storage = storage
        self.zone = zone
        self.publish = publish  # a message to the other nodes (the relay's publish), or None
        self.sessions: dict[str, pykka.ActorRef] = {}  # session_id → ref (IOLoop thread only)
        self.session_of_user: dict[str, str] = {}  # user_id → session_id
        self.characters: dict[str, pykka.ActorRef] = {}  # character_id → ref
        self._logins: dict[str, _LoginLock] = {}  # user_id → its login lock while in use
        self.handover = Handover(self, parked)  # sessions moving between nodes

    # ---------------------------------------------------------------- login and resume

    async def open_session(
        self, identity: Identity, character_id: str | None, connection: Any, protocol_version: str
    ) -> pykka.ActorRef:
        """Load (or create) the character, replace the user's older session, start a new one.

        Logins of one user are serialised on this node (one at a time per user_id), so two
        simultaneous hellos leave exactly one live session: the later one replaces the earlier
        (``kicked session_replaced``, 4009). Across nodes the Redis lease decides."""
        async with self._login_turn(identity.user_id):
            return await self._open_session(identity, character_id, connection, protocol_version)

    @contextlib.asynccontextmanager
    async def _login_turn(self, user_id: str) -> AsyncIterator[None]:
        """Hold ``user_id``'s login lock (IOLoop thread); the lock is dropped when unused."""
        entry = self._logins.get(user_id)
        if entry is None:
            entry = self._logins[user_id] = _LoginLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0 and self._logins.get(user_id) is entry:
                del self._logins[user_id]

    async def _open_session(
        self, identity: Identity, character_id: str | None, connection: Any, protocol_version: str
    ) -> pykka.ActorRef:
        session_id = str(uuid.uuid4())
        found, token, expires_at = await self.loop.run_in_executor(
            None, self._prepare_session, identity, character_id, session_id
        )
        cid = found.character_id
        old_id = await self.replace_older(identity.user_id)
        # A session of this user on another node is told by the "lease_taken" message that
        # _prepare_session published; if that is lost, at its node's next lease refresh.
        character = await self.character_for(identity.user_id, cid, session_id, old_id)
        return self.start_session(
            session_id=session_id, user_id=identity.user_id, character_id=cid, character=character,
            connection=connection, reconnect_token=token, reconnect_expires_at=expires_at,
            protocol_version=protocol_version,
        )

    async def replace_older(self, user_id: str) -> str | None:
        """Kick ``user_id``'s session on this node, if any (``session_replaced``); its id."""
        old_id = self.session_of_user.get(user_id)
        old = self.sessions.get(old_id or "")
        if old is not None:
            # Wait (bounded, without blocking the IOLoop) until the old session handled the
            # kick: every action it received before has then been handed to the character,
            # so the new session's welcome counts them in last_action_seq.
            await ask_quietly(old, _replaced(), timeout=2.0)
        return old_id

    async def character_for(self, user_id: str, cid: str, session_id: str, old_id: str | None) -> pykka.ActorRef:
        """The character actor the new session plays: the live one (claimed), else a new one
        started from :func:`take_ownership` (the epoch fences every older owner's writes)."""
        character = self.characters.get(cid)
        if character is not None and not await _claim(character):
            character = None  # it stopped since (or is stopping): its last commits have landed
        if character is None:
            # Only now, with no live actor left to reuse, take ownership: the row is read after
            # the old owner's last commit (never the row read above, which may predate it).
            record = await self.loop.run_in_executor(None, self._take_ownership, cid)
            if record is None:
                raise LookupError(f"character {cid} vanished during login")
            character = CharacterActor.start(
                record, self.world, self.settings, self.storage, self.zone, CODEC, self.character_stopped
            )
            self.characters[cid] = character
            epoch = getattr(record, "owner_epoch", None)
            log.info(
                "character ownership taken: user %s, character %s, session %s (replacing %s),"
                " node %s, epoch %s", user_id, cid, session_id, old_id, self.node_id, epoch,
                extra={"user_id": user_id, "character_id": cid, "session_id": session_id,
                       "old_session_id": old_id, "node_id": self.node_id, "owner_epoch": epoch},
            )
        elif old_id is not None:
            log.info(
                "session replaced: user %s, character %s, session %s replaces %s on node %s"
                " (the live character actor keeps its ownership)", user_id, cid, session_id, old_id,
                self.node_id, extra={"user_id": user_id, "character_id": cid, "session_id": session_id,
                                     "old_session_id": old_id, "node_id": self.node_id},
            )
        return character

    def start_session(self, **fields: Any) -> pykka.ActorRef:
        """Start and register a SessionActor (``fields``: its keyword arguments beyond the
        node's own), then tell it to begin (IOLoop thread)."""
        session = SessionActor.start(
            zone=self.zone, storage=self.storage, codec=CODEC, hooks=SessionHooks(self, self.metrics),
            settings=self.settings, node_id=self.node_id, **fields,
        )
        self.sessions[fields["session_id"]] = session
        self.session_of_user[fields["user_id"]] = fields["session_id"]
        session.tell(StartSession())
        return session

    def login_turn(self, user_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        """The login lock of ``user_id`` (IOLoop thread), for a session adopted from elsewhere."""
        return self._login_turn(user_id)

    def take_lease(self, user_id: str, session_id: str) -> None:
        """Blocking: take ``user_id``'s lease for ``session_id`` and tell the node it came from."""
        try:
            previous = self.leases.acquire(user_id, Holder(self.node_id, session_id))
            if previous is not None and previous.node_id != self.node_id and self.publish is not None:
                # Tell that node now rather than at its next lease refresh (that stays the fallback).
                self.publish({"t": "lease_taken", "user_id": user_id})
        except redis.RedisError as exc:
            log.warning("session lease not taken (redis: %s)", exc, extra={"user_id": user_id})

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
            token, expires_at = self.tokens.issue(
                session_id, identity.user_id, record.last_action_seq, record.character_id, self.node_id
            )
        except redis.RedisError as exc:
            log.warning("no reconnect token (redis: %s); the session cannot be resumed", exc,
                        extra={"user_id": identity.user_id})
            token, expires_at = "", time.time()
        self.take_lease(identity.user_id, session_id)
        return record, token, expires_at

    def _reload(self, character_id: str) -> Any:
        with self.pool.connection() as conn:
            return load_character(conn, character_id)

    def _take_ownership(self, character_id: str) -> CharacterRecord | None:
        """Blocking: take ownership of the character; the committed row the new actor starts from."""
        with self.pool.connection() as conn:
            record = take_ownership(conn, character_id)
            conn.commit()
        return record

    async def resume_session(
        self, identity: Identity, reconnect_token: str, connection: Any, last_event_seq: int
    ) -> pykka.ActorRef | None:
        """The session a valid reconnect token resumes, wherever it was (None: invalid, used,
        expired, not yours, or ended): see :meth:`transport.handover.Handover.resume`."""
        return await self.handover.resume(identity, reconnect_token, connection, last_event_seq)

    async def resume_here(self, grant: TokenGrant, connection: Any, last_event_seq: int) -> pykka.ActorRef | None:
        """Resume a session of this node (its token already consumed): a new token, then Resume."""
        session = self.sessions.get(grant.session_id)
        if session is None:
            return None
        token, expires_at = await self.loop.run_in_executor(
            None, self.tokens.issue, grant.session_id, grant.user_id, grant.last_sequence_number,
            grant.character_id, self.node_id,
        )
        if not tell_if_alive(session, Resume(connection, last_event_seq, token, expires_at)):
            return None  # it ended while we were talking to Redis
        return session

    def park_written_later(self, state: dict[str, Any], session: pykka.ActorRef) -> None:
        """A session hands itself over (its thread): the handover writes its state off the IOLoop."""
        self.loop.add_callback(self.handover.write_parked, state, session)

    # ---------------------------------------------------------------- actors leaving (any thread)

    def character_stopped(self, character_id: str, ref: pykka.ActorRef) -> None:
        """From a character actor's thread: forget it (on the IOLoop)."""
        def forget() -> None:
            if self.characters.get(character_id) is ref:
                del self.characters[character_id]
        self.loop.add_callback(forget)

    def session_ended(self, session_id: str, user_id: str) -> None:
        """From a session actor's thread: forget it and release its lease (on the IOLoop)."""
        def forget() -> None:
            self.sessions.pop(session_id, None)
            self.handover.parking.discard(session_id)
            if self.session_of_user.get(user_id) == session_id:
                del self.session_of_user[user_id]
            self.loop.run_in_executor(None, self._release_lease, user_id, session_id)
        self.loop.add_callback(forget)

    # ---------------------------------------------------------------- leases

    def lease_taken(self, user_id: str) -> None:
        """Another node took ``user_id``'s lease (any thread): check that user's lease now."""
        self.loop.add_callback(self.refresh_leases, user_id)

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
                ref.tell(_replaced())
        return len(lost)

    def _refresh_leases(self, held: list[tuple[str, str]]) -> list[tuple[str, str]]:
        try:
            kept = self.leases.refresh_many([(u, Holder(self.node_id, s)) for u, s in held])
        except redis.RedisError as exc:
            log.warning("session leases not refreshed (redis: %s)", exc)
            return []
        return [pair for pair, ok in zip(held, kept, strict=True) if not ok]

    # ---------------------------------------------------------------- operators' view

    def session_statuses(self) -> list[str]:
        """The status of every session of this node, as each SessionActor publishes it (its
        snapshot's status), read without waiting for any actor: the /metrics scrape calls it on
        the IOLoop thread, which owns ``sessions``."""
        out = []
        for ref in list(self.sessions.values()):
            snap = published_snapshot(ref)
            if snap is not None:
                out.append(snap["status"])
        return out

    async def acks_delivered(self, timeout: float) -> None:
        """Wait (bounded) until no session holds an action whose answer is still on its way,
        as each session says when asked: its turn comes after the actions already in its
        inbox, so those count too."""
        deadline = time.monotonic() + timeout
        proxies = [p for p in map(_proxy, list(self.sessions.values())) if p is not None]
        while (left := deadline - time.monotonic()) > 0:
            answers = await asyncio.gather(
                *(asyncio.wait_for(p.describe(), left) for p in proxies), return_exceptions=True
            )
            # A session that stopped (or cannot answer in time) holds nothing it can still deliver.
            if not sum(a["unacked"] for a in answers if isinstance(a, dict)):
                return
            await asyncio.sleep(0.01)

    def profile_source(self, character_id: str) -> dict[str, Any] | None:
        """The source of truth for a character's public view: its live actor's committed state
        when it is in play (asked, answered on the actor's turn), else PostgreSQL. Blocking:
        call from an executor thread, never the IOLoop. None for an unknown character."""
        ref = self.characters.get(character_id)
        if ref is not None:
            try:
                proxy = ref.proxy()
                durable, name = proxy.durable, proxy.display_name  # both asked at once
                s, display_name = durable.get(timeout=PROFILE_ASK_S), name.get(timeout=PROFILE_ASK_S)
                fields = {k: getattr(s, k) for k in PUBLIC_FIELDS if k != "display_name"}
                return public_view({**fields, "display_name": display_name})
            except (pykka.ActorDeadError, pykka.Timeout):
                pass  # it stopped (its last commits are in the database) or is too busy
        record = self._reload(character_id)
        return None if record is None else public_view(record)


@dataclass
class _LoginLock:
    """One user's login lock and how many logins hold or wait for it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def _proxy(ref: pykka.ActorRef) -> Any:
    """A proxy to ask ``ref`` through, or None when it has stopped."""
    try:
        return ref.proxy()
    except pykka.ActorDeadError:
        return None


def _replaced() -> Kick:
    return Kick(KickReason.SESSION_REPLACED, int(CloseCode.SESSION_REPLACED), REPLACED)


async def _claim(character: pykka.ActorRef) -> bool:
    """Ask a character actor to wait for the session about to attach: True once it promised,
    False when it had stopped. A character too busy to answer within CLAIM_TIMEOUT_S fails the
    login (TimeoutError) rather than risk a second actor writing the same character."""
    try:
        return bool(await ask_async(character, Claim(), CLAIM_TIMEOUT_S))
    except pykka.ActorDeadError:
        return False


async def ask_quietly(ref: pykka.ActorRef, message: Any, timeout: float) -> None:
    """Tell ``message`` and wait until the actor handled it; a dead, crashing or slow actor
    ends the wait (at most ``timeout`` seconds) without an error."""
    try:
        await ask_async(ref, message, timeout)
    except Exception as exc:
        log.debug("%s not confirmed by %s: %s", type(message).__name__, ref, exc)
