"""A session moving between nodes: parking it here, adopting a parked one there.

:class:`SessionMoves` is a mixin of :class:`actors.session.SessionActor`. **Park** (a draining
node, or another node resuming this session): no new action reaches the character, the ones in
flight land first (bounded by ``storage.commit_timeout_s``; their answers are written to the
socket while it is open, else the client gets them again when it resends), then the session's
resumable state goes to the node (``hooks.park``), which writes it to Redis off the actor and
tells :class:`~actors.messages.ParkWritten`; then the socket (if any) closes with ``kicked
node_draining`` + 1012 and the session detaches from its character with reason ``moved`` (no
logout event) and ends. **Adopt**: a SessionActor built from a parked state (same session_id,
event numbering and buffer) attaches to its character without a login event and answers the
resume that brought it here like :meth:`SessionActor.on_Resume` does (delta or snapshot).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from actors.messages import Kick, Park, ParkWritten, Resume
from actors.timers import tell_later
from actors.vocabulary import CloseCode, KickReason

log = logging.getLogger(__name__)
ANSWERS_PARKED = 64  # the most recent answers travel with a parked session
PARK_ROUNDS = 3  # events that keep coming while parking: the state is written at most this often


@dataclass(frozen=True, slots=True)
class ParkDeadline:
    """Timer: the in-flight actions of a parking session had their time; park anyway."""


class SessionMoves:
    """Park and adopt, for :class:`actors.session.SessionActor` (its fields and helpers)."""

    _parking = False  # a Park arrived: no new action, the state is on its way out
    _park_sent = False  # the state went to the node
    _park_rounds = 0
    _parked_event_seq = 0  # the event_seq of the state last written
    _adopt: Resume | None = None  # built from a parked state: the resume to answer once attached

    def _restore(self, parked: dict[str, Any], resume: Resume) -> None:
        """Take the parked state's numbering, buffer and answers; answer ``resume`` once attached."""
        self.event_seq = int(parked.get("event_seq", 0))
        self.events.extend((int(seq), frame) for seq, frame in parked.get("events", ()))
        self.reconnect_attempts = int(parked.get("reconnect_attempts", 0))
        self.last_action_seq = int(parked.get("last_action_seq", 0))
        for seq, frame in parked.get("answers", ()):
            self._remember(int(seq), frame)
        self.connection = resume.connection
        self._adopt = resume

    def parked_state(self) -> dict[str, Any]:
        """This session's resumable state, as JSON-ready data (see storage.redis.parked_sessions)."""
        return {
            "session_id": self.session_id, "user_id": self.user_id, "character_id": self.character_id,
            "display_name": (self._profile or {}).get("display_name"),
            "last_action_seq": self.last_action_seq, "event_seq": self.event_seq,
            "events": [[seq, frame] for seq, frame in self.events],
            "answers": [[seq, frame] for seq, frame in list(self.answers.items())[-ANSWERS_PARKED:]],
            "reconnect_attempts": self.reconnect_attempts, "protocol_version": self.protocol_version,
            "node_id": self.node_id,
        }

    def on_Park(self, msg: Park) -> None:
        """Hand this session over: wait (bounded) for the actions in flight, then park."""
        if self.status == "terminating" or self._parking:
            return
        self._parking = True
        self.debug_status = "parking"
        if self.status == "connecting":  # no welcome yet: nothing worth moving
            self._close(CloseCode.SERVICE_RESTART, self._draining_frame())
            self._terminate("node_draining")
            return
        if self.pending:
            tell_later(self.settings.storage.commit_timeout_s, self.actor_ref, ParkDeadline())
        self._park_when_landed()

    def on_ParkDeadline(self, msg: ParkDeadline) -> None:
        """The in-flight actions did not land in time: park anyway (their answers come on resend)."""
        if self._parking and not self._park_sent:
            log.warning("session %s parks with %d actions still in flight", self.session_id,
                        len(self.pending), extra={"session_id": self.session_id})
            self._park_now()

    def _park_when_landed(self) -> None:
        if self._parking and not self._park_sent and not self.pending:
            self._park_now()

    def _park_now(self) -> None:
        # From here on events are numbered and buffered, not sent: the next node replays them.
        self._park_sent = True
        self._park_rounds += 1
        self._parked_event_seq = self.event_seq
        self.hooks.park(self.parked_state(), self.actor_ref)

    def on_ParkWritten(self, msg: ParkWritten) -> None:
        """The state is parked (or could not be): write it again if events came meanwhile
        (a few rounds at most), then tell the client to move, detach, end."""
        if self.status == "terminating":
            return
        if msg.ok and self.event_seq > self._parked_event_seq and self._park_rounds < PARK_ROUNDS:
            self._park_now()
            return
        self._close(CloseCode.SERVICE_RESTART, self._draining_frame())
        self._terminate("moved")

    def _moved_on(self, msg: Kick) -> bool:
        """A ``session_replaced`` kick once the state is parked: the node that adopts it took the
        lease; this session is leaving anyway (1012, no logout event), so it is ignored."""
        return self._park_sent and msg.reason == KickReason.SESSION_REPLACED

    def _draining_frame(self) -> str:
        return self.codec.server_frame_json("kicked", reason=KickReason.NODE_DRAINING)

    def _refuse_while_parking(self, msg: Resume) -> bool:
        """A resume reaching a parking session: 1012, the client resumes again (on the parked state)."""
        if not self._parking:
            return False
        msg.connection.close(CloseCode.SERVICE_RESTART, self._draining_frame())
        return True

    def _answer_adopted_resume(self) -> None:
        """Attached on this node: answer the resume that brought the parked session here."""
        resume, self._adopt = self._adopt, None
        self.connection = None  # the resume's socket becomes the session's in on_Resume
        self._set_status("reconnecting")
        self.on_Resume(resume)


def replayable(events: Iterable[tuple[int, str]], event_seq: int, last_event_seq: int) -> list[str] | None:
    """The event frames a client that saw up to ``last_event_seq`` missed, when the buffer
    ``events`` ((event_seq, frame), oldest first) still reaches back that far (a delta); None
    when it does not (the resume needs a snapshot)."""
    events = list(events)
    oldest = events[0][0] if events else event_seq + 1
    if last_event_seq <= event_seq and (last_event_seq == event_seq or oldest <= last_event_seq + 1):
        return [frame for seq, frame in events if seq > last_event_seq]
    return None
