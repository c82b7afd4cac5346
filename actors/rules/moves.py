"""Moves and chat: their checks, their rate limits and their effect on the state."""

from __future__ import annotations

import bisect
import math
import unicodedata
from dataclasses import dataclass, replace
from typing import Any

from actors.rules.state import HISTORY_LEN, HISTORY_S, CharacterState, Rejected, RuleLimits
from actors.vocabulary import RejectCode
from actors.world_map import WorldMap

# Bidirectional overrides/isolates: format characters that can disguise what a message says.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})


@dataclass(frozen=True, slots=True)
class MovePlan:
    """An accepted move to ``target`` (x, y), still subject to the zone's occupancy check."""

    target: tuple[int, int]


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
    # limit RuleLimits accepts (windows up to HISTORY_S, counts up to HISTORY_LEN).
    kept = times[bisect.bisect_right(times, now - HISTORY_S):] + (now,)
    return kept[-HISTORY_LEN:]


# ----------------------------------------------------------------------------------------- move


def check_move(
    state: CharacterState, dx: object, dy: object, world: WorldMap, now: float, limits: RuleLimits
) -> Rejected | MovePlan:
    """Validate one step by (dx, dy), each in -1..1 and not both 0 (8 directions)."""
    if type(dx) is not int or type(dy) is not int or dx not in (-1, 0, 1) or dy not in (-1, 0, 1):
        return Rejected(RejectCode.BAD_PAYLOAD, "dx and dy must each be -1, 0 or 1")
    if dx == 0 and dy == 0:
        return Rejected(RejectCode.BAD_PAYLOAD, "dx and dy cannot both be 0")
    if state.defeated:
        return Rejected(RejectCode.DEFEATED, "you are defeated")
    if not _rate_ok(state.recent_moves, now, limits.moves_per_second):
        return Rejected(RejectCode.TOO_FAST, f"at most {limits.moves_per_second:g} moves per second")
    tx, ty = state.x + dx, state.y + dy
    if not world.in_bounds(tx, ty):
        return Rejected(RejectCode.OUT_OF_BOUNDS, f"({tx},{ty}) is outside the map")
    if not world.is_walkable(tx, ty):
        return Rejected(RejectCode.BLOCKED, f"({tx},{ty}) is blocked")
    if dx and dy and not world.is_walkable(state.x + dx, state.y) and not world.is_walkable(
        state.x, state.y + dy
    ):
        return Rejected(RejectCode.BLOCKED, f"cannot squeeze diagonally to ({tx},{ty})")
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
        return Rejected(RejectCode.BAD_PAYLOAD, "text must be a string")
    text = text.strip()
    if not text:
        return Rejected(RejectCode.BAD_PAYLOAD, "text is empty")
    if len(text) > limits.max_chat_len:
        return Rejected(RejectCode.BAD_PAYLOAD, f"text is {len(text)} characters, limit {limits.max_chat_len}")
    for ch in text:
        if ch in _BIDI_CONTROLS or unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            return Rejected(RejectCode.BAD_PAYLOAD, f"text contains a control character U+{ord(ch):04X}")
    if state.defeated:
        return Rejected(RejectCode.DEFEATED, "you are defeated")
    if not _rate_ok(state.recent_chats, now, limits.chats_per_second):
        return Rejected(RejectCode.TOO_FAST, f"at most {limits.chats_per_second:g} messages per second")
    return text


def apply_chat(state: CharacterState, now: float) -> CharacterState:
    """Record an accepted chat for the rate limit."""
    return replace(state, recent_chats=_record(state.recent_chats, now))
