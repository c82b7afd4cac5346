"""The PostgreSQL server itself, as an operator or the benchmark sees it: settings, checkpoint
counts, whole databases created and dropped, and the faults a fault-injection run inflicts on
it (``tilehall nemesis``: terminated backends, a row held locked, the tables read back)."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql

# PostgreSQL 17 moved the checkpoint counters from pg_stat_bgwriter to pg_stat_checkpointer.
_CHECKPOINTER_SINCE = 170000


def server_settings(conn: psycopg.Connection, names: Iterable[str]) -> dict[str, str]:
    """``SHOW name`` for each of ``names``."""
    return {
        name: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0]
        for name in names
    }


def checkpoint_count(conn: psycopg.Connection) -> int:
    """Checkpoints the server has run (timed plus requested) since its statistics were reset."""
    if conn.info.server_version >= _CHECKPOINTER_SINCE:
        query = "SELECT num_timed, num_requested FROM pg_stat_checkpointer"
    else:
        query = "SELECT checkpoints_timed, checkpoints_req FROM pg_stat_bgwriter"
    return sum(conn.execute(query).fetchone())


def recreate_database(conn: psycopg.Connection, name: str) -> None:
    """Drop ``name`` (ending its sessions) and create it empty; ``conn`` must be in autocommit."""
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def create_database(conn: psycopg.Connection, name: str) -> None:
    """Create the empty database ``name``; ``conn`` must be in autocommit."""
    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(conn: psycopg.Connection, name: str) -> None:
    """Drop ``name`` if it exists, ending its sessions; ``conn`` must be in autocommit."""
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def terminate_backends(conn: psycopg.Connection, database: str, spare_application: str) -> int:
    """``pg_terminate_backend`` of every connection to ``database`` but ours and those whose
    ``application_name`` is ``spare_application``; returns how many."""
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid() AND application_name <> %s",
        (database, spare_application),
    ).fetchall()
    return len(rows)


def lock_character_row(conn: psycopg.Connection, character_id: str) -> None:
    """Take the character's row lock (``FOR UPDATE``) in ``conn``'s open transaction."""
    conn.execute("SELECT 1 FROM character_profile WHERE character_id = %s FOR UPDATE", (character_id,))


def characters_and_log(conn: psycopg.Connection) -> tuple[list[tuple], list[tuple]]:
    """Every character row (id, user, x, y, health, max_health, inventory, last seq) and the
    whole action log in commit order (action_id, user, character, seq, type, payload)."""
    chars = conn.execute(
        "SELECT character_id::text, user_id, position_x, position_y, health, max_health,"
        " inventory_json, last_action_seq FROM character_profile").fetchall()
    events = conn.execute(
        "SELECT action_id::text, user_id, character_id::text, sequence_number,"
        " action_type::text, payload_json FROM action_event"
        " ORDER BY persisted_at, tableoid, ctid").fetchall()
    return chars, events
