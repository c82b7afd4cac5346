"""Every message the actors exchange, one small frozen dataclass each.

Read top to bottom it is the action path: the WebSocket handler tells the SessionActor, which
tells the CharacterActor, which consults the ZoneActor and hands work to the StorageActor; the
commit's outcome flows back to the CharacterActor, which answers the session and publishes the
event through the zone to the observers' sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pykka

from actors.world_map import ItemSpawn
from storage.postgres.actions import CharacterWrite, EventRow

# ------------------------------------------------------------------ to the SessionActor


@dataclass(frozen=True, slots=True)
class StartSession:
    """Begin: attach to the character and enter the zone, then send ``welcome``."""


@dataclass(frozen=True, slots=True)
class ClientAction:
    """An ``action`` frame from the client (already validated), received at ``received_at``."""

    seq: int
    action_type: str
    payload: dict[str, Any]
    received_at: float


@dataclass(frozen=True, slots=True)
class MalformedAction:
    """An ``action`` frame that failed validation but whose ``seq`` could be read."""

    seq: int
    message: str


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The socket of ``connection`` closed without a logout: keep the session for a while."""

    connection: Any


@dataclass(frozen=True, slots=True)
class Resume:
    """A ``resume`` arrived on ``connection``: replay events after ``last_event_seq``."""

    connection: Any
    last_event_seq: int
    reconnect_token: str
    reconnect_expires_at: float


@dataclass(frozen=True, slots=True)
class Park:
    """Hand this session over (drain, or another node resumes it): let the in-flight actions
    land (bounded), write the session's state through the node, close 1012, stop."""


@dataclass(frozen=True, slots=True)
class ParkWritten:
    """From the node: the parked state is in Redis (``ok``) or could not be written."""

    ok: bool


@dataclass(frozen=True, slots=True)
class Logout:
    """The player logged out: end the session (close 1000)."""


@dataclass(frozen=True, slots=True)
class Kick:
    """End the session now: send ``kicked``/``error`` with ``reason`` and close with ``code``."""

    reason: str
    code: int
    message: str = ""
    kicked: bool = True


@dataclass(frozen=True, slots=True)
class ReconnectWindowOver:
    """Timer: the reconnect window of the drop numbered ``drop`` has passed."""

    drop: int


@dataclass(frozen=True, slots=True)
class CharacterAttached:
    """From the character: its profile (a CharacterProfileView dict) and last accepted seq."""

    profile: dict[str, Any]
    last_action_seq: int


@dataclass(frozen=True, slots=True)
class WorldSnapshotReady:
    """From the zone: what this session's character can see now (a WorldSnapshot dict)."""

    world: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ActionAnswered:
    """From the character: the ``ack`` (``reject_code`` None) or ``reject`` frame for ``seq``;
    a fresh ack brings its own event (``event_body``, as DeliverEvent's): the zone skips it."""

    seq: int
    frame_json: str
    reject_code: str | None = None
    event_body: str | None = None


@dataclass(frozen=True, slots=True)
class DeliverEvent:
    """From the zone: an observed event (its JSON without ``event_seq``)."""

    body_json: str


# ------------------------------------------------------------------ to the CharacterActor


@dataclass(frozen=True, slots=True)
class AttachSession:
    """``session`` now plays this character (a newer session replaces an older one);
    ``moved``: a session handed over from another node (no login event)."""

    session: pykka.ActorRef
    session_id: str
    moved: bool = False


@dataclass(frozen=True, slots=True)
class ResendAnswer:
    """From the session: the client resent ``seq`` (≤ the last seq): answer it once more with
    its original answer, or not at all while it is still in flight."""

    seq: int


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """From storage: a resent ``seq`` looked up in the durable log. ``action_id`` None: it was
    never stored; else its ``action_type`` and ``payload`` rebuild the original ack's state."""

    seq: int
    action_id: str | None
    persisted_at: Any = None
    action_type: str | None = None
    payload: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """A new session is about to attach: stay in play until it does (ask; answers True).

    A character with no session stops itself once its last commit landed; without a claim the
    node could hand a new session an actor that stops a moment later."""


@dataclass(frozen=True, slots=True)
class DetachSession:
    """Session ``session_id`` ended: log out (a system event) and leave the zone."""

    session_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class SubmitAction:
    """The next action of this character, in sequence (the session checked the seq)."""

    seq: int
    action_type: str
    payload: dict[str, Any]
    received_at: float


@dataclass(frozen=True, slots=True)
class MoveVerdict:
    """From the zone: may work ``work_id`` step onto its target tile?"""

    work_id: int
    granted: bool


@dataclass(frozen=True, slots=True)
class AbilityContext:
    """From the zone: the target's view and the item taken from the tile (pickup), if any."""

    work_id: int
    target: dict[str, Any] | None
    item: ItemSpawn | None


@dataclass(frozen=True, slots=True)
class ApplyEffect:
    """Another character's ability touches this one: ``kind`` damage|heal by ``amount``."""

    kind: str
    amount: int
    source_id: str
    source_name: str


