"""Protocol v1 server frames as pydantic models, each with ``.to_json()``.

The hot-path frames (``ack``, ``event``, ``reject``, ``pong``) also have cheaper plain-dict
builders in :mod:`transport.codec`; :func:`server_frame_json` builds the rarer ones by type.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from transport.frame_fields import IsoUtc, Seq, SeqOrZero, UuidStr


class _ServerModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> str:
        """Compact JSON text of this frame."""
        return self.model_dump_json()


class CharacterView(_ServerModel):
    """A character as others see it."""

    character_id: UuidStr
    display_name: str
    x: int
    y: int
    health: int = Field(ge=0)
    max_health: int = Field(ge=1)


class CharacterProfileView(CharacterView):
    """The player's own character: the public view plus inventory and stats."""

    inventory: list[dict[str, Any]]
    stats: dict[str, Any]


class ItemView(_ServerModel):
    """An item lying on a tile."""

    item_id: str
    kind: str
    x: int
    y: int


class WorldSnapshot(_ServerModel):
    """The map and what the character can see on it."""

    map_id: str
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    characters: list[CharacterView]
    items: list[ItemView]


class Welcome(_ServerModel):
    """Answer to ``hello``: the session is active."""

    type: Literal["welcome"] = "welcome"
    session_id: UuidStr
    server_version: str
    character: CharacterProfileView
    last_action_seq: SeqOrZero
    reconnect_token: str
    reconnect_expires_at: IsoUtc
    heartbeat_interval_ms: int = Field(ge=1)
    world: WorldSnapshot
    event_seq: SeqOrZero


class Resumed(_ServerModel):
    """Answer to ``resume``: the session is active again."""

    type: Literal["resumed"] = "resumed"
    session_id: UuidStr
    reconnect_token: str
    reconnect_expires_at: IsoUtc
    sync: Literal["delta", "snapshot"]
    replayed: int = Field(ge=0)
    world: WorldSnapshot | None = None
    event_seq: SeqOrZero




class Reject(_ServerModel):
    """Action ``seq`` was not applied and not persisted."""

    type: Literal["reject"] = "reject"
    seq: Seq
    code: str
    message: str


class Event(_ServerModel):
    """A committed action (of any character, or a system event) the session can see."""

    type: Literal["event"] = "event"
    event_seq: Seq
    action_id: UuidStr
    character_id: UuidStr
    display_name: str
    action_type: Literal["move", "chat", "ability", "system"]
    payload: dict[str, Any]
    persisted_at: IsoUtc


class Ack(_ServerModel):
    """Action ``seq`` is durable; ``state`` holds the fields it changed; ``event`` (feature
    ``ack_event``, a first answer only) is the action's own event, sent in no other frame."""

    type: Literal["ack"] = "ack"
    seq: Seq
    action_id: UuidStr
    persisted_at: IsoUtc
    state: dict[str, Any]
    event: Event | None = None

    def to_json(self) -> str:
        """Compact JSON text of this frame (no ``event`` key when there is none)."""
        return self.model_dump_json(exclude_none=self.event is None)


class Events(_ServerModel):
    """Feature ``events``: consecutive ``event`` frames of one write, in order, as one frame."""

    type: Literal["events"] = "events"
    events: list[Event] = Field(min_length=1)


class ResyncRequired(_ServerModel):
    """An action arrived with a gap; nothing was applied; resend from ``expected_seq``."""

    type: Literal["resync_required"] = "resync_required"
    expected_seq: Seq


class Pong(_ServerModel):
    """Heartbeat answer: ``t`` echoed, ``server_time`` in epoch ms."""

    type: Literal["pong"] = "pong"
    t: float
    server_time: int


class Kicked(_ServerModel):
    """The server ends the session; a close follows."""

    type: Literal["kicked"] = "kicked"
    reason: str


class Error(_ServerModel):
    """A problem with what the client sent (or failed to send); a close follows when fatal."""

    type: Literal["error"] = "error"
    code: str
    message: str


ServerFrame = Annotated[
    Welcome | Resumed | Ack | Reject | Event | Events | ResyncRequired | Pong | Kicked | Error,
    Field(discriminator="type"),
]

SERVER_ADAPTER: TypeAdapter[Any] = TypeAdapter(ServerFrame)


def parse_server_frame(raw: str | bytes) -> ServerFrame:
    """Parse a server frame (tests, the load generator); raises pydantic's ValidationError."""
    return SERVER_ADAPTER.validate_json(raw)

_SERVER_MODELS: dict[str, type[_ServerModel]] = {
    m.model_fields["type"].default: m
    for m in (Welcome, Resumed, Ack, Reject, Event, Events, ResyncRequired, Pong, Kicked, Error)
}


def server_frame_json(frame_type: str, **fields: Any) -> str:
    """Any server frame by its ``type``, validated by its model (for the rarer frames)."""
    return _SERVER_MODELS[frame_type](**fields).to_json()

