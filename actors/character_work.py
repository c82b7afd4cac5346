"""What the CharacterActor computes without talking to anyone: its rules state from the stored
row and back into a write, the unit of work it hands to storage, and what an accepted ability
says in its event and does to others. Pure: no actor, no I/O.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

import orjson

from actors import rules
from actors.messages import ApplyEffect, DeliverEffect
from actors.profile import Inventory, Stats, dump_checked, load_checked
from actors.world_map import ItemSpawn
from storage.postgres.actions import CharacterWrite, EventRow
from storage.postgres.characters import CharacterRecord, public_view


@dataclass(frozen=True, slots=True)
class Work:
    """One unit handed to storage: an action (``seq``) or a system event (``seq`` None)."""

    seq: int | None
    action_id: str
    action_type: str
    payload: dict[str, Any]
    changed: dict[str, Any]
    state: rules.CharacterState
    version: int
    view: dict[str, Any] | None = None  # the public view after this work (events, cache)
    effects: tuple[DeliverEffect, ...] = ()
    taken_item: ItemSpawn | None = None
    chain: int = 0  # the character's rollback generation when the work was built
    stored: dict[str, Any] | None = None  # the log row's payload when it says more than the event


def stored_payload(action_type: str, payload: dict[str, Any], changed: dict[str, Any]) -> dict[str, Any] | None:
    """The log row's payload of an action whose ack says what its event does not (None: the
    event's payload): an ability's ``cooldown_s`` and, when it changed, the inventory (private,
    so never in the event). :func:`stored_ack_state` rebuilds the ack's state from it."""
    if action_type != "ability":
        return None
    extra = {"cooldown_s": changed["cooldown_s"]}
    if "inventory" in changed:
        extra["inventory"] = changed["inventory"]
    return {**payload, **extra}


def stored_ack_state(action_type: str | None, payload: dict[str, Any] | None, limits: rules.RuleLimits) -> dict[str, Any]:
    """The ``state`` of the original ack of a stored action, from its log row (a resend whose
    answer was forgotten). The same fields the live ack's ``changed`` had: a move its tile
    (``rules.apply_move``), a chat nothing, an ability its ``cooldown_s`` and the health and
    inventory it changed (``rules.apply_ability``). Rows written before the inventory and
    cooldown were stored get the cooldown of ``limits`` and no inventory."""
    p = payload or {}
    if action_type == "move":
        return {"x": p["x"], "y": p["y"]}
    if action_type != "ability":
        return {}
    state: dict[str, Any] = {"cooldown_s": p.get("cooldown_s", float(limits.cooldowns.get(p.get("name"), 0.0)))}
    if "health" in p:
        state["health"] = p["health"]
    if "inventory" in p:
        state["inventory"] = p["inventory"]
    return state


def state_from_record(record: CharacterRecord, max_json_bytes: int) -> rules.CharacterState:
    """The rules' state of a stored character (its JSON columns checked and parsed)."""
    stats = load_checked(Stats, record.stats_json, max_json_bytes)
    inventory = load_checked(Inventory, record.inventory_json, max_json_bytes)
    return rules.CharacterState(
        character_id=record.character_id,
        x=record.x,
        y=record.y,
        health=record.health,
        max_health=record.max_health,
        inventory=tuple(inventory.items),
        stats=stats,
    )


def character_view(state: rules.CharacterState, display_name: str) -> dict[str, Any]:
    """The public view of the character in ``state``."""
    return public_view({**vars(state), "display_name": display_name})


def profile(state: rules.CharacterState, display_name: str) -> dict[str, Any]:
    """The ``welcome`` frame's character: the public view plus inventory and stats."""
    return {
        **character_view(state, display_name),
        "inventory": [i.model_dump() for i in state.inventory],
        "stats": state.stats.model_dump(),
    }