@dataclass(frozen=True, slots=True)
class RespawnNow:
    """Timer: a defeated character comes back."""


@dataclass(frozen=True, slots=True)
class Persisted:
    """From storage: work ``work_id`` committed at ``persisted_at``."""

    work_id: int
    persisted_at: Any


@dataclass(frozen=True, slots=True)
class PersistFailed:
    """From storage: work ``work_id`` did not commit (``code`` unavailable or conflict).

    ``fenced``: another owner took the character (a newer ownership epoch in the row); this
    actor is stale and must stop without retrying."""

    work_id: int
    code: str
    message: str
    fenced: bool = False


@dataclass(frozen=True, slots=True)
class FailNow:
    """Test hook: raise inside the actor (proves crash handling)."""


# ------------------------------------------------------------------ to the ZoneActor


@dataclass(frozen=True, slots=True)
class EnterZone:
    """A character comes into the zone; reply WorldSnapshotReady to ``session``."""

    view: dict[str, Any]
    character: pykka.ActorRef
    session: pykka.ActorRef


@dataclass(frozen=True, slots=True)
class LeaveZone:
    """A character leaves the zone (its tile becomes free). With ``character`` set, only if that
    actor is the member (a stale actor must not remove the character's new actor)."""

    character_id: str
    character: pykka.ActorRef | None = None


@dataclass(frozen=True, slots=True)
class RequestMove:
    """May ``character_id`` step from its tile to ``target``? Reply MoveVerdict."""

    character_id: str
    target: tuple[int, int]
    work_id: int
    reply_to: pykka.ActorRef


@dataclass(frozen=True, slots=True)
class ResolveAbility:
    """Look up the target (and, for pickup, take the item on the tile). Reply AbilityContext."""

    character_id: str
    name: str
    target_id: str | None
    position: tuple[int, int]
    work_id: int
    reply_to: pykka.ActorRef


@dataclass(frozen=True, slots=True)
class ReturnItem:
    """A pickup did not commit: the item lies on the map again."""

    item: ItemSpawn


@dataclass(frozen=True, slots=True)
class RespawnItem:
    """Timer: a picked-up item appears again at its map position. ``pickup`` numbers the
    pickup that set the timer (0: a respawn of an item another node held)."""

    item: ItemSpawn
    pickup: int = 0


@dataclass(frozen=True, slots=True)
class PlaceCharacter:
    """The character's durable position is ``position`` (after a failed move or a respawn)."""

    character_id: str
    position: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Publish:
    """A committed event: update the character's view, deliver to the sessions that see it
    (but not to the session ``answered``, an actor urn: it got the event with the ack)."""

    body_json: str
    view: dict[str, Any]
    include_self: bool = True
    answered: str | None = None


@dataclass(frozen=True, slots=True)
class DeliverEffect:
    """Forward an ability's effect to ``target_id``'s character actor."""

    target_id: str
    effect: ApplyEffect


@dataclass(frozen=True, slots=True)
class FromPeer:
    """A message from the same zone on another node (see ``storage.relay.zone_relay``)."""

    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RosterTick:
    """Time to tell the other nodes who is here, and to forget nodes that went quiet."""


@dataclass(frozen=True, slots=True)
class Announce:
    """An operator's message: an ``announcement`` system event to every session of this zone
    (the other nodes' too); the reply (to an ask) is how many sessions of this node it reached."""

    text: str


@dataclass(frozen=True, slots=True)
class SnapshotFor:
    """Reply WorldSnapshotReady to ``session`` (a resume that needs a fresh snapshot)."""

    character_id: str
    session: pykka.ActorRef


# ------------------------------------------------------------------ to the StorageActor


@dataclass(frozen=True, slots=True)
class Persist:
    """Commit ``events`` and the character ``write``; tell ``reply_to`` Persisted/PersistFailed."""

    work_id: int
    events: tuple[EventRow, ...]
    write: CharacterWrite | None
    reply_to: pykka.ActorRef
    cache_view: dict[str, Any] | None = None  # the character's public view, for the cache
    chain: int = 0  # the character's rollback generation: a failure fails the rest of its chain


@dataclass(frozen=True, slots=True)
class LookupAction:
    """Find ``seq`` of ``character_id`` in the log; reply StoredAnswer to ``reply_to`` (the
    character actor, which outlives its sessions)."""

    character_id: str
    seq: int
    reply_to: pykka.ActorRef


@dataclass(frozen=True, slots=True)
class AuditSession:
    """Write the session_audit row (insert at start, update at end)."""

    session_id: str
    user_id: str
    character_id: str | None
    protocol_version: str | None = None
    node_id: str | None = None
    ended: bool = False
    end_reason: str | None = None
    reconnects: int = 0
    last_action_seq: int = 0


@dataclass(frozen=True, slots=True)
class Flush:
    """Commit everything buffered now (graceful shutdown asks this and waits)."""
