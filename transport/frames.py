"""Protocol v1 frame models: the single source of the tilehall WebSocket wire protocol.

Client frames are parsed strictly (no coercion, unknown fields refused) by
:func:`parse_client_frame`, which raises :class:`FrameError` naming the offending field.
Server frames are pydantic models with ``.to_json()``; the hot-path frames (``ack``,
``event``, ``reject``, ``pong``) also have plain-dict builders that produce the same JSON.
``python -m transport.frames`` prints the JSON Schema of both directions
(regenerate ``docs/protocol.schema.json`` with it). The prose contract is ``docs/protocol.md``.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import from_json

from actors.vocabulary import (  # noqa: F401  (re-exported: the frames speak this vocabulary)
    CLIENT_ACTION_TYPES,
    CLIENT_FRAME_TYPES,
    ERROR_CLOSE_CODES,
    EVENT_ACTION_TYPES,
    SYSTEM_EVENT_KINDS,
    CloseCode,
    ErrorCode,
    KickReason,
)

# PostgreSQL bigint: a sequence number above this could never be stored.
MAX_SEQ = 2**63 - 1

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
ISO_UTC_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"

UuidStr = Annotated[str, StringConstraints(pattern=UUID_PATTERN, to_lower=True)]
IsoUtc = Annotated[str, StringConstraints(pattern=ISO_UTC_PATTERN)]
Seq = Annotated[int, Field(ge=1, le=MAX_SEQ)]
SeqOrZero = Annotated[int, Field(ge=0, le=MAX_SEQ)]
ProtocolVersion = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=8192)]
ReconnectTokenStr = Annotated[str, StringConstraints(min_length=16, max_length=128)]
ShortId = Annotated[str, StringConstraints(min_length=1, max_length=64)]

# Longest piece of client input or field path echoed back in an error message.
_ECHO_MAX = 40
_FIELD_MAX = 100
_MESSAGE_MAX = 240


# --------------------------------------------------------------------------- client frames


class _ClientModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class HelloFrame(_ClientModel):
    """First frame of a new session: version lock, JWT and optionally the character to play."""

    type: Literal["hello"]
    protocol_version: ProtocolVersion
    token: Token
    character_id: UuidStr | None = None


class ResumeFrame(_ClientModel):
    """First frame after a drop: resumes the session named by the reconnect token."""

    type: Literal["resume"]
    protocol_version: ProtocolVersion
    token: Token
    reconnect_token: ReconnectTokenStr
    last_event_seq: SeqOrZero


class MovePayload(_ClientModel):
    """One step in one of 8 directions (0/0 passes the frame check; the rules refuse it)."""

    dx: int = Field(ge=-1, le=1)
    dy: int = Field(ge=-1, le=1)


class ChatPayload(_ClientModel):
    """A chat line; printable-character rules are applied by the game rules."""

    text: str = Field(min_length=1, max_length=280)


class AbilityPayload(_ClientModel):
    """An ability by name (``strike``, ``heal``, ``pickup``, ``use_item``, ...)."""

    name: str = Field(min_length=1, max_length=32)
    target_id: ShortId | None = None
    item_id: ShortId | None = None


class MoveAction(_ClientModel):
    """``action`` frame with ``action_type: move``."""

    type: Literal["action"]
    seq: Seq
    action_type: Literal["move"]
    payload: MovePayload


class ChatAction(_ClientModel):
    """``action`` frame with ``action_type: chat``."""

    type: Literal["action"]
    seq: Seq
    action_type: Literal["chat"]
    payload: ChatPayload


class AbilityAction(_ClientModel):
    """``action`` frame with ``action_type: ability``."""

    type: Literal["action"]
    seq: Seq
    action_type: Literal["ability"]
    payload: AbilityPayload


class PingFrame(_ClientModel):
    """Heartbeat; ``t`` is the client's clock in ms, echoed in ``pong``."""

    type: Literal["ping"]
    t: float = Field(allow_inf_nan=False)


class ReauthFrame(_ClientModel):
    """A fresh JWT of the same user, sent before the current one expires."""

    type: Literal["reauth"]
    token: Token


class LogoutFrame(_ClientModel):
    """Ends the session (kicked ``logout``, then close 1000)."""

    type: Literal["logout"]


ActionFrame = Annotated[MoveAction | ChatAction | AbilityAction, Field(discriminator="action_type")]
ClientFrame = Annotated[
    HelloFrame | ResumeFrame | ActionFrame | PingFrame | ReauthFrame | LogoutFrame,
    Field(discriminator="type"),
]

_CLIENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(ClientFrame)


class FrameError(Exception):
    """A client frame that is not protocol v1: ``code`` is always ``bad_frame``.

    ``field`` is the dotted path of the offending field (``payload.dx``) or None for the frame
    as a whole; ``seq`` is the action's seq when it could be read, so the server can answer it
    with a ``reject`` instead of an ``error``.
    """

    code = "bad_frame"

    def __init__(self, field: str | None, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.seq = seq

    def error_frame(self) -> Error:
        """The ``error`` frame that reports this problem to the client."""
        return Error(code=self.code, message=self.message)

    def reject_frame(self) -> Reject | None:
        """A ``reject`` for the action's seq, or None when no seq could be read."""
        if self.seq is None:
            return None
        return Reject(seq=self.seq, code=self.code, message=self.message)


def parse_client_frame(raw: str | bytes) -> ClientFrame:
    """Parse and validate one client text frame; raise :class:`FrameError` when it is bad."""
    try:
        return _CLIENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise _frame_error(exc, raw) from None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _frame_error(exc: ValidationError, raw: str | bytes) -> FrameError:
    errors = exc.errors(include_url=False, include_input=False)
    err = errors[0]
    etype = err["type"]
    if etype == "json_invalid":
        return FrameError(None, _clip(f"not JSON: {err['msg']}", _MESSAGE_MAX))
    field, msg = _describe(err)
    message = f"{field}: {msg}" if field else msg
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return FrameError(field, _clip(message, _MESSAGE_MAX), _readable_seq(raw))


def _describe(err: Any) -> tuple[str | None, str]:
    """The dotted field path (union tags removed) and a message that echoes little input."""
    etype = err["type"]
    loc = list(err["loc"])
    ctx = err.get("ctx") or {}
    if etype in ("union_tag_invalid", "union_tag_not_found"):
        field = str(ctx.get("discriminator", "type")).strip("'")
        path = _strip_tags(loc) + [field]
        if etype == "union_tag_not_found":
            return ".".join(path), "Field required"
        expected = CLIENT_FRAME_TYPES if field == "type" else CLIENT_ACTION_TYPES
        tag = _clip(repr(ctx.get("tag", "")), _ECHO_MAX)
        return ".".join(path), f"unknown {field} {tag}, expected one of: {', '.join(expected)}"
    path = _strip_tags(loc)
    if not path:
        return None, "a frame must be a JSON object with a \"type\""
    field = _clip(".".join(str(p) for p in path), _FIELD_MAX)
    if etype == "string_pattern_mismatch" and ctx.get("pattern") == UUID_PATTERN:
        return field, "String should be a UUID (8-4-4-4-12 hex digits)"
    return field, err["msg"]


def _strip_tags(loc: list[Any]) -> list[Any]:
    # pydantic puts the discriminator values in front of the real path: ('action', 'move', ...).
    if loc and loc[0] in CLIENT_FRAME_TYPES:
        tag = loc.pop(0)
        if tag == "action" and loc and loc[0] in CLIENT_ACTION_TYPES:
            loc.pop(0)
    return loc


def _readable_seq(raw: str | bytes) -> int | None:
    # Slow path, only for frames that already failed validation (and were valid JSON).
    try:
        data = from_json(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("type") != "action":
        return None
    seq = data.get("seq")
    if type(seq) is int and 1 <= seq <= MAX_SEQ:
        return seq
    return None


# --------------------------------------------------------------------------- server frames


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


class Ack(_ServerModel):
    """Action ``seq`` is durable; ``state`` holds the fields it changed."""

    type: Literal["ack"] = "ack"
    seq: Seq
    action_id: UuidStr
    persisted_at: IsoUtc
    state: dict[str, Any]


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
    Welcome | Resumed | Ack | Reject | Event | ResyncRequired | Pong | Kicked | Error,
    Field(discriminator="type"),
]

_SERVER_ADAPTER: TypeAdapter[Any] = TypeAdapter(ServerFrame)


def parse_server_frame(raw: str | bytes) -> ServerFrame:
    """Parse a server frame (tests, the load generator); raises pydantic's ValidationError."""
    return _SERVER_ADAPTER.validate_json(raw)


# --------------------------------------------------------------------------- hot-path builders

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def iso_utc(dt: datetime) -> str:
    """``2024-05-01T12:00:00.123456Z``: the protocol's timestamp form (aware datetimes only)."""
    if dt.tzinfo is None:
        raise ValueError("iso_utc needs an aware datetime")
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# A group commit stamps every row of a batch with one persisted_at, and each row becomes an ack
# and several events: format that timestamp once, not once per frame.
_last_ts: tuple[datetime | None, str] = (None, "")


def _ts(value: str | datetime) -> str:
    global _last_ts
    if isinstance(value, str):
        return value
    last, text = _last_ts
    if value is not last:
        text = iso_utc(value)
        _last_ts = (value, text)
    return text


def ack_json(seq: int, action_id: str, persisted_at: str | datetime, state: dict[str, Any]) -> str:
    """The ``ack`` frame's JSON, equal to ``Ack(...).to_json()`` but cheaper."""
    return _dumps(
        {
            "type": "ack",
            "seq": seq,
            "action_id": action_id,
            "persisted_at": _ts(persisted_at),
            "state": state,
        }
    )


def reject_json(seq: int, code: str, message: str) -> str:
    """The ``reject`` frame's JSON."""
    return _dumps({"type": "reject", "seq": seq, "code": code, "message": message})


def event_body_json(
    action_id: str,
    character_id: str,
    display_name: str,
    action_type: str,
    payload: dict[str, Any],
    persisted_at: str | datetime,
) -> str:
    """An ``event`` without ``type``/``event_seq``: built once, stamped per observer."""
    return _dumps(
        {
            "action_id": action_id,
            "character_id": character_id,
            "display_name": display_name,
            "action_type": action_type,
            "payload": payload,
            "persisted_at": _ts(persisted_at),
        }
    )


def stamp_event(body: str, event_seq: int) -> str:
    """The full ``event`` frame: ``body`` from :func:`event_body_json` plus this session's seq."""
    return f'{{"type":"event","event_seq":{int(event_seq)},{body[1:]}'


def event_json(
    event_seq: int,
    action_id: str,
    character_id: str,
    display_name: str,
    action_type: str,
    payload: dict[str, Any],
    persisted_at: str | datetime,
) -> str:
    """The ``event`` frame's JSON, equal to ``Event(...).to_json()`` but cheaper."""
    body = event_body_json(action_id, character_id, display_name, action_type, payload, persisted_at)
    return stamp_event(body, event_seq)


def pong_json(t: float, server_time: int) -> str:
    """The ``pong`` frame's JSON."""
    return _dumps({"type": "pong", "t": t, "server_time": server_time})


# --------------------------------------------------------------------------- JSON Schema


_SERVER_MODELS: dict[str, type[_ServerModel]] = {
    m.model_fields["type"].default: m
    for m in (Welcome, Resumed, Ack, Reject, Event, ResyncRequired, Pong, Kicked, Error)
}


def server_frame_json(frame_type: str, **fields: Any) -> str:
    """Any server frame by its ``type``, validated by its model (for the rarer frames)."""
    return _SERVER_MODELS[frame_type](**fields).to_json()


class _Codec:
    """The frame builders as one object: what the actors are handed (see actors.ports)."""

    ack_json = staticmethod(ack_json)
    reject_json = staticmethod(reject_json)
    event_body_json = staticmethod(event_body_json)
    stamp_event = staticmethod(stamp_event)
    iso_utc = staticmethod(iso_utc)
    server_frame_json = staticmethod(server_frame_json)


CODEC = _Codec()


def protocol_json_schema() -> dict[str, Any]:
    """JSON Schema of protocol v1: ``{"client": ..., "server": ...}`` (one oneOf each)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tilehall WebSocket protocol v1",
        "description": (
            "Generated from transport/frames.py by `python -m transport.frames`. "
            "Validation is stricter than JSON Schema says: 1.0 is not an integer, true is not "
            "a number. See docs/protocol.md."
        ),
        # Each direction keeps its own $defs; refs point into it from the document root.
        "client": _CLIENT_ADAPTER.json_schema(
            mode="validation", ref_template="#/client/$defs/{model}"
        ),
        "server": _SERVER_ADAPTER.json_schema(
            mode="serialization", ref_template="#/server/$defs/{model}"
        ),
    }


def main() -> None:
    """Print the protocol JSON Schema (``python -m transport.frames > docs/protocol.schema.json``)."""
    sys.stdout.write(json.dumps(protocol_json_schema(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
