"""One answer per seq, the CharacterActor's bookkeeping of it: the recent answers (for resends)
and the seqs that arrived but are not answered yet. A resent seq gets nothing while in flight,
the remembered frame, or its stored answer looked up in the log and rebuilt here. Plain: no
actor, no I/O; the actor sends what this decides.
"""

from __future__ import annotations

from collections import OrderedDict

from actors import rules
from actors.character_work import stored_ack_state
from actors.messages import StoredAnswer
from actors.ports import FrameCodec
from actors.vocabulary import RejectCode

# Recent answers kept for resends (as many as a session keeps: actors.session._ANSWERS_KEPT).
ANSWERS_KEPT = 1024


class Answers:
    """The recent answer frames of one character's seqs and its open (unanswered) seqs."""

    def __init__(self, codec: FrameCodec, limits: rules.RuleLimits) -> None:
        self.codec = codec
        self.limits = limits
        self.recent: OrderedDict[int, str] = OrderedDict()  # seq → its answer frame (recent)
        self.open_seqs: set[int] = set()  # arrived, not answered yet

    def arrived(self, seq: int) -> None:
        """``seq`` is on its way: a resend of it gets nothing until it is answered."""
        self.open_seqs.add(seq)

    def record(self, seq: int, frame: str) -> None:
        """``frame`` is the one answer of ``seq``: remember it (the oldest drops out)."""
        self.open_seqs.discard(seq)
        self.recent[seq] = frame
        if len(self.recent) > ANSWERS_KEPT:
            self.recent.popitem(last=False)

    def is_open(self, seq: int) -> bool:
        """True while ``seq`` is in flight or queued (its answer goes out when it lands)."""
        return seq in self.open_seqs

    def remembered(self, seq: int) -> str | None:
        """The answer frame of ``seq`` if it is still remembered."""
        return self.recent.get(seq)

    def forget_open(self) -> None:
        """The open seqs will never be answered here (the actor ends; a new one answers them)."""
        self.open_seqs.clear()

    def reject_frame(self, seq: int, code: str, message: str) -> str:
        """The reject frame of ``seq``."""
        return self.codec.reject_json(seq, code, message)

    def stored_frame(self, msg: StoredAnswer) -> tuple[str, str | None]:
        """The answer of a forgotten seq from the log, and its reject code (None for an ack):
        stored → its original ack, the state rebuilt from the stored row; not stored (rejected,
        its answer forgotten) → reject ``unavailable``."""
        if msg.action_id is not None:
            state = stored_ack_state(msg.action_type, msg.payload, self.limits)
            return self.codec.ack_json(msg.seq, msg.action_id, msg.persisted_at, state), None
        code = RejectCode.UNAVAILABLE
        return self.reject_frame(msg.seq, code, f"seq {msg.seq} was not stored"), code
