"""Daily range partitions of ``action_event``: created ahead of time, listed for retention."""

from __future__ import annotations

import datetime as dt
import re

import psycopg
from psycopg import sql

PARTITION_LOCK_ID = 0x74696C6568616C6D
_NAME = re.compile(r"^action_event_p(\d{8})$")


def partition_name(day: dt.date) -> str:
    """The partition of ``action_event`` that holds rows persisted on ``day`` (UTC)."""
    return f"action_event_p{day:%Y%m%d}"


def ensure_partitions(
    conn: psycopg.Connection, *, today: dt.date | None = None, days_back: int = 1, days_ahead: int = 7
) -> list[str]:
    """Create the daily partitions from ``today - days_back`` to ``today + days_ahead``.

    Returns the names created. Safe to run from several processes at once (advisory lock).
    Days older than ``days_back`` are never recreated, so retention's drops stay dropped.
    """
    today = today or dt.datetime.now(dt.UTC).date()
    created = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK_ID,))
        existing = set(list_partitions(conn))
        for offset in range(-days_back, days_ahead + 1):
            day = today + dt.timedelta(days=offset)
            if day in existing:
                continue
            create_partition(conn, day)
            created.append(partition_name(day))
    return created


def create_partition(conn: psycopg.Connection, day: dt.date) -> None:
    """Create the partition for one UTC day (no-op when it exists)."""
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF action_event "
            "FOR VALUES FROM ({}) TO ({})"
        ).format(
            sql.Identifier(partition_name(day)),
            sql.Literal(start),
            sql.Literal(start + dt.timedelta(days=1)),
        )
    )


def list_partitions(conn: psycopg.Connection) -> dict[dt.date, str]:
    """Attached daily partitions of ``action_event`` by day, oldest first."""
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'action_event'
        """
    ).fetchall()
    days = {}
    for (name,) in rows:
        m = _NAME.match(name)
        if m:
            days[dt.datetime.strptime(m.group(1), "%Y%m%d").date()] = name
    return dict(sorted(days.items()))
