"""What a nemesis run records: the players' view (what they sent and every answer they got),
the faults, and the readiness samples. Plain data, so the checker can be tested on
hand-made records."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    """An ``ack`` or ``reject`` a player received (``t``: seconds since the run started)."""

    t: float
    seq: int
    kind: str  # "ack" | "reject"
    character_id: str | None
    action_id: str | None = None
    code: str | None = None
    node: int = 0
    action: tuple[str, dict[str, Any]] | None = None  # what the player had sent as this seq
    gen: int = 0  # welcomes before it whose last_action_seq was below this seq (the seq reused)

    @property
    def outcome(self) -> str:
        """What distinguishes one answer from another: the ack's action id or the reject code."""
        return f"ack {self.action_id}" if self.kind == "ack" else f"reject {self.code}"


@dataclass
class Transmission:
    """One write of an ``action`` frame; ``answered_at``/``closed_at`` end its wait."""

    t: float
    seq: int
    node: int
    first: bool  # the first time this action was sent (not a resend)
    answered_at: float | None = None
    answer: str | None = None  # "ack" or the reject code
    closed_at: float | None = None


@dataclass
class PlayerLog:
    """Everything one player did and saw."""

    name: str
    user: str
    node: int
    character_id: str | None = None
    sent: dict[int, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    transmissions: list[Transmission] = field(default_factory=list)
    frames: Counter[str] = field(default_factory=Counter)  # frame types and close codes seen
    down: list[tuple[float, float]] = field(default_factory=list)  # spans it could not act

    def down_s(self) -> float:
        """Seconds it could not act."""
        return sum(b - a for a, b in self.down)


@dataclass
class Fault:
    """One scheduled fault: when, what, on whom; ``end`` when its effect is over."""

    t: float
    kind: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)
    end: float | None = None
    note: str = ""

    def describe(self) -> str:
        """One line: time, kind, target, parameters."""
        params = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"t={self.t:6.1f}s {self.kind:<16} {self.target:<10} {params}".rstrip()


@dataclass
class Sample:
    """One ``/readyz`` answer (status 0: the node did not answer)."""

    t: float
    node: int
    status: int