def event_row(work: Work, user_id: str) -> EventRow:
    """The durable log row of ``work``."""
    payload = work.payload if work.stored is None else work.stored
    # orjson: json.dumps with arguments builds a new encoder per call (a jsonb column, so
    # the spelling of the text does not matter, only its value).
    return EventRow(work.action_id, user_id, work.state.character_id, work.seq, work.action_type,
                    orjson.dumps(payload).decode())


def character_write(
    state: rules.CharacterState, columns: tuple[str, str], last_seq: int, version: int, owner_epoch: int = 0,
) -> CharacterWrite:
    """The row update that makes ``state`` durable as ``version`` (checked against version - 1)
    by the owner holding ``owner_epoch`` (the row must still carry it: fencing); ``columns`` are
    its inventory and stats JSON (:class:`ColumnJson`)."""
    inventory_json, stats_json = columns
    return CharacterWrite(
        state.character_id, state.x, state.y, state.health, state.max_health, inventory_json, stats_json,
        last_seq, version - 1, version, owner_epoch,
    )


class ColumnJson:
    """The inventory and stats JSON of the latest state, dumped again only when they changed
    (states share the inventory tuple and stats object until an action replaces them)."""

    def __init__(self, max_json_bytes: int) -> None:
        self.max_json_bytes = max_json_bytes
        self._cache: tuple[Any, str, Any, str] = (None, "", None, "")

    def of(self, s: rules.CharacterState) -> tuple[str, str]:
        """(inventory JSON, stats JSON) of ``s``."""
        inv, inv_json, stats, stats_json = self._cache
        if inv is not s.inventory:
            inv, inv_json = s.inventory, dump_checked(Inventory(items=list(s.inventory)), self.max_json_bytes)
        if stats is not s.stats:
            stats, stats_json = s.stats, dump_checked(s.stats, self.max_json_bytes)
        self._cache = (inv, inv_json, stats, stats_json)
        return inv_json, stats_json


def target_state(target: dict[str, Any] | None, character_id: str) -> rules.CharacterState | None:
    """The rules' state of an ability's target from the zone's view of it (None for oneself)."""
    if target is None or target["character_id"] == character_id:
        return None
    return rules.CharacterState(
        character_id=target["character_id"], x=target["x"], y=target["y"],
        health=target["health"], max_health=target["max_health"],
    )


def ability_outcome(
    plan: rules.AbilityPlan, changed: dict[str, Any], character_id: str, display_name: str
) -> tuple[dict[str, Any], tuple[DeliverEffect, ...]]:
    """The event payload of an applied ability and its effects on other characters."""
    effects = []
    payload: dict[str, Any] = {"name": plan.ability}
    for e in plan.effects:
        if isinstance(e, rules.Damage | rules.Heal):
            payload["amount"] = e.amount
            if e.target_id != character_id:
                kind = "damage" if isinstance(e, rules.Damage) else "heal"
                effects.append(DeliverEffect(e.target_id, ApplyEffect(kind, e.amount, character_id, display_name)))
        elif isinstance(e, rules.TakeItem | rules.ConsumeItem):
            payload["item_id"], payload["kind"] = e.item_id, e.kind
    if plan.target_id is not None:
        payload["target_id"] = plan.target_id
    if "health" in changed:  # the actor's own new health (effects on others come as their events)
        payload["health"] = changed["health"]
    return payload, tuple(effects)


def rolled_back(durable: rules.CharacterState, current: rules.CharacterState) -> rules.CharacterState:
    """Back to ``durable`` after a failed commit, keeping ``current``'s rate windows and
    cooldowns: a failed commit must not reset them."""
    return replace(
        durable, recent_moves=current.recent_moves, recent_chats=current.recent_chats, cooldowns=current.cooldowns,
    )


def new_action_id() -> str:
    """A random (version 4) UUID as text: ``str(uuid.uuid4())`` costs a syscall and a UUID
    object per action; ids need uniqueness, not secrecy."""
    r = random.getrandbits(128) & ~(0xF000 << 64) & ~(0xC << 60) | (0x4000 << 64) | (0x8 << 60)
    h = f"{r:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
