"""The game rules of v1: pure functions, no I/O and no clock (``now`` is passed in, in seconds).

Each ``check_*`` function returns either a :class:`Rejected` (nothing happens, the client gets
``reject {code, message}``) or the plan of what would happen; the matching ``apply_*`` function
turns a plan into the character's new (immutable) state plus ``changed``, the fields the ack
reports. Occupancy of a target tile is not checked here: the zone actor knows who stands where
and rejects with ``occupied``.

This package is the one import point of the rules (``from actors import rules``): the state and
limits in :mod:`actors.rules.state`, moves and chat in :mod:`actors.rules.moves`, abilities and
health in :mod:`actors.rules.abilities`.

Reject codes (:class:`actors.vocabulary.RejectCode`; the module names below are its members):

- ``bad_payload`` (BAD_PAYLOAD): malformed arguments (dx/dy not in -1..1 or both 0; chat text
  empty, too long, not a string or with control characters);
- ``defeated`` (DEFEATED): the character has 0 health and can do nothing until it respawns;
- ``too_fast`` (TOO_FAST): more moves or chats in the rate window than the limit allows;
- ``out_of_bounds`` (OUT_OF_BOUNDS): the move leaves the map;
- ``blocked`` (BLOCKED): the target tile is in the collision layer, or a diagonal step would
  squeeze between two blocked tiles (no slipping through a diagonal gap in a wall);
- ``occupied`` (``RejectCode.OCCUPIED``): used by the zone actor, another character stands there;
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

from actors.rules.abilities import (
    ABILITIES,
    AbilityPlan,
    ConsumeItem,
    Damage,
    Effect,
    Heal,
    TakeItem,
    apply_ability,
    apply_damage,
    apply_heal,
    check_ability,
    respawn,
    strike_damage,
)
from actors.rules.moves import MovePlan, apply_chat, apply_move, check_chat, check_move
from actors.rules.state import CharacterState, Rejected, RuleLimits
from actors.vocabulary import RejectCode

# The rules' names for the reject codes they give (the tests speak of ``rules.TOO_FAST``).
BAD_PAYLOAD = RejectCode.BAD_PAYLOAD
DEFEATED = RejectCode.DEFEATED
TOO_FAST = RejectCode.TOO_FAST
OUT_OF_BOUNDS = RejectCode.OUT_OF_BOUNDS
BLOCKED = RejectCode.BLOCKED
UNKNOWN_ABILITY = RejectCode.UNKNOWN_ABILITY
COOLDOWN = RejectCode.COOLDOWN
NO_TARGET = RejectCode.NO_TARGET
OUT_OF_RANGE = RejectCode.OUT_OF_RANGE
NO_ITEM = RejectCode.NO_ITEM
INVENTORY_FULL = RejectCode.INVENTORY_FULL
NOT_USABLE = RejectCode.NOT_USABLE

__all__ = [
    "ABILITIES", "BAD_PAYLOAD", "BLOCKED", "COOLDOWN", "DEFEATED", "INVENTORY_FULL", "NOT_USABLE",
    "NO_ITEM", "NO_TARGET", "OUT_OF_BOUNDS", "OUT_OF_RANGE", "TOO_FAST", "UNKNOWN_ABILITY",
    "AbilityPlan", "CharacterState", "ConsumeItem", "Damage", "Effect", "Heal", "MovePlan",
    "Rejected", "RuleLimits", "TakeItem", "apply_ability", "apply_chat", "apply_damage",
    "apply_heal", "apply_move", "check_ability", "check_chat", "check_move", "respawn",
    "strike_damage",
]
