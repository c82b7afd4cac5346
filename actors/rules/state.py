"""What the rules work on: a character's state, the tunable limits, and a refusal."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from actors.profile import MAX_INVENTORY_ITEMS, InventoryItem, Stats

_DEFAULT_COOLDOWNS = MappingProxyType(
    {"strike": 0.8, "heal": 3.0, "pickup": 0.25, "use_item": 1.0}
)
# How much rate history a state keeps: enough for any limit RuleLimits accepts.
HISTORY_S = 60.0
HISTORY_LEN = 256


@dataclass(frozen=True, slots=True)
class Rejected:
    """An action refused by the rules: ``code`` for programs, ``message`` for people."""

    code: str
    message: str


@dataclass(frozen=True)
class RuleLimits:
    """Tunable numbers of the rules; build from settings with :meth:`from_settings`."""

    moves_per_second: float = 8.0
    chats_per_second: float = 2.0
    max_chat_len: int = 280
    cooldowns: Mapping[str, float] = field(default_factory=lambda: _DEFAULT_COOLDOWNS)
    strike_bonus: int = 2  # damage = max(1, strength + strike_bonus - target defense): 10 by default
    heal_amount: int = 15
    potion_heal: int = 30
    herb_heal: int = 10
    max_inventory: int = MAX_INVENTORY_ITEMS

    def __post_init__(self) -> None:
        for name in ("moves_per_second", "chats_per_second"):
            rate = getattr(self, name)
            if not (1 / HISTORY_S <= rate <= HISTORY_LEN):
                raise ValueError(f"{name} must be within {1 / HISTORY_S:g}..{HISTORY_LEN}")
        if self.max_chat_len < 1:
            raise ValueError("max_chat_len must be >= 1")

    @classmethod
    def from_settings(cls, game: Any) -> RuleLimits:
        """Limits from a ``GameSettings`` (``settings.game``); the rest keep their defaults."""
        return cls(moves_per_second=game.moves_per_second, chats_per_second=game.chats_per_second)


@dataclass(frozen=True)
class CharacterState:
    """A character as the rules see it. ``cooldowns`` maps ability -> ready-at time (never mutated)."""

    character_id: str
    x: int
    y: int
    health: int
    max_health: int
    inventory: tuple[InventoryItem, ...] = ()
    stats: Stats = field(default_factory=Stats)
    cooldowns: Mapping[str, float] = field(default_factory=dict)
    recent_moves: tuple[float, ...] = ()
    recent_chats: tuple[float, ...] = ()

    @property
    def defeated(self) -> bool:
        """True at 0 health."""
        return self.health <= 0

    @property
    def position(self) -> tuple[int, int]:
        """(x, y)."""
        return (self.x, self.y)

