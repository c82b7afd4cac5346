"""The game rules of v1: pure functions, no I/O and no clock (``now`` is passed in, in seconds).

Each ``check_*`` function returns either a :class:`Rejected` (nothing happens, the client gets
``reject {code, message}``) or the plan of what would happen; the matching ``apply_*`` function
turns a plan into the character's new (immutable) state plus ``changed``, the fields the ack
reports. Occupancy of a target tile is not checked here: the zone actor knows who stands where
and rejects with ``occupied``.

Reject codes (module constants):

- ``bad_payload`` (BAD_PAYLOAD): malformed arguments (dx/dy not in -1..1 or both 0; chat text
  empty, too long, not a string or with control characters);
- ``defeated`` (DEFEATED): the character has 0 health and can do nothing until it respawns;
- ``too_fast`` (TOO_FAST): more moves or chats in the rate window than the limit allows;
- ``out_of_bounds`` (OUT_OF_BOUNDS): the move leaves the map;
- ``blocked`` (BLOCKED): the target tile is in the collision layer, or a diagonal step would
  squeeze between two blocked tiles (no slipping through a diagonal gap in a wall);
- ``occupied`` (OCCUPIED): used by the zone actor, another character stands there;
- ``unknown_ability`` (UNKNOWN_ABILITY): not one of strike, heal, pickup, use_item;
- ``cooldown`` (COOLDOWN): the ability is not ready yet;
- ``no_target`` (NO_TARGET): strike without a living target other than oneself, or heal aimed
  at a defeated character;
- ``out_of_range`` (OUT_OF_RANGE): the target is not adjacent (Chebyshev distance > 1);
- ``no_item`` (NO_ITEM): nothing to pick up on this tile, or the item is not in the inventory;
- ``inventory_full`` (INVENTORY_FULL): pickup with a full inventory;
- ``not_usable`` (NOT_USABLE): use_item on an item that has no use (a gem).

Rates: a limit of ``r`` per second allows ``n = max(1, floor(r))`` actions in any window of
``n / r`` seconds, half-open (8/s: 8 moves in any 1 s, the 9th exactly 1 s after the 1st;
0.5/s: one per 2 s). Only accepted actions count.
"""

from __future__ import annotations

import bisect
import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from actors.profile import MAX_INVENTORY_ITEMS, InventoryItem, Stats
from actors.world_map import ItemSpawn, WorldMap

BAD_PAYLOAD = "bad_payload"
DEFEATED = "defeated"
TOO_FAST = "too_fast"
OUT_OF_BOUNDS = "out_of_bounds"
BLOCKED = "blocked"
OCCUPIED = "occupied"
UNKNOWN_ABILITY = "unknown_ability"
COOLDOWN = "cooldown"
NO_TARGET = "no_target"
OUT_OF_RANGE = "out_of_range"
NO_ITEM = "no_item"
INVENTORY_FULL = "inventory_full"
NOT_USABLE = "not_usable"

ABILITIES = ("strike", "heal", "pickup", "use_item")

_DEFAULT_COOLDOWNS = MappingProxyType(
    {"strike": 0.8, "heal": 3.0, "pickup": 0.25, "use_item": 1.0}
)
# Bidirectional overrides/isolates: format characters that can disguise what a message says.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})
_HISTORY_S = 60.0
_HISTORY_LEN = 256


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
            if not (1 / _HISTORY_S <= rate <= _HISTORY_LEN):
                raise ValueError(f"{name} must be within {1 / _HISTORY_S:g}..{_HISTORY_LEN}")
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


@dataclass(frozen=True, slots=True)
class MovePlan:
    """An accepted move to ``target`` (x, y), still subject to the zone's occupancy check."""

    target: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Damage:
    """Effect: ``target_id`` loses ``amount`` health."""

    target_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class Heal:
    """Effect: ``target_id`` gains ``amount`` health (up to its max)."""

    target_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class TakeItem:
    """Effect: the map item ``item_id`` leaves the map and enters the actor's inventory."""

    item_id: str
    kind: str


@dataclass(frozen=True, slots=True)
class ConsumeItem:
    """Effect: ``item_id`` leaves the actor's inventory (used up)."""

    item_id: str
    kind: str


Effect = Damage | Heal | TakeItem | ConsumeItem


@dataclass(frozen=True, slots=True)
class AbilityPlan:
    """An accepted ability: its name, the target (if any) and the effects in order."""

    ability: str
    effects: tuple[Effect, ...]
    target_id: str | None = None


# ---------------------------------------------------------------------------------------- rates


def _rate_window(rate: float) -> tuple[int, float]:
    count = max(1, math.floor(rate))
    return count, count / rate


def _rate_ok(times: tuple[float, ...], now: float, rate: float) -> bool:
    # ``times`` ascend (monotonic clock), so bisect instead of scanning up to 256 entries.
    count, window = _rate_window(rate)
    return len(times) - bisect.bisect_right(times, now - window) < count


