"""Sessions moving between nodes: resume anywhere, park on request, park everything (drain).

A reconnect token names the session, its user and character and the node that issued it. The
node a ``resume`` reaches only *peeks* at the token first, then (docs/protocol.md "Resume on any
node"):

1. the session is on this node → consume the token, resume it here (as before);
2. its state is parked in Redis (the owner drained, or handed it over) → take it, consume the
   token, **adopt** it;
3. the owner node is alive (a peer of this node's zone) → ask it over the cluster relay
   (``{"t": "park", "session_id", "node_id"}``); it parks the session; wait up to
   :data:`PARK_WAIT_S` for the parked state → adopt; an owner that says the session is gone
   (logout, window over) → refused (4004);
4. the owner is dead (or did not answer) → consume the token and start the session anew for
   the grant's user and character: the resume gets a snapshot (``state_refresh_forced_total``).

**Adopt** = the user's lease, the character (a live actor here is claimed, else
``take_ownership`` fences every write of the old owner), a SessionActor built from the parked
state (same session_id, event numbering, buffer), and a new reconnect token. The SessionActor
answers the resume itself (delta, or snapshot when the buffer does not reach back).

Threads: the IOLoop, except :meth:`Handover.park_requested` (the relay's reader thread, which
hops onto the IOLoop). Redis calls run in executor threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import pykka
import redis

from actors.base import tell_if_alive
from actors.messages import Park, ParkWritten, Resume
from actors.session_moves import replayable
from config.version import SERVER_VERSION
from storage.redis.parked_sessions import ParkedSessions
from storage.redis.reconnect_tokens import TokenGrant
from transport.auth import Identity

if TYPE_CHECKING:
    from transport.sessions import SessionDirectory

log = logging.getLogger(__name__)
PARK_WAIT_S = 3.0  # a live owner parks a session it is asked for within this
PARK_POLL_S = 0.05
PEERS_ASK_S = 1.0


class SessionMoving(Exception):
    """The session is being parked on this node right now: the client resumes again (1012)
    and finds it parked; its token is left unconsumed."""


class Handover:
    """Resume-anywhere and parking for one node's :class:`~transport.sessions.SessionDirectory`."""

    def __init__(self, directory: SessionDirectory, parked: ParkedSessions) -> None:
        self.d = directory
        self.parked = parked
        self._zone: Any = None  # the zone's proxy, asked for its peers
        self.parking: set[str] = set()  # sessions of this node told to park (IOLoop thread)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await self.d.loop.run_in_executor(None, fn, *args)

    # ---------------------------------------------------------------- resume anywhere

    async def resume(
        self, identity: Identity, reconnect_token: str, connection: Any, last_event_seq: int
    ) -> pykka.ActorRef | None:
        """The session ``reconnect_token`` resumes, from wherever it is (None: refuse, 4004).
        Raises :class:`SessionMoving` when it is being parked here at this moment."""
        d = self.d
        grant = await self._run(d.tokens.peek, reconnect_token)
        if grant is None or grant.user_id != identity.user_id:
            return None
        if grant.session_id in self.parking:
            raise SessionMoving(grant.session_id)
        if grant.session_id in d.sessions:  # 1. here
            grant = await self._run(d.tokens.consume, reconnect_token)
            return None if grant is None else await d.resume_here(grant, connection, last_event_seq)
        state = await self._run(self.parked.take, grant.session_id)  # 2. parked
        how = "parked"
        if state is None and grant.node_id and grant.node_id != d.node_id and grant.character_id:
            if await self._alive(grant.node_id):  # 3. ask the owner to park it
                d.publish({"t": "park", "session_id": grant.session_id, "node_id": grant.node_id})
                state, how = await self._wait_parked(grant.session_id), "handed over"
            if state is None:  # 4. the owner is dead or silent: a fresh start, with a snapshot
                state, how = _fresh_state(grant, last_event_seq), "owner gone"
        if state is None or state.get("gone"):
            return None  # ended (on this node, or on the owner, which said so)
        if await self._run(d.tokens.consume, reconnect_token) is None:
            if how != "owner gone":
                await self._run(self._park_quietly, state)  # another resume won the token
            return None
        return await self._adopt(grant, state, connection, last_event_seq, how)

    async def _alive(self, node_id: str) -> bool:
        """Is ``node_id`` a live peer of this node's zone (it heard that node's roster lately)?"""
        try:
            if self._zone is None:
                self._zone = self.d.zone.proxy()
            detail = await asyncio.wait_for(self._zone.describe(), PEERS_ASK_S)
        except Exception as exc:
            log.warning("zone peers not read (%r): the owner node counts as alive", exc)
            return True
        return node_id in detail.get("peers", ())

    async def _wait_parked(self, session_id: str) -> dict[str, Any] | None:
        deadline = time.monotonic() + PARK_WAIT_S
        while time.monotonic() < deadline:
            state = await self._run(self.parked.take, session_id)
            if state is not None:
                return state
            await asyncio.sleep(PARK_POLL_S)
        return None

    def _park_quietly(self, state: dict[str, Any]) -> None:
        try:
            self.parked.park(state)
        except redis.RedisError as exc:
            log.warning("parked state of %s lost (redis: %s)", state.get("session_id"), exc)

    async def _adopt(
        self, grant: TokenGrant, state: dict[str, Any], connection: Any, last_event_seq: int, how: str
    ) -> pykka.ActorRef:
        """Start the session here from ``state``; it answers the resume once attached."""
        d = self.d
        sid, user_id, cid = grant.session_id, grant.user_id, grant.character_id
        async with d.login_turn(user_id):
            token, expires_at = await self._run(self._prepare, grant)
            old_id = await d.replace_older(user_id)  # a newer login here: the resumed one wins
            character = await d.character_for(user_id, cid, sid, old_id)
            resume = Resume(connection, last_event_seq, token, expires_at)
            session = d.start_session(
                session_id=sid, user_id=user_id, character_id=cid, character=character,
                connection=connection, reconnect_token=token, reconnect_expires_at=expires_at,
                protocol_version=state.get("protocol_version") or SERVER_VERSION, parked=state, adopt=resume,
            )
        # The session answers the resume by the same rule (actors.session_moves.replayable).
        missed = replayable(((int(seq), frame) for seq, frame in state.get("events", ())),
                            int(state.get("event_seq", 0)), last_event_seq)
        delta, replayed = missed is not None, len(missed or ())
        log.info(
            "session handover: session %s of user %s from node %s to node %s (%s), %s, %d events replayed",
            sid, user_id, grant.node_id, d.node_id, how, "delta" if delta else "snapshot", replayed,
            extra={"session_id": sid, "user_id": user_id, "character_id": cid, "from_node": grant.node_id,
                   "to_node": d.node_id, "sync": "delta" if delta else "snapshot", "replayed": replayed},
        )
        return session

    def _prepare(self, grant: TokenGrant) -> tuple[str, float]:
        """Blocking: a new reconnect token naming this node, and the user's lease."""
        d = self.d
        token, expires_at = d.tokens.issue(
            grant.session_id, grant.user_id, grant.last_sequence_number, grant.character_id, d.node_id
        )
        d.take_lease(grant.user_id, grant.session_id)
        return token, expires_at

    # ---------------------------------------------------------------- parking (the owner's side)

    def park_requested(self, message: dict[str, Any]) -> None:
        """Another node asks us to park a session (the relay's thread): hop onto the IOLoop."""
        if message.get("node_id") == self.d.node_id:
            self.d.loop.add_callback(self._park_one, str(message.get("session_id")))

    def _park_one(self, session_id: str) -> None:
        ref = self.d.sessions.get(session_id)
        if ref is None or not tell_if_alive(ref, Park()):
            self.d.loop.run_in_executor(None, self._mark_gone, session_id)
        else:
            self.parking.add(session_id)

    def _mark_gone(self, session_id: str) -> None:
        try:
            self.parked.mark_gone(session_id)
        except redis.RedisError as exc:
            log.warning("session %s: 'gone' not written (redis: %s)", session_id, exc)

    async def write_parked(self, state: dict[str, Any], session: pykka.ActorRef) -> None:
        """Write a parking session's state to Redis (off the IOLoop), then tell it ParkWritten."""
        ok = True
        try:
            await self._run(self.parked.park, state)
        except redis.RedisError as exc:
            ok = False
            log.warning("session %s not parked (redis: %s): its resume gets a snapshot",
                        state.get("session_id"), exc)
        log.info("session parked: session %s of user %s on node %s, event_seq %s, %d events kept",
                 state.get("session_id"), state.get("user_id"), self.d.node_id, state.get("event_seq"),
                 len(state.get("events", ())), extra={"session_id": state.get("session_id"),
                                                       "node_id": self.d.node_id})
        tell_if_alive(session, ParkWritten(ok))

    async def park_all(self, timeout: float) -> int:
        """Park every session of this node; wait (bounded) until each has ended. Returns how many."""
        told = 0
        for session_id, ref in list(self.d.sessions.items()):
            if tell_if_alive(ref, Park()):
                self.parking.add(session_id)
                told += 1
        deadline = time.monotonic() + timeout
        while self.d.sessions and time.monotonic() < deadline:
            await asyncio.sleep(PARK_POLL_S)
        if self.d.sessions:
            log.warning("drain: %d sessions not parked in %.1f s", len(self.d.sessions), timeout)
        return told


def _fresh_state(grant: TokenGrant, last_event_seq: int) -> dict[str, Any]:
    """The state of a session whose node died: nothing to replay (numbering goes on past the
    client's last event, so the resume is a snapshot)."""
    return {
        "session_id": grant.session_id, "user_id": grant.user_id, "character_id": grant.character_id,
        "last_action_seq": grant.last_sequence_number, "event_seq": max(0, last_event_seq) + 1,
        "events": [], "reconnect_attempts": 0,
    }
