"""The words of protocol v1 that more than one room speaks: close codes, error codes, kick
reasons, reject codes and system event kinds (DESIGN section 4, docs/protocol.md).

Actors, transport and tests import them from here, and the web client's copy
(``webclient/js/vocabulary.js``) is generated from this module and checked by a test, so a code
is written once. Nothing here does I/O.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

CLIENT_FRAME_TYPES = ("hello", "resume", "action", "ping", "reauth", "logout")
CLIENT_ACTION_TYPES = ("move", "chat", "ability")
EVENT_ACTION_TYPES = ("move", "chat", "ability", "system")


class CloseCode(IntEnum):
    """WebSocket close codes of protocol v1."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY = 1008
    TOO_LARGE = 1009
    INTERNAL = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    VERSION_MISMATCH = 4000
    BAD_TOKEN = 4001
    TOKEN_EXPIRED = 4002
    CHARACTER_NOT_OWNED = 4003
    RECONNECT_INVALID = 4004
    IDLE_TIMEOUT = 4008
    SESSION_REPLACED = 4009
    KICKED_BY_OPERATOR = 4010
    TOO_MANY = 4029


class ErrorCode(StrEnum):
    """``error.code`` values; :data:`ERROR_CLOSE_CODES` says which close follows a fatal one."""

    BAD_FRAME = "bad_frame"
    HELLO_REQUIRED = "hello_required"
    UNEXPECTED_FRAME = "unexpected_frame"
    VERSION_MISMATCH = "version_mismatch"
    BAD_TOKEN = "bad_token"
    TOKEN_EXPIRED = "token_expired"
    CHARACTER_NOT_OWNED = "character_not_owned"
    RECONNECT_INVALID = "reconnect_invalid"
    IDLE_TIMEOUT = "idle_timeout"
    TOO_MANY_FRAMES = "too_many_frames"
    TOO_MANY_RECONNECTS = "too_many_reconnects"
    FRAME_TOO_LARGE = "frame_too_large"
    MALFORMED_BUDGET = "too_many_bad_frames"
    SERVER_FULL = "server_full"
    RATE_LIMITED = "rate_limited"  # too many logins from this address (auth.login_rate_per_minute)
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class KickReason(StrEnum):
    """``kicked.reason`` values: the server ends a session that did nothing wrong."""

    SESSION_REPLACED = "session_replaced"
    SHUTDOWN = "shutdown"
    LOGOUT = "logout"
    NODE_DRAINING = "node_draining"  # this server is restarting: resume at once (elsewhere)
    OPERATOR = "operator"  # an operator ended the session from the console (no automatic resume)


# The close that follows an error/kick with this code when it ends the session. bad_frame and
# unexpected_frame end a session only before it is active; afterwards they are answered and
# counted, and past the malformed budget the server sends too_many_bad_frames instead.
# unavailable ends a session only during hello/resume (an action gets reject "unavailable").
ERROR_CLOSE_CODES: dict[str, CloseCode] = {
    ErrorCode.BAD_FRAME: CloseCode.POLICY,
    ErrorCode.UNEXPECTED_FRAME: CloseCode.POLICY,
    ErrorCode.UNAVAILABLE: CloseCode.INTERNAL,
    ErrorCode.HELLO_REQUIRED: CloseCode.POLICY,
    ErrorCode.VERSION_MISMATCH: CloseCode.VERSION_MISMATCH,
    ErrorCode.BAD_TOKEN: CloseCode.BAD_TOKEN,
    ErrorCode.TOKEN_EXPIRED: CloseCode.TOKEN_EXPIRED,
    ErrorCode.CHARACTER_NOT_OWNED: CloseCode.CHARACTER_NOT_OWNED,
    ErrorCode.RECONNECT_INVALID: CloseCode.RECONNECT_INVALID,
    ErrorCode.IDLE_TIMEOUT: CloseCode.IDLE_TIMEOUT,
    ErrorCode.TOO_MANY_FRAMES: CloseCode.TOO_MANY,
    ErrorCode.TOO_MANY_RECONNECTS: CloseCode.TOO_MANY,
    ErrorCode.FRAME_TOO_LARGE: CloseCode.TOO_LARGE,
    ErrorCode.MALFORMED_BUDGET: CloseCode.POLICY,
    ErrorCode.SERVER_FULL: CloseCode.TRY_AGAIN_LATER,
    ErrorCode.RATE_LIMITED: CloseCode.TOO_MANY,
    ErrorCode.INTERNAL: CloseCode.INTERNAL,
    KickReason.SESSION_REPLACED: CloseCode.SESSION_REPLACED,
    KickReason.SHUTDOWN: CloseCode.GOING_AWAY,
    KickReason.LOGOUT: CloseCode.NORMAL,
    KickReason.NODE_DRAINING: CloseCode.SERVICE_RESTART,
    KickReason.OPERATOR: CloseCode.KICKED_BY_OPERATOR,
}


class RejectCode(StrEnum):
    """``reject.code`` values: the action was not stored, and why."""

    BAD_PAYLOAD = "bad_payload"
    BAD_FRAME = "bad_frame"
    DEFEATED = "defeated"
    TOO_FAST = "too_fast"
    OUT_OF_BOUNDS = "out_of_bounds"
    BLOCKED = "blocked"
    OCCUPIED = "occupied"
    UNKNOWN_ABILITY = "unknown_ability"
    COOLDOWN = "cooldown"
    NO_TARGET = "no_target"
    OUT_OF_RANGE = "out_of_range"
    NO_ITEM = "no_item"
    INVENTORY_FULL = "inventory_full"
    NOT_USABLE = "not_usable"
    UNAVAILABLE = "unavailable"
    CONFLICT = "conflict"


class Feature(StrEnum):
    """Protocol v1 additions a client asks for in ``hello``/``resume`` ``features``; a client
    that does not ask gets the plain frames."""

    EVENTS = "events"  # consecutive events of one write go out as one ``events`` frame
    ACK_EVENT = "ack_event"  # the ack carries the action's own event; no separate event frame


SYSTEM_EVENT_KINDS = (
    "login",
    "logout",
    "defeated",
    "respawn",
    "damage",
    "heal",
    "in_view",
    "out_of_view",
    "item_spawned",
    "announcement",
)
"""``payload.kind`` of a ``system`` event."""