def _record(times: tuple[float, ...], now: float) -> tuple[float, ...]:
    # Rate-independent pruning, so apply_* need no limits: keep enough history for any
    # limit RuleLimits accepts (windows up to _HISTORY_S, counts up to _HISTORY_LEN).
    kept = times[bisect.bisect_right(times, now - _HISTORY_S):] + (now,)
    return kept[-_HISTORY_LEN:]


# ----------------------------------------------------------------------------------------- move


def check_move(
    state: CharacterState, dx: object, dy: object, world: WorldMap, now: float, limits: RuleLimits
) -> Rejected | MovePlan:
    """Validate one step by (dx, dy), each in -1..1 and not both 0 (8 directions)."""
    if type(dx) is not int or type(dy) is not int or dx not in (-1, 0, 1) or dy not in (-1, 0, 1):
        return Rejected(BAD_PAYLOAD, "dx and dy must each be -1, 0 or 1")
    if dx == 0 and dy == 0:
        return Rejected(BAD_PAYLOAD, "dx and dy cannot both be 0")
    if state.defeated:
        return Rejected(DEFEATED, "you are defeated")
    if not _rate_ok(state.recent_moves, now, limits.moves_per_second):
        return Rejected(TOO_FAST, f"at most {limits.moves_per_second:g} moves per second")
    tx, ty = state.x + dx, state.y + dy
    if not world.in_bounds(tx, ty):
        return Rejected(OUT_OF_BOUNDS, f"({tx},{ty}) is outside the map")
    if not world.is_walkable(tx, ty):
        return Rejected(BLOCKED, f"({tx},{ty}) is blocked")
    if dx and dy and not world.is_walkable(state.x + dx, state.y) and not world.is_walkable(
        state.x, state.y + dy
    ):
        return Rejected(BLOCKED, f"cannot squeeze diagonally to ({tx},{ty})")
    return MovePlan((tx, ty))


def apply_move(
    state: CharacterState, target: tuple[int, int], now: float
) -> tuple[CharacterState, dict[str, Any]]:
    """Move to ``target`` (from an accepted MovePlan); returns the new state and ``{"x", "y"}``."""
    x, y = target
    new = replace(state, x=x, y=y, recent_moves=_record(state.recent_moves, now))
    return new, {"x": x, "y": y}


# ----------------------------------------------------------------------------------------- chat


def check_chat(state: CharacterState, text: object, now: float, limits: RuleLimits) -> Rejected | str:
    """Validate chat text; returns it stripped (1..max_chat_len printable characters)."""
    if not isinstance(text, str):
        return Rejected(BAD_PAYLOAD, "text must be a string")
    text = text.strip()
    if not text:
        return Rejected(BAD_PAYLOAD, "text is empty")
    if len(text) > limits.max_chat_len:
        return Rejected(BAD_PAYLOAD, f"text is {len(text)} characters, limit {limits.max_chat_len}")
    for ch in text:
        if ch in _BIDI_CONTROLS or unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            return Rejected(BAD_PAYLOAD, f"text contains a control character U+{ord(ch):04X}")
    if state.defeated:
        return Rejected(DEFEATED, "you are defeated")
    if not _rate_ok(state.recent_chats, now, limits.chats_per_second):
        return Rejected(TOO_FAST, f"at most {limits.chats_per_second:g} messages per second")
    return text


def apply_chat(state: CharacterState, now: float) -> CharacterState:
    """Record an accepted chat for the rate limit."""
    return replace(state, recent_chats=_record(state.recent_chats, now))


# -------------------------------------------------------------------------------------- ability


def _adjacent(a: CharacterState, b: CharacterState) -> bool:
    return max(abs(a.x - b.x), abs(a.y - b.y)) <= 1


def strike_damage(attacker: Stats, target: Stats, limits: RuleLimits) -> int:
    """Damage of a strike: strength + bonus - target defense, at least 1."""
    return max(1, attacker.strength + limits.strike_bonus - target.defense)


