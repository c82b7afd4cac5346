"""The SessionActor: one player's connection lifecycle (it survives reconnects).

Status: connecting → active → reconnecting → active; active|reconnecting → terminating →
removed. It checks sequence numbers (DESIGN rule 4), remembers recent answers (one it forgot
is the character's to answer), numbers the events it sends (``event_seq``) and keeps the recent
ones for a delta replay after a reconnect (:mod:`actors.session_events`). Moving to another
node: :mod:`actors.session_moves`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import pykka

from actors.base import TilehallActor, tell_if_alive
from actors.messages import (
    AttachSession,
    AuditSession,
    CharacterAttached,
    ClientAction,
    ConnectionLost,
    DetachSession,
    Kick,
    Logout,
    MalformedAction,
    ReconnectWindowOver,
    ResendAnswer,
    Resume,
    SnapshotFor,
    StartSession,
    SubmitAction,
    WorldSnapshotReady,
)
from actors.ports import Connection, FrameCodec, SessionHooks
from actors.session_events import SessionEvents
from actors.session_moves import SessionMoves, replayable
from actors.timers import tell_later
from actors.vocabulary import CloseCode, ErrorCode, KickReason, RejectCode
from config.settings import Settings
from config.version import SERVER_VERSION

log = logging.getLogger(__name__)

CONNECTING, ACTIVE, RECONNECTING, TERMINATING = "connecting", "active", "reconnecting", "terminating"
_ANSWERS_KEPT = 1024
# A terminated session stays alive (inert) this long before it stops: the character and the
# zone may still hold its ref for a moment, and telling a stopped actor raises in the teller.
LINGER_S = 5.0


@dataclass(frozen=True, slots=True)
class LingerOver:
    """Timer: a terminated session has lingered long enough; stop the actor."""


class SessionActor(SessionEvents, SessionMoves, TilehallActor):
    """A PlayerSession (``parked`` + ``adopt``: one moved here from another node)."""

    def __init__(
        self,
        *,
        session_id: str,
        user_id: str,
        character_id: str,
        character: pykka.ActorRef,
        zone: pykka.ActorRef,
        storage: pykka.ActorRef,
        connection: Connection,
        codec: FrameCodec,
        hooks: SessionHooks,
        settings: Settings,
        reconnect_token: str,
        reconnect_expires_at: float,
        protocol_version: str,
        node_id: str,
        parked: dict[str, Any] | None = None,
        adopt: Resume | None = None,
    ) -> None:
        super().__init__()
        self.session_id = session_id
        self.user_id = user_id
        self.character_id = character_id
        self.character = character
        self.zone = zone
        self.storage = storage
        self.connection: Connection | None = connection
        self.codec = codec
        self.hooks = hooks
        self.settings = settings
        self.reconnect_token = reconnect_token
        self.reconnect_expires_at = reconnect_expires_at
        self.protocol_version = protocol_version
        self.node_id = node_id
        self.status = CONNECTING
        self.last_action_seq = 0  # the highest seq answered or in flight
        self.last_heartbeat_at = time.time()  # the socket's stamp (a ping is no message) once it is gone
        self.reconnect_attempts = 0
        self._resumes: deque[float] = deque()
        self._drops = 0
        self._profile: dict[str, Any] | None = None
        self._world: dict[str, Any] | None = None
        self._awaiting_snapshot = False
        self._early_events: list[str] = []
        self._early_actions: list[ClientAction | MalformedAction] = []
        self.answers: OrderedDict[int, str] = OrderedDict()
        self.pending: dict[int, float] = {}
        self.event_seq = 0
        self.events: deque[tuple[int, str]] = deque(maxlen=settings.session.event_buffer_size)
        self.entity_id = session_id
        self.debug_status = CONNECTING
        if parked is not None and adopt is not None:
            self._restore(parked, adopt)

    # ---------------------------------------------------------------- start

    def on_StartSession(self, msg: StartSession) -> None:
        """Attach to the character (which enters the zone); welcome follows their replies."""
        self.character.tell(AttachSession(self.actor_ref, self.session_id, moved=self._adopt is not None))
        self.storage.tell(
            AuditSession(self.session_id, self.user_id, self.character_id, self.protocol_version, self.node_id)
        )

    def on_CharacterAttached(self, msg: CharacterAttached) -> None:
        """The character's profile and last accepted seq."""
        self._profile = msg.profile
        self.last_action_seq = max(self.last_action_seq, msg.last_action_seq)
        self._maybe_welcome()

    def on_WorldSnapshotReady(self, msg: WorldSnapshotReady) -> None:
        """The zone's snapshot: for the welcome, or for a resume that needs one."""
        if self.status == CONNECTING:
            self._world = msg.world
            self._maybe_welcome()
        elif self._awaiting_snapshot:
            self._awaiting_snapshot = False
            self._send_resumed("snapshot", 0, msg.world)

    def _maybe_welcome(self) -> None:
        if self._profile is None or self._world is None or self.status != CONNECTING:
            return
        if self._adopt is not None:
            self._answer_adopted_resume()
        else:
            self._welcome()
        early, self._early_events = self._early_events, []
        for body in early:
            self._deliver(body)
        actions, self._early_actions = self._early_actions, []
        for action in actions:  # sent before the welcome: judged against its last_action_seq
            self.on_receive(action)

    def _welcome(self) -> None:
        self.hooks.welcomed()  # counted before the frame leaves: whoever sees it sees the count
        self._send(
            self.codec.server_frame_json(
                "welcome",
                session_id=self.session_id,
                server_version=SERVER_VERSION,
                character=self._profile,
                last_action_seq=self.last_action_seq,
                reconnect_token=self.reconnect_token,
                reconnect_expires_at=self._expires_iso(),
                heartbeat_interval_ms=self.settings.session.heartbeat_interval_ms,
                world=self._world,
                event_seq=self.event_seq,
            )
        )
        self._set_status(ACTIVE)

    # ---------------------------------------------------------------- actions

    def on_ClientAction(self, msg: ClientAction) -> None:
        """Sequence check (DESIGN rule 4), then hand the action to the character."""
        if self.status == CONNECTING:  # the character's last seq is not known yet
            self._early_actions.append(msg)
            return
        if self.status == TERMINATING or self._parking:  # ended or moving: nothing more reaches it
            return
        seq = msg.seq
        expected = self.last_action_seq + 1
        if seq < expected:
            self._resend_answer(seq)
        elif seq > expected:
            self._send(self.codec.server_frame_json("resync_required", expected_seq=expected))
        else:
            self.last_action_seq = seq
            if len(self.pending) >= self.settings.session.max_unacked_actions:
                frame = self.codec.reject_json(seq, RejectCode.TOO_FAST, "too many actions waiting for their ack")
                self._remember(seq, frame)
                self._send(frame)
                self.hooks.action_answered(time.perf_counter() - msg.received_at, False, RejectCode.TOO_FAST)
                return
            self.pending[seq] = msg.received_at
            # A character that was fenced has stopped and kicked this session: its kick follows.
            tell_if_alive(self.character, SubmitAction(seq, msg.action_type, msg.payload, msg.received_at))

    def on_MalformedAction(self, msg: MalformedAction) -> None:
        """A bad action frame whose seq is readable: the expected seq gets a reject."""
        if self.status == CONNECTING:
            self._early_actions.append(msg)
            return
        if self.status == TERMINATING or self._parking:
            return
        if msg.seq == self.last_action_seq + 1:
            self.last_action_seq = msg.seq
            frame = self.codec.reject_json(msg.seq, RejectCode.BAD_FRAME, msg.message)
            self._remember(msg.seq, frame)
        else:
            frame = self.codec.server_frame_json("error", code=ErrorCode.BAD_FRAME, message=msg.message)
        self._send(frame)

    def _resend_answer(self, seq: int) -> None:
        """A resent seq: its remembered answer again; nothing while it is pending here (its
        answer is on the way); else the character answers it (in flight there, remembered
        there, or looked up in the log): exactly one answer, the original one."""
        frame = self.answers.get(seq)
        if frame is not None:
            self._send(frame)
        elif seq not in self.pending:
            tell_if_alive(self.character, ResendAnswer(seq))

    def _remember(self, seq: int, frame: str) -> None:
        self.answers[seq] = frame
        if len(self.answers) > _ANSWERS_KEPT:
            self.answers.popitem(last=False)


    # ---------------------------------------------------------------- drops and resumes

    def on_ConnectionLost(self, msg: ConnectionLost) -> None:
        """The socket closed without a logout: wait for a resume for the reconnect window."""
        if msg.connection is not self.connection or self.status == TERMINATING:
            return
        self.last_heartbeat_at = getattr(msg.connection, "last_heartbeat_at", self.last_heartbeat_at)
        self.connection = None
        if self._parking:  # on its way to another node: the client resumes there
            return
        if self.status == CONNECTING:
            self._terminate("dropped_before_welcome")
            return
        self._set_status(RECONNECTING)
        self._drops += 1
        tell_later(self.settings.session.reconnect_window_s, self.actor_ref, ReconnectWindowOver(self._drops))

    def on_ReconnectWindowOver(self, msg: ReconnectWindowOver) -> None:
        """Nobody resumed in time: the session ends."""
        if self.status == RECONNECTING and msg.drop == self._drops:
            self._terminate("reconnect_window_expired")

    def on_Resume(self, msg: Resume) -> None:
        """A valid resume: replay missed events (delta) or send a fresh snapshot."""
        if self._refuse_while_parking(msg):
            return
        if self.status in (TERMINATING, CONNECTING):
            msg.connection.close(CloseCode.RECONNECT_INVALID, self.codec.server_frame_json(
                "error", code=ErrorCode.RECONNECT_INVALID, message="this session can no longer be resumed"))
            return
        now = time.monotonic()
        window = self.settings.session.reconnect_attempts_window_s
        while self._resumes and self._resumes[0] < now - window:
            self._resumes.popleft()
        if len(self._resumes) >= self.settings.session.reconnect_max_attempts:
            msg.connection.close(CloseCode.TOO_MANY, self.codec.server_frame_json(
                "error", code=ErrorCode.TOO_MANY_RECONNECTS,
                message=f"more than {self.settings.session.reconnect_max_attempts} reconnects in {window:g} s"))
            return
        self._resumes.append(now)
        self.reconnect_attempts += 1
        if self.connection is not None:  # an older socket still open: the resume takes over
            self.connection.close(CloseCode.SESSION_REPLACED, self.codec.server_frame_json(
                "kicked", reason=KickReason.SESSION_REPLACED))
        self.connection = msg.connection
        self.reconnect_token, self.reconnect_expires_at = msg.reconnect_token, msg.reconnect_expires_at
        self._set_status(ACTIVE)
        missed = replayable(self.events, self.event_seq, msg.last_event_seq)
        if missed is not None:
            self._send_resumed("delta", len(missed), None)
            for frame in missed:
                self._send(frame)
        else:
            self.hooks.snapshot_forced()
            self._awaiting_snapshot = True
            self.zone.tell(SnapshotFor(self.character_id, self.actor_ref))

    def _send_resumed(self, sync: str, replayed: int, world: dict[str, Any] | None) -> None:
        self.hooks.resumed()  # counted before the frame leaves, like the welcome
        self._send(
            self.codec.server_frame_json(
                "resumed",
                session_id=self.session_id,
                reconnect_token=self.reconnect_token,
                reconnect_expires_at=self._expires_iso(),
                sync=sync,
                replayed=replayed,
                world=world,
                event_seq=self.event_seq,
            )
        )

    # ---------------------------------------------------------------- endings

    def on_Logout(self, msg: Logout) -> None:
        """The player logged out."""
        self._close(CloseCode.NORMAL, self.codec.server_frame_json("kicked", reason=KickReason.LOGOUT))
        self._terminate("logout")

    def on_Kick(self, msg: Kick) -> None:
        """End the session now (replaced, idle, token expired, shutdown, internal error)."""
        if self._moved_on(msg):  # parked: the lease taken is the adopting node's
            return
        kind, field = ("kicked", "reason") if msg.kicked else ("error", "code")
        extra = {} if msg.kicked else {"message": msg.message or msg.reason}
        self._close(msg.code, self.codec.server_frame_json(kind, **{field: msg.reason}, **extra))
        self._terminate(msg.reason)

    def on_failure(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        """A crash: error frame, close 1011, leave nothing behind."""
        log.error("session crashed: %s", exc_value, extra={"session_id": self.session_id})
        self._close(CloseCode.INTERNAL, self.codec.server_frame_json(
            "error", code=ErrorCode.INTERNAL, message="the server hit an internal error"))
        self._detach("crash")
        self.hooks.session_ended(self.session_id, self.user_id)

    def _terminate(self, reason: str) -> None:
        if self.status == TERMINATING:
            return
        self._set_status(TERMINATING)
        self._detach(reason)
        self.storage.tell(
            AuditSession(self.session_id, self.user_id, self.character_id, ended=True, end_reason=reason,
                         reconnects=self.reconnect_attempts, last_action_seq=self.last_action_seq)
        )
        self.hooks.session_ended(self.session_id, self.user_id)
        tell_later(LINGER_S, self.actor_ref, LingerOver())

    def on_LingerOver(self, msg: LingerOver) -> None:
        """Stop the terminated session's actor."""
        self.stop()

    def _detach(self, reason: str) -> None:  # the character may have crashed: it may be gone
        tell_if_alive(self.character, DetachSession(self.session_id, reason))

    def _close(self, code: int, frame: str) -> None:
        if self.connection is not None:
            self.connection.close(code, frame)
            self.connection = None

    def _send(self, frame: str) -> None:
        if self.connection is not None:
            self.connection.send(frame)

    def _set_status(self, new: str) -> None:
        self.status = self.debug_status = new

    def _expires_iso(self) -> str:
        return self.codec.iso_utc(dt.datetime.fromtimestamp(self.reconnect_expires_at, dt.UTC))

    def describe(self) -> dict[str, Any]:
        """Every PlayerSession field of the data model, for /debug/actors/{urn}."""
        return {
            "session_id": self.session_id,
            "user_id": self.user_id,
            "character_id": self.character_id,
            "status": self.status,
            "last_action_seq": self.last_action_seq,
            "last_heartbeat_at": getattr(self.connection, "last_heartbeat_at", self.last_heartbeat_at),
            "protocol_version": self.protocol_version,
            "reconnect_attempts": self.reconnect_attempts,
            "event_seq": self.event_seq,
            "unacked": len(self.pending),
            "connected": self.connection is not None,
        }

