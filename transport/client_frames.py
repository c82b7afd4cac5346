"""Protocol v1 client frames, parsed strictly (no coercion, unknown fields refused).

:func:`parse_client_frame` is the only way into the server for a client's text frame; it
raises :class:`FrameError` naming the offending field. The prose contract is
``docs/protocol.md``; ``python -m transport.frames`` prints the JSON Schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import from_json

from actors.vocabulary import CLIENT_ACTION_TYPES, CLIENT_FRAME_TYPES, ErrorCode, Feature
from transport.frame_fields import (
    MAX_SEQ,
    UUID_PATTERN,
    ProtocolVersion,
    ReconnectTokenStr,
    Seq,
    SeqOrZero,
    ShortId,
    Token,
    UuidStr,
)
from transport.server_frames import Error, Reject

# What a client may ask for (docs/protocol.md section 4.1); each at most once.
Features = Annotated[
    list[Literal[Feature.EVENTS.value, Feature.ACK_EVENT.value]], Field(max_length=len(Feature))
]

# Longest piece of client input or field path echoed back in an error message.
_ECHO_MAX = 40
_FIELD_MAX = 100
_MESSAGE_MAX = 240


class _ClientModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class HelloFrame(_ClientModel):
    """First frame of a new session: version lock, JWT and optionally the character to play."""

    type: Literal["hello"]
    protocol_version: ProtocolVersion
    token: Token
    character_id: UuidStr | None = None
    features: Features = []


class ResumeFrame(_ClientModel):
    """First frame after a drop: resumes the session named by the reconnect token."""

    type: Literal["resume"]
    protocol_version: ProtocolVersion
    token: Token
    reconnect_token: ReconnectTokenStr
    last_event_seq: SeqOrZero
    features: Features = []


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

CLIENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(ClientFrame)


class FrameError(Exception):
    """A client frame that is not protocol v1: ``code`` is always ``bad_frame``.

    ``field`` is the dotted path of the offending field (``payload.dx``) or None for the frame
    as a whole; ``seq`` is the action's seq when it could be read, so the server can answer it
    with a ``reject`` instead of an ``error``.
    """

    code = ErrorCode.BAD_FRAME

    def __init__(
        self, field: str | None, message: str, seq: int | None = None,
        fields: tuple[str, ...] = (), frame_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.seq = seq
        self.fields = fields or ((field,) if field else ())  # every offending field
        self.frame_type = frame_type  # the frame's "type" when it could be read

    def only_token_missing(self) -> bool:
        """True for a hello/resume whose only fault is its ``token`` (missing, empty or not a
        string): that is a bad token (close 4001), not a malformed frame."""
        return self.frame_type in ("hello", "resume") and set(self.fields) == {"token"}

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
        return CLIENT_ADAPTER.validate_json(raw)
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
    fields = tuple(f for f in (_describe(e)[0] for e in errors) if f)
    return FrameError(field, _clip(message, _MESSAGE_MAX), _readable_seq(raw), fields, _readable_type(raw))


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


def _readable_type(raw: str | bytes) -> str | None:
    # Slow path, only for frames that already failed validation (and were valid JSON).
    try:
        data = from_json(raw)
    except ValueError:
        return None
    kind = data.get("type") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) and kind in CLIENT_FRAME_TYPES else None


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