def check_ability(
    state: CharacterState,
    name: object,
    now: float,
    limits: RuleLimits,
    *,
    target: CharacterState | None = None,
    item_here: ItemSpawn | None = None,
    item_id: str | None = None,
) -> Rejected | AbilityPlan:
    """Validate an ability. ``target`` is the character named by target_id (None if absent or
    not found), ``item_here`` the item on the actor's tile (if still there), ``item_id`` the
    inventory item for use_item."""
    if not isinstance(name, str) or name not in ABILITIES:
        return Rejected(UNKNOWN_ABILITY, f"unknown ability {name!r}; known: {', '.join(ABILITIES)}")
    if state.defeated:
        return Rejected(DEFEATED, "you are defeated")
    ready_at = state.cooldowns.get(name)
    if ready_at is not None and now < ready_at:
        return Rejected(COOLDOWN, f"{name} is ready in {ready_at - now:.2f} s")

    if name == "strike":
        if target is None or target.character_id == state.character_id:
            return Rejected(NO_TARGET, "strike needs another character as target")
        if target.defeated:
            return Rejected(NO_TARGET, "the target is already defeated")
        if not _adjacent(state, target):
            return Rejected(OUT_OF_RANGE, "the target is not next to you")
        amount = strike_damage(state.stats, target.stats, limits)
        return AbilityPlan(name, (Damage(target.character_id, amount),), target.character_id)

    if name == "heal":
        if target is None or target.character_id == state.character_id:
            return AbilityPlan(name, (Heal(state.character_id, limits.heal_amount),),
                               state.character_id)
        if target.defeated:
            return Rejected(NO_TARGET, "a defeated character cannot be healed")
        if not _adjacent(state, target):
            return Rejected(OUT_OF_RANGE, "the target is not next to you")
        return AbilityPlan(name, (Heal(target.character_id, limits.heal_amount),),
                           target.character_id)

    if name == "pickup":
        if item_here is None or (item_here.x, item_here.y) != (state.x, state.y):
            return Rejected(NO_ITEM, "there is nothing here to pick up")
        if item_id is not None and item_id != item_here.item_id:
            return Rejected(NO_ITEM, f"{item_id!r} is not here")
        if len(state.inventory) >= min(limits.max_inventory, MAX_INVENTORY_ITEMS):
            return Rejected(INVENTORY_FULL, f"inventory is full ({len(state.inventory)} items)")
        return AbilityPlan(name, (TakeItem(item_here.item_id, item_here.kind),))

    # use_item
    held = next((i for i in state.inventory if i.item_id == item_id), None)
    if item_id is None or held is None:
        return Rejected(NO_ITEM, f"{item_id!r} is not in your inventory")
    if held.kind == "potion":
        amount = limits.potion_heal
    elif held.kind == "herb":
        amount = limits.herb_heal
    else:
        return Rejected(NOT_USABLE, f"a {held.kind} cannot be used")
    return AbilityPlan(
        name,
        (ConsumeItem(held.item_id, held.kind), Heal(state.character_id, amount)),
        state.character_id,
    )


def apply_ability(
    state: CharacterState, plan: AbilityPlan, now: float, limits: RuleLimits | None = None
) -> tuple[CharacterState, dict[str, Any]]:
    """Apply a plan's effects on the acting character (cooldown, inventory, self heal).

    Effects on other characters (Damage, Heal of someone else) are for the caller to deliver
    with :func:`apply_damage` / :func:`apply_heal`. ``changed`` reports ``cooldown_s`` (seconds
    until the ability is ready again) and ``health`` / ``inventory`` when they changed.
    """
    limits = limits or RuleLimits()
    seconds = float(limits.cooldowns.get(plan.ability, 0.0))
    cooldowns = dict(state.cooldowns)
    cooldowns[plan.ability] = now + seconds
    new = replace(state, cooldowns=cooldowns)
    changed: dict[str, Any] = {"cooldown_s": seconds}
    for effect in plan.effects:
        if isinstance(effect, TakeItem):
            item = InventoryItem(item_id=effect.item_id, kind=effect.kind)
            new = replace(new, inventory=new.inventory + (item,))
            changed["inventory"] = None
        elif isinstance(effect, ConsumeItem):
            inv = list(new.inventory)
            for i, held in enumerate(inv):
                if held.item_id == effect.item_id:
                    del inv[i]
                    break
            new = replace(new, inventory=tuple(inv))
            changed["inventory"] = None
        elif isinstance(effect, Heal) and effect.target_id == state.character_id:
            new = apply_heal(new, effect.amount)
            changed["health"] = new.health
        elif isinstance(effect, Damage) and effect.target_id == state.character_id:
            new, _ = apply_damage(new, effect.amount)
            changed["health"] = new.health
    if "inventory" in changed:
        changed["inventory"] = [i.model_dump() for i in new.inventory]
    return new, changed


# --------------------------------------------------------------------------------------- health


def apply_damage(state: CharacterState, amount: int) -> tuple[CharacterState, bool]:
    """Lose ``amount`` health (floor 0). ``defeated`` is True only when this blow brought it to 0
    (then ``stats.defeats`` is incremented)."""
    if amount < 0:
        raise ValueError(f"damage must be >= 0, not {amount}")
    if state.defeated:
        return state, False
    health = max(0, min(state.health, state.max_health) - amount)
    if health > 0:
        return replace(state, health=health), False
    stats = state.stats.model_copy(update={"defeats": state.stats.defeats + 1})
    return replace(state, health=0, stats=stats), True


def apply_heal(state: CharacterState, amount: int) -> CharacterState:
    """Gain ``amount`` health up to max_health. A defeated character is not revived (it respawns)."""
    if amount < 0:
        raise ValueError(f"heal must be >= 0, not {amount}")
    if state.defeated:
        return state
    return replace(state, health=max(0, min(state.max_health, state.health + amount)))


def respawn(state: CharacterState, spawn: tuple[int, int]) -> CharacterState:
    """Back at ``spawn`` with full health; cooldowns and rate windows are reset, inventory kept."""
    x, y = spawn
    return replace(state, x=x, y=y, health=state.max_health, cooldowns={}, recent_moves=(),
                   recent_chats=())
