"""The checker: the database and the players' records against the rules a run must keep.

Checks (each violation names the player, the seq and the last fault before it):

- ``ack_not_stored``: an ack's action_id is not in ``action_event`` (for that character and seq);
- ``reject_but_stored``: a reject for an action that is in the log
  (the same action the player had sent as that seq): a reject must mean not stored;
- ``seq_stored_twice``: one (character, seq) in the log more than once;
- ``row_not_sent``: a logged action no player sent with that seq (action type and payload);
- ``two_answers``: one (character, seq) answered with two different outcomes (a resent
  duplicate must get the *original* answer again);
- ``row_not_fold``: a character row differs from the fold of its log (position and health
  from the last event carrying them, inventory from pickups and use_item);
- ``two_characters``: a user with more than one character row (twin first logins);
- ``conflict_single_owner``: ``reject conflict`` while one node owned the character (no login
  of the same user on another node in the 30 s before);
- ``no_answer``: an action left unanswered on an open socket for 10 s;
- ``slow_after_faults`` / ``no_action_after_faults``: after the last fault is over, a player's
  next new action is not acked within 5 s (or the player never acts again);
- ``readyz_200_while_stalled``: the node answered 200 while an action (of a character whose row
  was not deliberately locked) waited over 5 s for its answer;
- ``readyz_503_while_committing``: the node answered 503 while acking actions (acks in the
  second before and in the second after the sample).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from bench.nemesis.records import Fault, PlayerLog, Sample

RECOVERY_S = 5.0
STALL_S = 5.0
NO_ANSWER_S = 10.0
CONFLICT_WINDOW_S = 30.0
UNHEALTHY = ("unavailable", "conflict", "internal", "duplicate")


@dataclass
class Violation:
    """One broken rule."""

    check: str
    player: str | None
    seq: int | None
    t: float | None
    detail: str
    fault: Fault | None = None

    def describe(self) -> str:
        """One line: check, player, seq, time, detail, the fault before it."""
        where = f"{self.player or '-'} seq {self.seq if self.seq is not None else '-'}"
        when = f"t={self.t:.1f}s" if self.t is not None else "t=?"
        before = f" | last fault before: {self.fault.describe()}" if self.fault else " | no fault before"
        return f"{self.check}: {where} {when}: {self.detail}{before}"


def check(players: list[PlayerLog], faults: list[Fault], samples: list[Sample], db: dict[str, Any],
          *, t_clear: float, end: float, locked: list[tuple[str, float, float]] | None = None,
          ) -> list[Violation]:
    """Every violation of the run. ``db`` holds ``characters`` and ``events`` (as
    :meth:`Cluster.fetch` returns them), ``t_clear`` is when the last fault was over, ``end``
    when the players stopped, ``locked`` the (character_id, start, end) of deliberately locked
    rows."""
    out: list[Violation] = []
    by_user = {p.user: p for p in players}
    ctx = _Context(players, faults)
    events = db["events"]
    stored = {e["action_id"]: e for e in events}

    for p in players:
        for a in p.answers:
            if a.kind != "ack":
                continue
            e = stored.get(a.action_id)
            if e is None or e["seq"] != a.seq or (a.character_id and e["character_id"] != a.character_id):
                found = "not in action_event" if e is None else f"stored as seq {e['seq']}"
                out.append(ctx.v("ack_not_stored", p, a.seq, a.t, f"ack {a.action_id} {found}"))

    logged = {(e["character_id"], e["seq"]): e for e in events if e["seq"] is not None}
    for p in players:
        for a in p.answers:
            e = logged.get((a.character_id, a.seq))
            later_owner = e is not None and any(
                b.kind == "ack" and b.seq == a.seq and b.gen != a.gen and b.action_id == e["action_id"]
                for b in p.answers)
            if (a.kind == "reject" and e is not None and a.action is not None
                    and not later_owner and _same_action(*a.action, e["action_type"], e["payload"])):
                out.append(ctx.v("reject_but_stored", p, a.seq, a.t,
                                 f"reject {a.code}, yet stored as {e['action_id']}"))

    seqs = Counter((e["character_id"], e["seq"]) for e in events if e["seq"] is not None)
    for (cid, seq), n in sorted(seqs.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        if n > 1:
            p = ctx.owner(cid, events, by_user)
            out.append(ctx.v("seq_stored_twice", p, seq, ctx.sent_at(p, seq), f"{n} rows for character {cid[:8]}"))

    for e in events:
        if e["seq"] is None:
            continue
        p = by_user.get(e["user_id"])
        sent = p.sent.get(e["seq"], []) if p else []
        if not any(_same_action(t, pl, e["action_type"], e["payload"]) for t, pl in sent):
            out.append(ctx.v("row_not_sent", p, e["seq"], ctx.sent_at(p, e["seq"]),
                             f"{e['action_type']} {e['payload']} (user {e['user_id']}) was never sent as this seq"))

    for p in players:
        # One action is (character, seq, generation): a welcome whose last_action_seq is below a
        # seq hands that number to a new action (the rejected one before it was not stored).
        outcomes: dict[tuple[str | None, int, int], list[Any]] = defaultdict(list)
        for a in p.answers:
            outcomes[(a.character_id, a.seq, a.gen)].append(a)
        for (_, seq, _), answers in outcomes.items():
            answers.sort(key=lambda a: a.t)
            distinct = list(dict.fromkeys(a.outcome for a in answers))
            if len(distinct) > 1:
                second = next(a for a in answers if a.outcome != distinct[0])
                out.append(ctx.v("two_answers", p, seq, second.t, " then ".join(distinct)))

    per_char = defaultdict(list)
    for e in events:
        per_char[e["character_id"]].append(e)
    for row in db["characters"]:
        diff = fold_diff(row, per_char.get(row["character_id"], []))
        if diff:
            p = by_user.get(row["user_id"])
            seq = max((e["seq"] for e in per_char.get(row["character_id"], []) if e["seq"]), default=None)
            out.append(ctx.v("row_not_fold", p, seq, None, f"character {row['character_id'][:8]}: {diff}"))

    users = Counter(row["user_id"] for row in db["characters"])
    for user, n in sorted(users.items()):
        if n > 1:
            out.append(ctx.v("two_characters", by_user.get(user), None, None, f"user {user} has {n} character rows",
                             fault=ctx.fault_on(user.removeprefix("nemesis-"))))

    for p in players:
        for a in p.answers:
            if a.code == "conflict" and not ctx.twin_elsewhere(p, a.t):
                out.append(ctx.v("conflict_single_owner", p, a.seq, a.t, "reject conflict with one owner"))

    for p in players:
        for tx in p.transmissions:
            if tx.answered_at is None:
                waited = (tx.closed_at if tx.closed_at is not None else end) - tx.t
                if waited >= NO_ANSWER_S:
                    out.append(ctx.v("no_answer", p, tx.seq, tx.t, f"unanswered for {waited:.1f} s on an open socket",
                                     cause_t=tx.t + 2.0))  # a fault just after the send stalls it too

    for p in players:
        nxt = next((tx for tx in p.transmissions if tx.first and tx.t >= t_clear), None)
        if nxt is None:
            out.append(ctx.v("no_action_after_faults", p, None, t_clear, "never acted after the faults cleared"))
        elif (nxt.answered_at is None or nxt.answered_at - nxt.t > RECOVERY_S or nxt.answer in UNHEALTHY):
            took = "no answer" if nxt.answered_at is None else f"{nxt.answer} after {nxt.answered_at - nxt.t:.1f} s"
            out.append(ctx.v("slow_after_faults", p, nxt.seq, nxt.t, f"first action after the faults: {took}"))

    out += _readiness(players, samples, locked or [], ctx)
    return out


def _readiness(players: list[PlayerLog], samples: list[Sample], locked: list[tuple[str, float, float]],
               ctx: _Context) -> list[Violation]:
    stalls: dict[int, list[tuple[float, float, PlayerLog, int, float]]] = defaultdict(list)
    acks: dict[int, list[float]] = defaultdict(list)
    for p in players:
        for tx in p.transmissions:
            done = tx.answered_at if tx.answered_at is not None else tx.closed_at
            if done is None or done - tx.t <= STALL_S:
                continue
            if any(p.character_id == cid and a <= tx.t + STALL_S and tx.t <= b for cid, a, b in locked):
                continue  # its own row is locked on purpose: only it may wait
            stalls[tx.node].append((tx.t + STALL_S, done, p, tx.seq, tx.t))
        for a in p.answers:
            if a.kind == "ack":
                acks[a.node].append(a.t)
    out: list[Violation] = []
    last: dict[tuple[int, str], float] = {}
    runs: dict[tuple[int, str], tuple[Violation, float, int]] = {}  # the open run of samples
    for s in sorted(samples, key=lambda s: s.t):
        kind, cause = None, None
        if s.status == 200:
            hit = next((x for x in stalls[s.node] if x[0] <= s.t <= x[1]), None)
            if hit is not None:
                kind, player, seq, cause = "readyz_200_while_stalled", hit[2], hit[3], hit[4] + 2.0
                detail = (f"node{s.node} /readyz 200 while seq {hit[3]} of {hit[2].name} waited "
                          f"(sent at {hit[4]:.1f}s)")
        elif (s.status == 503 and any(s.t - 1.0 <= t <= s.t for t in acks[s.node])
              and any(s.t <= t <= s.t + 1.0 for t in acks[s.node])
              and not ctx.during(s.t, "redis_outage")):
            # Redis down is unready by DESIGN section 7 (ready = PostgreSQL *and* Redis
            # reachable; docs/decisions.md), though the node still commits: not a violation.
            kind, player, seq = "readyz_503_while_committing", None, None
            detail = f"node{s.node} /readyz 503 while it acked actions"
        if kind is None:
            continue
        key = (s.node, kind)
        if key in last and s.t - last[key] < 2.0:  # one violation per run of samples
            last[key] = s.t
            v, start, n = runs[key]
            runs[key] = (v, start, n + 1)
            continue
        last[key] = s.t
        v = ctx.v(kind, player, seq, s.t, detail, cause_t=cause)
        runs[key] = (v, s.t, 1)
        out.append(v)
    for key, (v, _start, n) in runs.items():
        if n > 1:
            v.detail += f" ({n} samples to t={last[key]:.1f}s)"
    return out


class _Context:
    """Looks up the fault before a violation and who owns what."""

    def __init__(self, players: list[PlayerLog], faults: list[Fault]) -> None:
        self.players = players
        self.faults = sorted(faults, key=lambda f: f.t)

    def v(self, check: str, p: PlayerLog | None, seq: int | None, t: float | None, detail: str,
          fault: Fault | None = None, cause_t: float | None = None) -> Violation:
        """A violation; its fault is the last one before ``cause_t`` (default ``t``)."""
        cause_t = t if cause_t is None else cause_t
        if fault is None and cause_t is not None:
            fault = self.fault_before(cause_t, p.name if p else None)
        return Violation(check, p.name if p else None, seq, t, detail, fault)

    def fault_before(self, t: float, player: str | None) -> Fault | None:
        before = [f for f in self.faults if f.t <= t]
        mine = [f for f in before if f.target == player]
        if mine and t - mine[-1].t < 30.0:
            return mine[-1]
        return before[-1] if before else None

    def during(self, t: float, kind: str) -> bool:
        return any(f.kind == kind and f.t <= t <= (f.end if f.end is not None else f.t) for f in self.faults)

    def fault_on(self, target: str) -> Fault | None:
        return next((f for f in self.faults if f.target == target), None)

    def twin_elsewhere(self, p: PlayerLog, t: float) -> bool:
        return any(f.kind == "twin_login" and f.target == p.name and f.params.get("nodes") == "two"
                   and 0 <= t - f.t <= CONFLICT_WINDOW_S for f in self.faults)

    @staticmethod
    def owner(cid: str, events: list[dict], by_user: dict[str, PlayerLog]) -> PlayerLog | None:
        user = next((e["user_id"] for e in events if e["character_id"] == cid), None)
        return by_user.get(user) if user else None

    @staticmethod
    def sent_at(p: PlayerLog | None, seq: int) -> float | None:
        if p is None:
            return None
        # The last send: a stored twin comes from a resend more often than from the first send.
        return max((tx.t for tx in p.transmissions if tx.seq == seq), default=None)


def _same_action(sent_type: str, sent: dict, stored_type: str, stored: dict) -> bool:
    if sent_type != stored_type:
        return False
    if sent_type == "move":
        return (sent.get("dx"), sent.get("dy")) == (stored.get("dx"), stored.get("dy"))
    if sent_type == "chat":
        return sent.get("text") == stored.get("text")
    return sent.get("name") == stored.get("name")


def fold(events: list[dict]) -> dict[str, Any]:
    """The state the log says a character is in: position and health from the last event that
    carries them; inventory item ids from pickups minus use_item. Fields no event carries are
    absent (the log says nothing about them)."""
    state: dict[str, Any] = {"inventory": []}
    for e in events:
        p = e["payload"] or {}
        for k in ("x", "y", "health", "max_health"):
            if k in p and (e["action_type"] != "ability" or k == "health"):
                state[k] = p[k]
        if e["action_type"] == "ability" and "item_id" in p:
            if p.get("name") == "pickup":
                state["inventory"] = [*state["inventory"], p["item_id"]]
            elif p.get("name") == "use_item" and p["item_id"] in state["inventory"]:
                inv = list(state["inventory"])
                inv.remove(p["item_id"])
                state["inventory"] = inv
    return state


def fold_diff(row: dict[str, Any], events: list[dict]) -> str:
    """How the row differs from the fold of its log ("" when it does not)."""
    want = fold(events)
    diffs = [f"{k} row {row[k]} log {v}" for k, v in want.items() if k in row and row[k] != v]
    top = max((e["seq"] for e in events if e["seq"] is not None), default=0)
    if row.get("last_action_seq", top) < top:
        diffs.append(f"last_action_seq row {row['last_action_seq']} < logged seq {top}")
    return ", ".join(diffs)
