// Protocol v1's codes for the web client: generated from actors/vocabulary.py by
// `python -m transport.vocabulary_js > webclient/js/vocabulary.js`; do not edit.

// WebSocket close codes.
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  POLICY: 1008,
  TOO_LARGE: 1009,
  INTERNAL: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  VERSION_MISMATCH: 4000,
  BAD_TOKEN: 4001,
  TOKEN_EXPIRED: 4002,
  CHARACTER_NOT_OWNED: 4003,
  RECONNECT_INVALID: 4004,
  IDLE_TIMEOUT: 4008,
  SESSION_REPLACED: 4009,
  KICKED_BY_OPERATOR: 4010,
  TOO_MANY: 4029,
});

// `error.code` values.
export const ErrorCode = Object.freeze({
  BAD_FRAME: "bad_frame",
  HELLO_REQUIRED: "hello_required",
  UNEXPECTED_FRAME: "unexpected_frame",
  VERSION_MISMATCH: "version_mismatch",
  BAD_TOKEN: "bad_token",
  TOKEN_EXPIRED: "token_expired",
  CHARACTER_NOT_OWNED: "character_not_owned",
  RECONNECT_INVALID: "reconnect_invalid",
  IDLE_TIMEOUT: "idle_timeout",
  TOO_MANY_FRAMES: "too_many_frames",
  TOO_MANY_RECONNECTS: "too_many_reconnects",
  FRAME_TOO_LARGE: "frame_too_large",
  MALFORMED_BUDGET: "too_many_bad_frames",
  SERVER_FULL: "server_full",
  RATE_LIMITED: "rate_limited",
  UNAVAILABLE: "unavailable",
  INTERNAL: "internal",
});

// `kicked.reason` values.
export const KickReason = Object.freeze({
  SESSION_REPLACED: "session_replaced",
  SHUTDOWN: "shutdown",
  LOGOUT: "logout",
  NODE_DRAINING: "node_draining",
  OPERATOR: "operator",
});

// `reject.code` values.
export const RejectCode = Object.freeze({
  BAD_PAYLOAD: "bad_payload",
  BAD_FRAME: "bad_frame",
  DEFEATED: "defeated",
  TOO_FAST: "too_fast",
  OUT_OF_BOUNDS: "out_of_bounds",
  BLOCKED: "blocked",
  OCCUPIED: "occupied",
  UNKNOWN_ABILITY: "unknown_ability",
  COOLDOWN: "cooldown",
  NO_TARGET: "no_target",
  OUT_OF_RANGE: "out_of_range",
  NO_ITEM: "no_item",
  INVENTORY_FULL: "inventory_full",
  NOT_USABLE: "not_usable",
  UNAVAILABLE: "unavailable",
  CONFLICT: "conflict",
});

// `features` a client may ask for in hello/resume.
export const Feature = Object.freeze({
  EVENTS: "events",
  ACK_EVENT: "ack_event",
});

// `payload.kind` of a `system` event, by name.
export const SystemEventKind = Object.freeze({
  LOGIN: "login",
  LOGOUT: "logout",
  DEFEATED: "defeated",
  RESPAWN: "respawn",
  DAMAGE: "damage",
  HEAL: "heal",
  IN_VIEW: "in_view",
  OUT_OF_VIEW: "out_of_view",
  ITEM_SPAWNED: "item_spawned",
  ANNOUNCEMENT: "announcement",
});

export const SYSTEM_EVENT_KINDS = Object.freeze(Object.values(SystemEventKind));
