"""How a CharacterActor ends: idle (no session, nothing in flight), fenced, broken, crashed.

Ownership (DESIGN rule 3): the actor starts from a row whose ``owner_epoch`` it took, and every
write carries that epoch. A write refused because the row's epoch moved on (``fenced``) means
another owner plays the character now: the actor kicks its session (``session_replaced``),
answers none of its in-flight works (not stored; the new session resends them) and stops. A
version conflict within the actor's own epoch is a bug (``broken``): the session closes 1011
and the actor stops. Once fenced or broken (``defunct``) every later message is ignored.

:class:`CharacterEnding` is a base class of :class:`~actors.character.CharacterActor` and works
on its state (annotated below); it holds no state of its own.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import pykka

from actors.base import tell_if_alive
from actors.character_answers import Answers
from actors.character_work import Work
from actors.messages import (
    AbilityContext,
    AttachSession,
    Claim,
    Kick,
    LeaveZone,
    PersistFailed,
    ReturnItem,
)
from actors.vocabulary import CloseCode, ErrorCode, KickReason

# The actor's own logger: operators filter a character's log lines on it.
log = logging.getLogger("actors.character")

REPLACED_MESSAGE = "your character is played elsewhere"


class CharacterEnding:
    """The ways a character actor stops, and the filter of messages that reach it after that."""

    # The CharacterActor's state this works on.
    character_id: str
    owner_epoch: int
    session: pykka.ActorRef | None
    session_id: str | None
    zone: pykka.ActorRef
    actor_ref: pykka.ActorRef
    on_stopped: Callable[[str, pykka.ActorRef], None] | None
    inflight: dict[int, Work]
    answers: Answers
    queue: deque[Any]
    waiting: Any
    claimed: bool
    stopping: bool
    defunct: bool
    debug_status: str
    stop: Callable[[], Any]

    def on_receive(self, message: Any) -> Any:
        """Dispatch as usual; once fenced or broken, nothing more is done (see :meth:`_after_end`)."""
        if self.defunct:
            return self._after_end(message)
        return super().on_receive(message)

    def _after_end(self, message: Any) -> Any:
        """A message that reached a fenced or broken actor before its stop: a claim is refused,
        a session that attaches anyway is told the character is played elsewhere, an item the
        zone took for us goes back; the rest (late commit answers, actions) is dropped."""
        if isinstance(message, Claim):
            return False
        if isinstance(message, AttachSession):
            tell_if_alive(message.session, Kick(KickReason.SESSION_REPLACED, CloseCode.SESSION_REPLACED,
                                                REPLACED_MESSAGE))
        elif isinstance(message, AbilityContext) and message.item is not None:
            tell_if_alive(self.zone, ReturnItem(message.item))
        return None

    def _fenced(self, work: Work, msg: PersistFailed) -> None:
        """Another owner took the character (a newer ownership epoch in the row): this actor is
        stale. Kick the session (the new owner has the player), answer none of the in-flight
        works (they were not stored; the new session resends them), leave the zone, stop."""
        told = f"kicked {KickReason.SESSION_REPLACED} ({int(CloseCode.SESSION_REPLACED)}): {REPLACED_MESSAGE}"
        log.error(
            "character %s fenced: its ownership epoch %s is stale (the row's epoch moved on: %s); seq %s and %d"
            " other in-flight works unanswered (not stored); session %s %s; the actor stops",
            self.character_id, self.owner_epoch, msg.message, work.seq, len(self.inflight), self.session_id,
            told if self.session is not None else "none (no session attached)",
            extra={"character_id": self.character_id},
        )
        self._end(work, Kick(KickReason.SESSION_REPLACED, CloseCode.SESSION_REPLACED, REPLACED_MESSAGE))

    def _broken(self, work: Work, msg: PersistFailed) -> None:
        """A version conflict within this actor's own epoch: its idea of the row is wrong (a
        bug). Close the session with 1011 and stop: a re-login takes a new epoch from the row."""
        log.error(
            "character %s: version conflict under its own ownership epoch %s (expected version %s): a bug;"
            " seq %s unanswered; session %s told error internal (1011); the actor stops",
            self.character_id, self.owner_epoch, work.version - 1, work.seq, self.session_id,
            extra={"character_id": self.character_id},
        )
        self._end(work, Kick(ErrorCode.INTERNAL, CloseCode.INTERNAL, "the server hit an internal error",
                             kicked=False))

    def _end(self, work: Work, kick: Kick) -> None:
        """Stop without answering anything more: kick the session, give the items the works
        in flight took back to the zone, leave it, stop (the node learns in on_stop)."""
        self.defunct = self.stopping = True
        self.debug_status = "stopping (fenced)" if kick.code == CloseCode.SESSION_REPLACED else "stopping (broken)"
        if self.session is not None:
            tell_if_alive(self.session, kick)
        self.session = self.session_id = None
        for w in (work, *self.inflight.values()):
            if w.taken_item is not None:
                self.zone.tell(ReturnItem(w.taken_item))
        self.inflight.clear()
        self.queue.clear()
        self.answers.forget_open()
        self.zone.tell(LeaveZone(self.character_id, self.actor_ref))
        self.stop()

    def _stop_if_done(self) -> None:
        if self.session is None and not self.claimed and not self.inflight and self.waiting is None and not self.queue:
            self.stopping = True
            self.debug_status = "stopping"
            self.stop()

    def on_stop(self) -> None:
        """Tell the node this character is out of play."""
        if self.on_stopped is not None:
            self.on_stopped(self.character_id, self.actor_ref)

    def on_failure(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        """A crash ends the session playing this character (close 1011); the node forgets us."""
        log.error("character %s crashed: %s; session %s told error internal (1011)", self.character_id, exc_value,
                  self.session_id, extra={"character_id": self.character_id})
        if self.session is not None:
            tell_if_alive(self.session, Kick(ErrorCode.INTERNAL, CloseCode.INTERNAL,
                                             "the server hit an internal error", kicked=False))
        tell_if_alive(self.zone, LeaveZone(self.character_id, self.actor_ref))
        if self.on_stopped is not None:
            self.on_stopped(self.character_id, self.actor_ref)
