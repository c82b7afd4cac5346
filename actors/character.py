"""The CharacterActor: the one writer of a character. Applies the game rules to in-order actions,
hands each result to the StorageActor, and answers only once the commit has landed.

``state`` runs ahead of the database (it includes work still being committed); ``durable`` is
the state of the last commit. The actor's helpers, one concern each: how it ends (idle, fenced
by a newer owner, broken, crashed) in :mod:`actors.character_ending`; the rollback chains of the
works in flight in :mod:`actors.character_chains`; one answer per seq (resends) in
:mod:`actors.character_answers`; what it computes alone in :mod:`actors.character_work`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pykka

from actors import rules
from actors.base import TilehallActor, tell_if_alive
from actors.character_answers import Answers
from actors.character_chains import Chains
from actors.character_ending import CharacterEnding
from actors.character_work import (
    ColumnJson,
    Work,
    ability_outcome,
    character_view,
    character_write,
    event_row,
    new_action_id,
    profile,
    rolled_back,
    state_from_record,
    stored_payload,
    target_state,
)
from actors.messages import (
    AbilityContext,
    ActionAnswered,
    ApplyEffect,
    AttachSession,
    CharacterAttached,
    Claim,
    DeliverEffect,
    DetachSession,
    EnterZone,
    FailNow,
    LeaveZone,
    LookupAction,
    MoveVerdict,
    Persist,
    Persisted,
    PersistFailed,
    PlaceCharacter,
    Publish,
    RequestMove,
    ResendAnswer,
    ResolveAbility,
    RespawnNow,
    ReturnItem,
    StoredAnswer,
    SubmitAction,
)
from actors.ports import FrameCodec
from actors.timers import tell_later
from actors.vocabulary import RejectCode
from actors.world_map import ItemSpawn, WorldMap
from config.settings import Settings
from storage.postgres.characters import CharacterRecord

log = logging.getLogger(__name__)

# Abilities that need the zone (a target's position, or the item on the tile) before the rules.
_ZONE_ABILITIES = frozenset({"strike", "heal", "pickup"})


class CharacterActor(CharacterEnding, TilehallActor):
    """One character in play."""

    def __init__(
        self,
        record: CharacterRecord,
        world: WorldMap,
        settings: Settings,
        storage: pykka.ActorRef,
        zone: pykka.ActorRef,
        codec: FrameCodec,
        on_stopped: Callable[[str, pykka.ActorRef], None] | None = None,
    ) -> None:
        super().__init__()
        self.character_id = record.character_id
        self.user_id = record.user_id
        self.display_name = record.display_name
        self.world = world
        self.limits = rules.RuleLimits.from_settings(settings.game)
        self.respawn_delay_s = settings.game.respawn_delay_s
        self.storage = storage
        self.zone = zone
        self.on_stopped = on_stopped
        self.codec = codec
        self.state = state_from_record(record, settings.game.max_json_bytes)
        self.durable = self.state
        self.version = record.version
        self.durable_version = record.version
        self.last_seq = record.last_action_seq  # the highest seq that arrived (answered or not)
        self.owner_epoch = record.owner_epoch  # taken by take_ownership: every write carries it
        self.chains = Chains()  # the rollback chains of the works in flight
        self.answers = Answers(codec, self.limits)  # one answer per seq
        self.defunct = False  # fenced or broken: stopping, every later message is ignored
        self.session: pykka.ActorRef | None = None
        self.session_id: str | None = None
        # The action waiting for the zone: (work id, action, target tile of a move).
        self.waiting: tuple[int, SubmitAction, tuple[int, int] | None] | None = None
        self.queue: deque[SubmitAction] = deque()
        self.inflight: dict[int, Work] = {}
        self._ids = itertools.count(1)
        self._columns = ColumnJson(settings.game.max_json_bytes)
        self.entity_id = record.character_id
        self.claimed = False  # a session is on its way (Claim): do not stop
        self.stopping = False  # stop() is queued: refuse claims
        self.debug_status = "detached"

    # ---------------------------------------------------------------- sessions

    def on_Claim(self, msg: Claim) -> bool:
        """A new session will attach: do not stop before it does. False when this actor has
        already decided to stop (its stop is queued behind the claim): start a fresh one."""
        if self.stopping:
            return False
        self.claimed = True
        return True

    def on_AttachSession(self, msg: AttachSession) -> None:
        """A session plays this character now; it gets the profile and the zone's snapshot."""
        self.claimed = False
        first = self.session is None
        self.session, self.session_id = msg.session, msg.session_id
        self.debug_status = "in play"
        tell_if_alive(msg.session, CharacterAttached(profile(self.state, self.display_name), self.last_seq))
        self.zone.tell(EnterZone(character_view(self.state, self.display_name), self.actor_ref, msg.session))
        if first and not msg.moved:  # a session moved from another node logged in there
            s = self.state
            self._persist_system(
                {"kind": "login", "x": s.x, "y": s.y, "health": s.health, "max_health": s.max_health}
            )

    def on_DetachSession(self, msg: DetachSession) -> None:
        """The session ended: a logout event (none when it moved to another node), leave the
        zone, stop once every commit landed."""
        if msg.session_id != self.session_id:
            return  # an older session, already replaced
        self.session = self.session_id = None
        self.debug_status = "leaving"
        self.zone.tell(LeaveZone(self.character_id, self.actor_ref))
        if msg.reason == "moved":  # handed over to another node: no logout, stop once landed
            return self._stop_if_done()
        self._persist_system({"kind": "logout", "reason": msg.reason})

    # ---------------------------------------------------------------- actions

    def on_SubmitAction(self, msg: SubmitAction) -> None:
        """The next action in sequence; queued while an earlier one waits for the zone. It
        counts in ``last_seq`` as it arrives, so a new session's welcome counts it."""
        self.last_seq = max(self.last_seq, msg.seq)
        self.answers.arrived(msg.seq)
        if self.waiting is not None:
            self.queue.append(msg)
        else:
            self._start(msg)

    def _start(self, msg: SubmitAction) -> None:
        now = time.monotonic()
        p = msg.payload
        if msg.action_type == "move":
            plan = rules.check_move(self.state, p["dx"], p["dy"], self.world, now, self.limits)
            if isinstance(plan, rules.Rejected):
                return self._reject(msg.seq, plan.code, plan.message)
            work_id = next(self._ids)
            self.waiting = (work_id, msg, plan.target)
            self.zone.tell(RequestMove(self.character_id, plan.target, work_id, self.actor_ref))
        elif msg.action_type == "chat":
            text = rules.check_chat(self.state, p["text"], now, self.limits)
            if isinstance(text, rules.Rejected):
                return self._reject(msg.seq, text.code, text.message)
            self.state = rules.apply_chat(self.state, now)
            self._persist(msg.seq, "chat", {"text": text}, {})
        else:
            name, target_id = p["name"], p.get("target_id")
            if name in _ZONE_ABILITIES and not (name == "heal" and target_id in (None, self.character_id)):
                work_id = next(self._ids)
                self.waiting = (work_id, msg, None)
                self.zone.tell(
                    ResolveAbility(self.character_id, name, target_id, self.state.position, work_id, self.actor_ref)
                )
            else:
                self._finish_ability(msg, None, None)

    def on_MoveVerdict(self, msg: MoveVerdict) -> None:
        """The zone granted (and reserved) the target tile, or someone stands there."""
        _, action, target = self._take_waiting(msg.work_id)
        s = self.state
        # The rules checked this step before the zone was asked; only a defeat (another
        # character's strike) or a rollback (a failed commit) can have changed things since.
        if not msg.granted or s.defeated or max(abs(target[0] - s.x), abs(target[1] - s.y)) != 1:
            if not msg.granted:
                self._reject(action.seq, RejectCode.OCCUPIED, "someone is standing there")
            elif s.defeated:
                self._reject(action.seq, RejectCode.DEFEATED, "you were defeated")
            else:
                self._reject(action.seq, RejectCode.BLOCKED, "your position changed; step again")
            self.zone.tell(PlaceCharacter(self.character_id, self.state.position))
        else:
            self.state, changed = rules.apply_move(self.state, target, time.monotonic())
            s = self.state
            payload = {"x": s.x, "y": s.y, "dx": action.payload["dx"], "dy": action.payload["dy"],
                       "health": s.health, "max_health": s.max_health}
            self._persist(action.seq, "move", payload, changed)
        self._drain()

    def on_AbilityContext(self, msg: AbilityContext) -> None:
        """The zone's view of the target and the item taken from the tile."""
        _, action, _ = self._take_waiting(msg.work_id)
        self._finish_ability(action, msg.target, msg.item)
        self._drain()

    def _finish_ability(self, action: SubmitAction, target: dict | None, item: ItemSpawn | None) -> None:
        p = action.payload
        now = time.monotonic()
        plan = rules.check_ability(
            self.state, p["name"], now, self.limits, target=target_state(target, self.character_id),
            item_here=item, item_id=p.get("item_id"),
        )
        took = isinstance(plan, rules.AbilityPlan) and any(isinstance(e, rules.TakeItem) for e in plan.effects)
        if item is not None and not took:
            self.zone.tell(ReturnItem(item))
        if isinstance(plan, rules.Rejected):
            return self._reject(action.seq, plan.code, plan.message)
        self.state, changed = rules.apply_ability(self.state, plan, now, self.limits)
        payload, effects = ability_outcome(plan, changed, self.character_id, self.display_name)
        self._persist(action.seq, "ability", payload, changed, effects=effects, taken=item if took else None,
                      stored=stored_payload("ability", payload, changed))

    def _take_waiting(self, work_id: int) -> tuple[int, SubmitAction, tuple[int, int] | None]:
        waiting, self.waiting = self.waiting, None
        if waiting is None or waiting[0] != work_id:
            raise RuntimeError(f"zone reply for work {work_id} does not match {waiting}")
        return waiting

    def _drain(self) -> None:
        while self.waiting is None and self.queue:
            self._start(self.queue.popleft())

    # ---------------------------------------------------------------- effects from others

    def on_ApplyEffect(self, msg: ApplyEffect) -> None:
        """Another character struck or healed this one: a system event (and maybe defeat). An
        effect the rules cannot apply (a negative amount from a bad peer) is logged and dropped."""
        if msg.kind not in ("damage", "heal") or not isinstance(msg.amount, int) or msg.amount < 0:
            log.warning("character %s: dropped an invalid effect %r", self.character_id, msg,
                        extra={"character_id": self.character_id})
            return
        if msg.kind == "damage":
            self.state, defeated = rules.apply_damage(self.state, msg.amount)
            self._persist_system(
                {"kind": "damage", "amount": msg.amount, "health": self.state.health, "by": msg.source_id,
                 "by_name": msg.source_name}
            )
            if defeated:
                self._persist_system({"kind": "defeated", "by": msg.source_id, "by_name": msg.source_name})
                tell_later(self.respawn_delay_s, self.actor_ref, RespawnNow())
        else:
            self.state = rules.apply_heal(self.state, msg.amount)
            self._persist_system(
                {"kind": "heal", "amount": msg.amount, "health": self.state.health, "by": msg.source_id,
                 "by_name": msg.source_name}
            )

    def on_RespawnNow(self, msg: RespawnNow) -> None:
        """Back at a spawn point with full health."""
        if not self.state.defeated:
            return
        self.state = rules.respawn(self.state, self.world.spawn_for(self.character_id))
        self.zone.tell(PlaceCharacter(self.character_id, self.state.position))
        self._persist_system({"kind": "respawn", "x": self.state.x, "y": self.state.y, "health": self.state.health})

    def on_FailNow(self, msg: FailNow) -> None:
        """Crash on purpose (tests of failure handling)."""
        raise RuntimeError(f"character {self.character_id} asked to fail")

    # ---------------------------------------------------------------- commits

    def _persist_system(self, payload: dict[str, Any]) -> None:
        self._persist(None, "system", payload, {})

    def _persist(
        self,
        seq: int | None,
        action_type: str,
        payload: dict[str, Any],
        changed: dict[str, Any],
        *,
        effects: tuple[DeliverEffect, ...] = (),
        taken: ItemSpawn | None = None,
        stored: dict[str, Any] | None = None,
    ) -> None:
        s = self.state
        columns = self._columns.of(s)
        self.version += 1
        work_id, view = next(self._ids), character_view(s, self.display_name)
        work = Work(seq, new_action_id(), action_type, payload, changed, s, self.version, view, effects, taken,
                    self.chains.current, stored)
        self.inflight[work_id] = work
        write = character_write(s, columns, self.last_seq, self.version, self.owner_epoch)
        self.storage.tell(Persist(work_id, (event_row(work, self.user_id),), write, self.actor_ref, view, chain=work.chain))

    def on_Persisted(self, msg: Persisted) -> None:
        """The commit landed: answer the session, publish the event, deliver effects."""
        work = self.inflight.pop(msg.work_id)
        self.durable, self.durable_version = work.state, work.version
        body = self.codec.event_body_json(
            work.action_id, self.character_id, self.display_name, work.action_type, work.payload, msg.persisted_at
        )
        told = None if work.seq is None else self._answer(
            work.seq, self.codec.ack_json(work.seq, work.action_id, msg.persisted_at, work.changed), event_body=body)
        self.zone.tell(Publish(body, work.view, answered=told))
        for effect in work.effects:
            self.zone.tell(effect)
        self._stop_if_done()

    def on_PersistFailed(self, msg: PersistFailed) -> None:
        """The commit failed. Fenced: another owner has the character, stop (:meth:`_fenced`).
        A conflict of the current chain: a bug, stop (:meth:`_broken`). Otherwise reject the
        action with its code; the first failure of a chain rolls back to the durable state and
        starts a new chain, and the works of the old chain that come back failed after it are
        rejected with that first failure's code (they were built on it)."""
        work = self.inflight.pop(msg.work_id)
        if msg.fenced:
            return self._fenced(work, msg)
        broken = self.chains.failure_of(work)
        if broken is None and msg.code == RejectCode.CONFLICT:
            return self._broken(work, msg)
        code, message = broken if broken is not None else (msg.code, msg.message)
        if work.seq is not None:
            self._reject(work.seq, code, message)
        if work.taken_item is not None:
            self.zone.tell(ReturnItem(work.taken_item))
        if broken is None:
            self.chains.break_chain(work, code, message)
            log.warning("character %s: commit failed (%s), rolled back to version %s; chain %s → %s",
                        self.character_id, code, self.durable_version, work.chain, self.chains.current,
                        extra={"character_id": self.character_id})
            self.state = rolled_back(self.durable, self.state)
            self.version = self.durable_version
            self.zone.tell(PlaceCharacter(self.character_id, self.state.position))
        self.chains.forget_broken(self.inflight.values())
        self._stop_if_done()

    # ---------------------------------------------------------------- answers

    def _reject(self, seq: int, code: str, message: str) -> None:
        self._answer(seq, self.answers.reject_frame(seq, code, message), code)

    def _answer(self, seq: int, frame: str, reject_code: str | None = None, event_body: str | None = None) -> str | None:
        """The one answer of ``seq``: remembered for resends, sent to the current session (with
        the action's own event, if given); returns the urn of the session told, if any."""
        self.answers.record(seq, frame)
        if self.session is not None and tell_if_alive(self.session, ActionAnswered(seq, frame, reject_code, event_body)):
            return self.session.actor_urn
        return None

    def on_ResendAnswer(self, msg: ResendAnswer) -> None:
        """The client resent ``seq`` (≤ the last): nothing while it is in flight or queued (its
        answer goes to the current session when it lands), the remembered frame again, or else
        the StorageActor looks it up in the log and replies here (:meth:`on_StoredAnswer`)."""
        if self.answers.is_open(msg.seq):
            return
        frame = self.answers.remembered(msg.seq)
        if frame is not None:
            if self.session is not None:
                tell_if_alive(self.session, ActionAnswered(msg.seq, frame))
            return
        tell_if_alive(self.storage, LookupAction(self.character_id, msg.seq, self.actor_ref))

    def on_StoredAnswer(self, msg: StoredAnswer) -> None:
        """A forgotten seq from the log: stored → its original ack, the state rebuilt from the
        stored row; not stored (rejected, its answer forgotten) → reject ``unavailable``."""
        self._answer(msg.seq, *self.answers.stored_frame(msg))

    def describe(self) -> dict[str, Any]:
        """Character detail for /debug/actors."""
        s = self.state
        return {
            "character_id": self.character_id,
            "user_id": self.user_id,
            "display_name": self.display_name,
            "position": [s.x, s.y],
            "health": s.health,
            "last_action_seq": self.last_seq,
            "version": self.version,
            "durable_version": self.durable_version,
            "owner_epoch": self.owner_epoch,
            "chain": self.chains.current,
            "in_flight": len(self.inflight),
            "session_id": self.session_id,
        }

