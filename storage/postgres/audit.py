"""The ``session_audit`` rows: one opened when a session starts, closed when it ends (DESIGN 2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

_OPEN = (
    "INSERT INTO session_audit (session_id, user_id, character_id, protocol_version,"
    " node_id, last_action_seq) VALUES (%s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (session_id) DO NOTHING"
)
_CLOSE = (
    "UPDATE session_audit SET ended_at = now(), end_reason = %s, reconnects = %s,"
    " last_action_seq = %s WHERE session_id = %s"
)


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
        _OPEN,
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
        _CLOSE,
        (end_reason, reconnects, last_action_seq, session_id),
    )


def write_audits(conn: psycopg.Connection, audits: Sequence[Any]) -> None:
    """Write many audit changes in one transaction, in order (an opening before its closing):
    each item has the fields of :func:`open_audit` (``ended`` false) or :func:`close_audit`
    (``ended`` true). A batch retried after a failure that may have landed does no harm: the
    opening is skipped when present, the closing is stamped again."""
    opens = [
        (a.session_id, a.user_id, a.character_id, a.protocol_version, a.node_id, a.last_action_seq)
        for a in audits if not a.ended
    ]
    closes = [(a.end_reason, a.reconnects, a.last_action_seq, a.session_id) for a in audits if a.ended]
    with conn.transaction(), conn.cursor() as cur:
        if opens:
            cur.executemany(_OPEN, opens)
        if closes:
            cur.executemany(_CLOSE, closes)
