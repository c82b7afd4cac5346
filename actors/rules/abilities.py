"""Abilities (strike, heal, pickup, use_item) and what they do to health and inventory."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from actors.profile import MAX_INVENTORY_ITEMS, InventoryItem, Stats
from actors.rules.state import CharacterState, Rejected, RuleLimits
from actors.vocabulary import RejectCode
from actors.world_map import ItemSpawn

ABILITIES = ("strike", "heal", "pickup", "use_item")


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
        return Rejected(RejectCode.UNKNOWN_ABILITY, f"unknown ability {name!r}; known: {', '.join(ABILITIES)}")
    if state.defeated:
        return Rejected(RejectCode.DEFEATED, "you are defeated")
    ready_at = state.cooldowns.get(name)
    if ready_at is not None and now < ready_at:
        return Rejected(RejectCode.COOLDOWN, f"{name} is ready in {ready_at - now:.2f} s")

    if name == "strike":
        if target is None or target.character_id == state.character_id:
            return Rejected(RejectCode.NO_TARGET, "strike needs another character as target")
        if target.defeated:
            return Rejected(RejectCode.NO_TARGET, "the target is already defeated")
        if not _adjacent(state, target):
            return Rejected(RejectCode.OUT_OF_RANGE, "the target is not next to you")
        amount = strike_damage(state.stats, target.stats, limits)
        return AbilityPlan(name, (Damage(target.character_id, amount),), target.character_id)

    if name == "heal":
        if target is None or target.character_id == state.character_id:
            return AbilityPlan(name, (Heal(state.character_id, limits.heal_amount),),
                               state.character_id)
        if target.defeated:
            return Rejected(RejectCode.NO_TARGET, "a defeated character cannot be healed")
        if not _adjacent(state, target):
            return Rejected(RejectCode.OUT_OF_RANGE, "the target is not next to you")
        return AbilityPlan(name, (Heal(target.character_id, limits.heal_amount),),
                           target.character_id)

    if name == "pickup":
        if item_here is None or (item_here.x, item_here.y) != (state.x, state.y):
            return Rejected(RejectCode.NO_ITEM, "there is nothing here to pick up")
        if item_id is not None and item_id != item_here.item_id:
            return Rejected(RejectCode.NO_ITEM, f"{item_id!r} is not here")
        if len(state.inventory) >= min(limits.max_inventory, MAX_INVENTORY_ITEMS):
            return Rejected(RejectCode.INVENTORY_FULL, f"inventory is full ({len(state.inventory)} items)")
        return AbilityPlan(name, (TakeItem(item_here.item_id, item_here.kind),))

    # use_item
    held = next((i for i in state.inventory if i.item_id == item_id), None)
    if item_id is None or held is None:
        return Rejected(RejectCode.NO_ITEM, f"{item_id!r} is not in your inventory")
    if held.kind == "potion":
        amount = limits.potion_heal
    elif held.kind == "herb":
        amount = limits.herb_heal
    else:
        return Rejected(RejectCode.NOT_USABLE, f"a {held.kind} cannot be used")
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
