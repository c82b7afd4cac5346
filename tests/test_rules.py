"""Game rules: every edge as a unit test, the invariants as hypothesis properties."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import rules as R
from actors.profile import InventoryItem, Stats
from actors.rules import (
    AbilityPlan,
    CharacterState,
    ConsumeItem,
    Damage,
    Heal,
    MovePlan,
    Rejected,
    RuleLimits,
    TakeItem,
)
from actors.world_map import ItemSpawn, WorldMap, load_map

# 7x6, walls around, a pillar at (3,2), and a diagonal gap between (4,4) and (5,3).
WORLD = WorldMap.from_rows(
    [
        "#######",
        "#.....#",
        "#..#..#",
        "#....##",
        "#...#.#",
        "#######",
    ]
)
OPEN = WorldMap.from_rows(["....", "....", "....", "...."])
LIMITS = RuleLimits()


def char(cid: str = "a", x: int = 1, y: int = 1, health: int = 100, **kw) -> CharacterState:
    return CharacterState(cid, x, y, health, kw.pop("max_health", 100), **kw)


def code(result: object) -> str | None:
    return result.code if isinstance(result, Rejected) else None


# -------------------------------------------------------------------------------------- moves


@pytest.mark.parametrize("dx,dy", [(1, 0), (0, 1), (1, 1)])
def test_move_ok(dx: int, dy: int) -> None:
    plan = R.check_move(char(), dx, dy, WORLD, 0.0, LIMITS)
    assert plan == MovePlan((1 + dx, 1 + dy))
    new, changed = R.apply_move(char(), plan.target, 0.0)
    assert (new.x, new.y) == plan.target and changed == {"x": 1 + dx, "y": 1 + dy}
    assert new.recent_moves == (0.0,)


@pytest.mark.parametrize("dx,dy", [(0, 0), (2, 0), (0, -2), (1.0, 0), (True, 0), ("1", 0), (None, 1)])
def test_move_bad_payload(dx: object, dy: object) -> None:
    assert code(R.check_move(char(x=2, y=2), dx, dy, WORLD, 0.0, LIMITS)) == R.BAD_PAYLOAD


def test_move_into_walls_and_pillar() -> None:
    assert code(R.check_move(char(), -1, 0, WORLD, 0, LIMITS)) == R.BLOCKED
    assert code(R.check_move(char(), 0, -1, WORLD, 0, LIMITS)) == R.BLOCKED
    assert code(R.check_move(char(x=2, y=2), 1, 0, WORLD, 0, LIMITS)) == R.BLOCKED
    assert code(R.check_move(char(x=2, y=1), 1, 1, WORLD, 0, LIMITS)) == R.BLOCKED


def test_diagonal_around_a_corner_is_allowed_but_not_through_a_gap() -> None:
    assert R.check_move(char(x=4, y=3), -1, -1, WORLD, 0, LIMITS) == R.Rejected(
        R.BLOCKED, "(3,2) is blocked"
    )
    assert R.check_move(char(x=2, y=1), 1, 1, OPEN, 0, LIMITS) == MovePlan((3, 2))
    # From (4,3) to (5,4): (5,3) and (4,4) are both blocked, a diagonal gap.
    res = R.check_move(char(x=4, y=3), 1, 1, WORLD, 0, LIMITS)
    assert code(res) == R.BLOCKED and "diagonal" in res.message
    # From (2,2) to (3,3): (3,2) blocked but (2,3) open, so the corner can be rounded.
    assert R.check_move(char(x=2, y=2), 1, 1, WORLD, 0, LIMITS) == MovePlan((3, 3))


def test_move_out_of_bounds() -> None:
    for x, y, dx, dy in [(0, 0, -1, 0), (0, 0, 0, -1), (3, 3, 1, 0), (3, 3, 0, 1), (3, 0, 1, -1)]:
        assert code(R.check_move(char(x=x, y=y), dx, dy, OPEN, 0, LIMITS)) == R.OUT_OF_BOUNDS


def test_move_rate_limit_window() -> None:
    limits = RuleLimits(moves_per_second=4)
    s = char(x=0, y=0)
    accepted = []
    for i in range(12):
        now = i * 0.1
        res = R.check_move(s, 1 if s.x < 3 else -1 if s.x > 0 else 1, 0, OPEN, now, limits)
        if isinstance(res, MovePlan):
            s, _ = R.apply_move(s, res.target, now)
            accepted.append(round(now, 1))
        else:
            assert res.code == R.TOO_FAST
    # 4 per any half-open 1 s window: after 0.0..0.3, the next is allowed once 0.0 is 1 s ago.
    assert accepted == [0.0, 0.1, 0.2, 0.3, 1.0, 1.1]


def test_fractional_rate() -> None:
    limits = RuleLimits(moves_per_second=0.5)
    s = char(x=0, y=0)
    s, _ = R.apply_move(s, (1, 0), 10.0)
    assert code(R.check_move(s, 1, 0, OPEN, 11.9, limits)) == R.TOO_FAST
    assert isinstance(R.check_move(s, 1, 0, OPEN, 12.01, limits), MovePlan)


def test_defeated_cannot_move_chat_or_act() -> None:
    dead = char(x=1, y=1, health=0)
    assert code(R.check_move(dead, 1, 0, OPEN, 0, LIMITS)) == R.DEFEATED
    assert code(R.check_chat(dead, "hi", 0, LIMITS)) == R.DEFEATED
    for name in R.ABILITIES:
        assert code(R.check_ability(dead, name, 0, LIMITS)) == R.DEFEATED


def test_rule_limits_validation() -> None:
    with pytest.raises(ValueError):
        RuleLimits(moves_per_second=0)
    with pytest.raises(ValueError):
        RuleLimits(chats_per_second=1000)
    with pytest.raises(ValueError):
        RuleLimits(max_chat_len=0)


def test_from_settings() -> None:
    from config.settings import GameSettings

    limits = RuleLimits.from_settings(GameSettings(moves_per_second=5, chats_per_second=1))
    assert (limits.moves_per_second, limits.chats_per_second) == (5, 1)


# --------------------------------------------------------------------------------------- chat


def test_chat_ok_and_stripped() -> None:
    assert R.check_chat(char(), "  hello  wörld 👋🏽 👩‍👩‍👧  ", 0, LIMITS) == "hello  wörld 👋🏽 👩‍👩‍👧"
    assert R.check_chat(char(), "x" * 280, 0, LIMITS) == "x" * 280


@pytest.mark.parametrize(
    "text",
    ["", "   ", "x" * 281, "a\nb", "a\tb", "bell\x07", "del\x7f", "\u202eevil", "a\u2028b", 5, None],
)
def test_chat_bad_payload(text: object) -> None:
    assert code(R.check_chat(char(), text, 0, LIMITS)) == R.BAD_PAYLOAD


def test_chat_rate() -> None:
    s = char()
    for t in (0.0, 0.1):
        assert R.check_chat(s, "hi", t, LIMITS) == "hi"
        s = R.apply_chat(s, t)
    assert code(R.check_chat(s, "hi", 0.5, LIMITS)) == R.TOO_FAST
    assert code(R.check_chat(s, "hi", 0.99, LIMITS)) == R.TOO_FAST
    assert R.check_chat(s, "hi", 1.0, LIMITS) == "hi"


# ----------------------------------------------------------------------------------- abilities


def test_unknown_ability() -> None:
    assert code(R.check_ability(char(), "fireball", 0, LIMITS)) == R.UNKNOWN_ABILITY
    assert code(R.check_ability(char(), None, 0, LIMITS)) == R.UNKNOWN_ABILITY


def test_strike_adjacent_including_diagonal() -> None:
    me = char("a", 2, 2)
    for tx, ty in [(3, 2), (1, 1), (3, 3), (2, 1)]:
        plan = R.check_ability(me, "strike", 0, LIMITS, target=char("b", tx, ty))
        assert plan == AbilityPlan("strike", (Damage("b", 10),), "b")


def test_strike_damage_from_stats() -> None:
    strong = char("a", 2, 2, stats=Stats(strength=30))
    tough = char("b", 2, 3, stats=Stats(defense=50))
    assert R.check_ability(strong, "strike", 0, LIMITS, target=char("b", 2, 3)).effects == (
        Damage("b", 30),
    )
    assert R.check_ability(char("a", 2, 2), "strike", 0, LIMITS, target=tough).effects == (
        Damage("b", 1),
    )


def test_strike_targets() -> None:
    me = char("a", 2, 2)
    assert code(R.check_ability(me, "strike", 0, LIMITS)) == R.NO_TARGET
    assert code(R.check_ability(me, "strike", 0, LIMITS, target=me)) == R.NO_TARGET
    assert code(R.check_ability(me, "strike", 0, LIMITS, target=char("b", 4, 2))) == R.OUT_OF_RANGE
    assert code(R.check_ability(me, "strike", 0, LIMITS, target=char("b", 2, 2, health=0))) == R.NO_TARGET


def test_heal_self_adjacent_remote() -> None:
    me = char("a", 2, 2, health=50)
    assert R.check_ability(me, "heal", 0, LIMITS).effects == (Heal("a", 15),)
    assert R.check_ability(me, "heal", 0, LIMITS, target=me).effects == (Heal("a", 15),)
    assert R.check_ability(me, "heal", 0, LIMITS, target=char("b", 3, 3)).effects == (Heal("b", 15),)
    assert code(R.check_ability(me, "heal", 0, LIMITS, target=char("b", 2, 4))) == R.OUT_OF_RANGE
    assert code(R.check_ability(me, "heal", 0, LIMITS, target=char("b", 2, 3, health=0))) == R.NO_TARGET


def test_self_heal_applies_and_caps() -> None:
    me = char("a", health=90)
    plan = R.check_ability(me, "heal", 5.0, LIMITS)
    new, changed = R.apply_ability(me, plan, 5.0, LIMITS)
    assert new.health == 100 and changed == {"cooldown_s": 3.0, "health": 100}
    assert new.cooldowns["heal"] == 8.0


def test_cooldowns() -> None:
    me = char("a", 2, 2)
    target = char("b", 2, 3)
    plan = R.check_ability(me, "strike", 10.0, LIMITS, target=target)
    me, changed = R.apply_ability(me, plan, 10.0, LIMITS)
    assert changed == {"cooldown_s": 0.8}
    res = R.check_ability(me, "strike", 10.79, LIMITS, target=target)
    assert code(res) == R.COOLDOWN
    assert isinstance(R.check_ability(me, "strike", 10.8, LIMITS, target=target), AbilityPlan)
    # Cooldowns are per ability.
    assert isinstance(R.check_ability(me, "heal", 10.1, LIMITS), AbilityPlan)


def test_pickup() -> None:
    potion = ItemSpawn("item-3", "potion", 2, 2)
    me = char("a", 2, 2)
    plan = R.check_ability(me, "pickup", 0, LIMITS, item_here=potion)
    assert plan.effects == (TakeItem("item-3", "potion"),)
    new, changed = R.apply_ability(me, plan, 0, LIMITS)
    assert new.inventory == (InventoryItem(item_id="item-3", kind="potion"),)
    assert changed["inventory"] == [{"item_id": "item-3", "kind": "potion"}]
    assert changed["cooldown_s"] == 0.25


def test_pickup_errors() -> None:
    potion = ItemSpawn("item-3", "potion", 2, 2)
    assert code(R.check_ability(char("a", 2, 2), "pickup", 0, LIMITS)) == R.NO_ITEM
    assert code(R.check_ability(char("a", 2, 3), "pickup", 0, LIMITS, item_here=potion)) == R.NO_ITEM
    assert (
        code(R.check_ability(char("a", 2, 2), "pickup", 0, LIMITS, item_here=potion, item_id="item-4"))
        == R.NO_ITEM
    )
    full = tuple(InventoryItem(item_id=f"i{i}", kind="gem") for i in range(64))
    assert code(R.check_ability(char("a", 2, 2, inventory=full), "pickup", 0, LIMITS, item_here=potion)) == R.INVENTORY_FULL
    small = RuleLimits(max_inventory=2)
    assert code(R.check_ability(char("a", 2, 2, inventory=full[:2]), "pickup", 0, small, item_here=potion)) == R.INVENTORY_FULL


def test_use_potion_heals_and_consumes() -> None:
    inv = (
        InventoryItem(item_id="item-1", kind="gem"),
        InventoryItem(item_id="item-2", kind="potion"),
        InventoryItem(item_id="item-5", kind="herb"),
    )
    me = char("a", health=40, inventory=inv)
    plan = R.check_ability(me, "use_item", 0, LIMITS, item_id="item-2")
    assert plan.effects == (ConsumeItem("item-2", "potion"), Heal("a", 30))
    new, changed = R.apply_ability(me, plan, 0, LIMITS)
    assert new.health == 70
    assert [i.item_id for i in new.inventory] == ["item-1", "item-5"]
    assert changed == {
        "cooldown_s": 1.0,
        "health": 70,
        "inventory": [{"item_id": "item-1", "kind": "gem"}, {"item_id": "item-5", "kind": "herb"}],
    }
    plan = R.check_ability(new, "use_item", 1.0, LIMITS, item_id="item-5")
    assert R.apply_ability(new, plan, 1.0, LIMITS)[0].health == 80
    assert code(R.check_ability(me, "use_item", 0, LIMITS, item_id="item-1")) == R.NOT_USABLE
    assert code(R.check_ability(me, "use_item", 0, LIMITS, item_id="item-9")) == R.NO_ITEM
    assert code(R.check_ability(me, "use_item", 0, LIMITS)) == R.NO_ITEM


# -------------------------------------------------------------------------------------- health


def test_damage_defeat_and_respawn() -> None:
    me = char("a", 5, 5, health=15)
    me, defeated = R.apply_damage(me, 10)
    assert (me.health, defeated) == (5, False)
    me, defeated = R.apply_damage(me, 10)
    assert (me.health, defeated, me.stats.defeats) == (0, True, 1)
    again, defeated = R.apply_damage(me, 10)
    assert (again.health, defeated, again.stats.defeats) == (0, False, 1)
    assert R.apply_heal(me, 50).health == 0  # no revival by healing
    me = replace(me, cooldowns={"strike": 99.0}, recent_moves=(1.0,))
    back = R.respawn(me, (1, 2))
    assert (back.x, back.y, back.health, back.cooldowns, back.recent_moves) == (1, 2, 100, {}, ())
    assert back.stats.defeats == 1


def test_exact_lethal_damage_and_negative_amounts() -> None:
    me, defeated = R.apply_damage(char(health=10), 10)
    assert (me.health, defeated) == (0, True)
    with pytest.raises(ValueError):
        R.apply_damage(char(), -1)
    with pytest.raises(ValueError):
        R.apply_heal(char(), -1)


def test_rules_on_default_map() -> None:
    world = load_map("default")
    x, y = world.spawn_for("hero")
    moves = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy]
    assert any(isinstance(R.check_move(char(x=x, y=y), dx, dy, world, 0, LIMITS), MovePlan) for dx, dy in moves)


# ------------------------------------------------------------------------------------ properties

steps = st.tuples(st.integers(-1, 1), st.integers(-1, 1))
times = st.lists(st.floats(0.0, 0.5, allow_nan=False), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(
    start=st.sampled_from([(x, y) for y in range(6) for x in range(7) if WORLD.is_walkable(x, y)]),
    moves=st.lists(st.tuples(steps, st.floats(0.0, 0.3, allow_nan=False)), max_size=80),
    rate=st.sampled_from([1.0, 3.0, 8.0, 20.0]),
)
def test_moves_stay_walkable_single_steps_and_rate_limited(start, moves, rate) -> None:
    limits = RuleLimits(moves_per_second=rate)
    s = char(x=start[0], y=start[1])
    now = 0.0
    accepted: list[float] = []
    for (dx, dy), gap in moves:
        now += gap
        res = R.check_move(s, dx, dy, WORLD, now, limits)
        if isinstance(res, MovePlan):
            tx, ty = res.target
            assert WORLD.in_bounds(tx, ty) and WORLD.is_walkable(tx, ty)
            assert abs(tx - s.x) <= 1 and abs(ty - s.y) <= 1 and (tx, ty) != (s.x, s.y)
            s, _ = R.apply_move(s, res.target, now)
            accepted.append(now)
        else:
            assert res.code in {R.BAD_PAYLOAD, R.BLOCKED, R.OUT_OF_BOUNDS, R.TOO_FAST}
    n = int(rate)
    for i in range(len(accepted) - n):
        assert accepted[i + n] - accepted[i] > 1.0 - 1e-9


@settings(max_examples=150, deadline=None)
@given(
    max_health=st.integers(1, 10_000),
    ops=st.lists(st.tuples(st.sampled_from(["damage", "heal", "respawn"]), st.integers(0, 20_000)),
                 max_size=40),
)
def test_health_always_in_range(max_health: int, ops) -> None:
    s = char(health=max_health, max_health=max_health)
    for op, amount in ops:
        if op == "damage":
            before = s.health
            s, defeated = R.apply_damage(s, amount)
            assert defeated == (before > 0 and s.health == 0)
        elif op == "heal":
            s = R.apply_heal(s, amount)
        else:
            s = R.respawn(s, (1, 1))
            assert s.health == max_health
        assert 0 <= s.health <= max_health


@settings(max_examples=150, deadline=None)
@given(
    attempts=st.lists(
        st.tuples(st.sampled_from(["strike", "heal", "pickup", "use_item"]),
                  st.floats(0.0, 0.6, allow_nan=False)),
        max_size=60,
    )
)
def test_cooldowns_never_bypassed(attempts) -> None:
    inv = tuple(InventoryItem(item_id=f"p{i}", kind="potion") for i in range(60))
    me = char("a", 2, 2, health=50, inventory=inv)
    other = char("b", 2, 3)
    item = ItemSpawn("item-1", "herb", 2, 2)
    last: dict[str, float] = {}
    now = 0.0
    for name, gap in attempts:
        now += gap
        res = R.check_ability(me, name, now, LIMITS, target=other, item_here=item,
                              item_id=me.inventory[0].item_id if me.inventory else None)
        if isinstance(res, AbilityPlan):
            if name in last:
                assert now - last[name] >= LIMITS.cooldowns[name]
            last[name] = now
            me, _ = R.apply_ability(me, res, now, LIMITS)
            assert 0 <= me.health <= me.max_health
        else:
            assert res.code in {R.COOLDOWN, R.INVENTORY_FULL, R.NO_ITEM}
