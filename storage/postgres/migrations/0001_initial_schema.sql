-- tilehall initial schema: character profiles, the partitioned action log, session audit.

CREATE TYPE action_type AS ENUM ('move', 'chat', 'ability', 'system');

CREATE TABLE character_profile (
    character_id    uuid PRIMARY KEY,
    user_id         text        NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    display_name    text        NOT NULL CHECK (length(display_name) BETWEEN 1 AND 32),
    position_x      integer     NOT NULL CHECK (position_x BETWEEN 0 AND 9999),
    position_y      integer     NOT NULL CHECK (position_y BETWEEN 0 AND 9999),
    health          integer     NOT NULL CHECK (health >= 0 AND health <= max_health),
    max_health      integer     NOT NULL DEFAULT 100 CHECK (max_health BETWEEN 1 AND 10000),
    inventory_json  jsonb       NOT NULL DEFAULT '{"items": []}'
                                CHECK (octet_length(inventory_json::text) <= 16384),
    stats_json      jsonb       NOT NULL DEFAULT '{}'
                                CHECK (octet_length(stats_json::text) <= 16384),
    last_action_seq bigint      NOT NULL DEFAULT 0 CHECK (last_action_seq >= 0),
    version         bigint      NOT NULL DEFAULT 0 CHECK (version >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX character_profile_user_id_idx ON character_profile (user_id);

-- Client actions carry the client's per-character sequence number; server-made `system`
-- events (login, logout, damage taken, defeat, respawn) carry none.
CREATE TABLE action_event (
    action_id       uuid        NOT NULL,
    user_id         text        NOT NULL,
    character_id    uuid        NOT NULL,
    sequence_number bigint      CHECK (sequence_number >= 1),
    action_type     action_type NOT NULL,
    payload_json    jsonb       NOT NULL,
    persisted_at    timestamptz NOT NULL,
    PRIMARY KEY (action_id, persisted_at),
    CHECK ((action_type = 'system') = (sequence_number IS NULL))
) PARTITION BY RANGE (persisted_at);
CREATE INDEX action_event_character_seq_idx ON action_event (character_id, sequence_number);
CREATE INDEX action_event_persisted_at_idx ON action_event (persisted_at);

CREATE TABLE session_audit (
    session_id       uuid PRIMARY KEY,
    user_id          text        NOT NULL,
    character_id     uuid,
    protocol_version text,
    node_id          text,
    started_at       timestamptz NOT NULL DEFAULT now(),
    ended_at         timestamptz,
    end_reason       text,
    reconnects       integer     NOT NULL DEFAULT 0,
    last_action_seq  bigint      NOT NULL DEFAULT 0
);
CREATE INDEX session_audit_user_id_idx ON session_audit (user_id, started_at);
