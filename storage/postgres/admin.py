"""The PostgreSQL server itself, as an operator or the benchmark sees it: settings, checkpoint
counts, whole databases created and dropped."""

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
