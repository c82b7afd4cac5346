"""The nemesis's checker on small hand-made runs (each defect flagged, a clean run passes),
the schedule's determinism, the crash hook, and one short real run end to end (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.nemesis.checker import check, fold
from bench.nemesis.faults import KINDS, schedule
from bench.nemesis.records import Answer, Fault, PlayerLog, Sample, Transmission

CID = "00000000-0000-4000-8000-000000000001"
ROOT = Path(__file__).resolve().parent.parent


def _clean() -> tuple[list[PlayerLog], list[Fault], list[Sample], dict]:
    """One player, two acked moves and one acked action after the faults; a row that folds."""
    p = PlayerLog("p0", "u0", 0, character_id=CID)
    moves = [(1, 1, 0, "a1", 1.0), (2, 0, 1, "a2", 2.0), (3, 1, 0, "a3", 20.0)]
    events = [{"action_id": "s0", "user_id": "u0", "character_id": CID, "seq": None, "action_type": "system",
               "payload": {"kind": "login", "x": 5, "y": 5, "health": 100, "max_health": 100}}]
    x, y = 5, 5
    for seq, dx, dy, aid, t in moves:
        x, y = x + dx, y + dy
        p.sent[seq] = [("move", {"dx": dx, "dy": dy})]
        p.transmissions.append(Transmission(t, seq, 0, True, answered_at=t + 0.01, answer="ack"))
        p.answers.append(Answer(t + 0.01, seq, "ack", CID, aid))
        events.append({"action_id": aid, "user_id": "u0", "character_id": CID, "seq": seq, "action_type": "move",
                       "payload": {"x": x, "y": y, "dx": dx, "dy": dy, "health": 100, "max_health": 100}})
    row = {"character_id": CID, "user_id": "u0", "x": x, "y": y, "health": 100, "max_health": 100,
           "inventory": [], "last_action_seq": 3}
    faults = [Fault(5.0, "tcp_drop", "p0", end=5.0)]
    samples = [Sample(1.0, 0, 200), Sample(10.0, 0, 200)]
    return [p], faults, samples, {"characters": [row], "events": events}


def _check(players, faults, samples, db):
    return check(players, faults, samples, db, t_clear=10.0, end=25.0)


def test_a_clean_run_passes() -> None:
    assert _check(*_clean()) == []


def test_a_lost_ack_is_flagged() -> None:
    players, faults, samples, db = _clean()
    db["events"] = [e for e in db["events"] if e["action_id"] != "a2"]
    db["events"][-1]["payload"]["x"] = db["characters"][0]["x"]  # keep the fold consistent
    db["events"][-1]["payload"]["y"] = db["characters"][0]["y"]
    found = _check(players, faults, samples, db)
    assert [v.check for v in found] == ["ack_not_stored"]
    assert found[0].player == "p0" and found[0].seq == 2


def test_a_seq_stored_twice_and_an_unsent_row_are_flagged() -> None:
    players, faults, samples, db = _clean()
    twin = dict(db["events"][2], action_id="b2", payload={**db["events"][2]["payload"], "dx": -1})
    db["events"].insert(3, twin)
    checks = sorted(v.check for v in _check(players, faults, samples, db))
    assert checks == ["row_not_sent", "seq_stored_twice"]


def test_a_reject_of_a_stored_action_is_flagged() -> None:
    players, faults, samples, db = _clean()
    players[0].answers.append(Answer(2.5, 2, "reject", CID, code="unavailable", action=("move", {"dx": 0, "dy": 1})))
    players[0].answers.append(Answer(2.6, 2, "reject", CID, code="duplicate", action=("move", {"dx": 0, "dy": 1})))
    checks = sorted(v.check for v in _check(players, faults, samples, db))
    assert checks == ["reject_but_stored", "reject_but_stored", "two_answers"]


def test_a_seq_renumbered_after_a_welcome_is_a_new_action() -> None:
    """A reject, then a welcome whose last_action_seq is below that seq: the number goes to the
    next action, whose ack (and stored row) is no second answer of the rejected one."""
    players, faults, samples, db = _clean()
    ack = next(a for a in players[0].answers if a.seq == 2)
    players[0].answers.remove(ack)
    players[0].answers += [
        Answer(1.5, 2, "reject", CID, code="unavailable", action=("move", {"dx": 0, "dy": 1})),
        Answer(ack.t, 2, "ack", CID, ack.action_id, action=("move", {"dx": 0, "dy": 1}), gen=1),
    ]
    assert _check(players, faults, samples, db) == []
    players[0].answers[-1].gen = 0  # the same generation: one action, two answers
    assert sorted(v.check for v in _check(players, faults, samples, db)) == ["reject_but_stored", "two_answers"]


def test_a_row_that_does_not_fold_is_flagged() -> None:
    players, faults, samples, db = _clean()
    db["characters"][0]["y"] += 1
    found = _check(players, faults, samples, db)
    assert [v.check for v in found] == ["row_not_fold"]
    assert "y row" in found[0].detail


def test_a_double_answer_is_flagged_with_the_fault_before_it() -> None:
    players, faults, samples, db = _clean()
    players[0].answers += [Answer(5.5, 2, "reject", CID, code="duplicate"), Answer(5.6, 2, "ack", CID, "a2")]
    found = _check(players, faults, samples, db)
    assert [v.check for v in found] == ["two_answers"]
    assert found[0].seq == 2 and found[0].t == 5.5 and found[0].fault is faults[0]
    assert found[0].detail == "ack a2 then reject duplicate"


def test_the_same_ack_twice_is_fine() -> None:
    players, faults, samples, db = _clean()
    players[0].answers.append(Answer(6.0, 2, "ack", CID, "a2"))
    assert _check(players, faults, samples, db) == []


def test_conflict_readiness_and_recovery_are_flagged() -> None:
    players, faults, samples, db = _clean()
    p = players[0]
    p.answers.append(Answer(7.0, 9, "reject", CID, code="conflict"))
    p.transmissions.append(Transmission(8.0, 10, 0, True, answered_at=16.0, answer="unavailable"))
    samples += [Sample(14.0, 0, 200), Sample(2.005, 0, 503)]
    p.transmissions[-2].t, p.transmissions[-2].answered_at = 20.0, 27.0  # the action after the faults: slow
    checks = sorted(v.check for v in _check(players, faults, samples, db))
    assert checks == ["conflict_single_owner", "readyz_200_while_stalled", "readyz_503_while_committing",
                      "slow_after_faults"]


def test_two_characters_of_one_user_are_flagged() -> None:
    players, faults, samples, db = _clean()
    db["characters"].append({**db["characters"][0], "character_id": CID[:-1] + "2", "x": 5, "y": 5})
    db["events"].append({**db["events"][0], "character_id": CID[:-1] + "2", "action_id": "s9"})
    assert [v.check for v in _check(players, faults, samples, db)] == ["two_characters"]


def test_fold_follows_health_and_inventory() -> None:
    events = [
        {"seq": None, "action_type": "system", "payload": {"kind": "login", "x": 1, "y": 2, "health": 50}},
        {"seq": 1, "action_type": "ability", "payload": {"name": "pickup", "item_id": "item-1", "kind": "potion"}},
        {"seq": None, "action_type": "system", "payload": {"kind": "damage", "amount": 5, "health": 45}},
        {"seq": 2, "action_type": "ability", "payload": {"name": "use_item", "item_id": "item-1", "health": 70}},
    ]
    assert fold(events) == {"inventory": [], "x": 1, "y": 2, "health": 70}


def test_the_schedule_is_seeded_and_covers_every_kind() -> None:
    a = schedule(42, 90, 6, 2, list(KINDS))
    assert [f.describe() for f in a] == [f.describe() for f in schedule(42, 90, 6, 2, list(KINDS))]
    assert {f.kind for f in a} == set(KINDS)
    assert all(5 <= f.t <= 70 for f in a)
    assert [f.describe() for f in a] != [f.describe() for f in schedule(43, 90, 6, 2, list(KINDS))]


def test_the_crash_hook_exists_only_when_enabled() -> None:
    from config.settings import load_settings
    from transport.http_faults import fault_routes

    assert fault_routes(load_settings(), {}) == []
    assert [r[0] for r in fault_routes(load_settings(debug={"fault_hooks": True}), {})] == ["/debug/faults/crash"]


@pytest.mark.slow
def test_a_short_real_run_reports_everything() -> None:
    """25 s, one node, a few faults: the tool runs end to end and prints a complete report
    (today's code may have violations; this asserts the report, not a clean run)."""
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "transport.cli", "nemesis", "--seed", "3", "--duration", "25", "--players", "3",
         "--faults", "tcp_drop,reload,pg_terminate,crash_actor"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    out = proc.stdout
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    for part in ("nemesis seed 3", "schedule:", "faults injected:", "actions:", "/readyz samples:",
                 "violations:", "RESULT:"):
        assert part in out, out[-3000:]
    assert "RUN BROKEN" not in out
    assert ("RESULT: PASS" in out) == (proc.returncode == 0)
