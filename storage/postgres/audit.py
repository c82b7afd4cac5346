"""The ``session_audit`` rows: one opened when a session starts, closed when it ends (DESIGN 2)."""

from __future__ import annotations

import psycopg


def open_audit(
    conn: psycopg.Connection,
    *,
    session_id: str,
    user_id: str,
    character_id: str | None,
    protocol_version: str | None,
    node_id: str | None,
    last_action_seq: int,
) -> None:
    """Insert the session's audit row (a second start of the same session changes nothing)."""
    conn.execute(
        "INSERT INTO session_audit (session_id, user_id, character_id, protocol_version,"
        " node_id, last_action_seq) VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (session_id) DO NOTHING",
        (session_id, user_id, character_id, protocol_version, node_id, last_action_seq),
    )


def close_audit(
    conn: psycopg.Connection,
    *,
    session_id: str,
    end_reason: str | None,
    reconnects: int,
    last_action_seq: int,
) -> None:
    """Stamp the session's end: now, why it ended, how often it reconnected, its last seq."""
    conn.execute(
        "UPDATE session_audit SET ended_at = now(), end_reason = %s, reconnects = %s,"
        " last_action_seq = %s WHERE session_id = %s",
        (end_reason, reconnects, last_action_seq, session_id),
    )
