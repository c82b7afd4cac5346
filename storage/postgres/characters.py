"""CharacterProfile rows: load, create on first login, and the public view of a character."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row


class CharacterNotOwned(Exception):
    """The character does not exist or belongs to another user (the two are not told apart)."""


@dataclass(frozen=True)
class CharacterRecord:
    """One ``character_profile`` row as loaded."""

    character_id: str
    user_id: str
    display_name: str
    x: int
    y: int
    health: int
    max_health: int
    inventory_json: Any
    stats_json: Any
    last_action_seq: int
    version: int
    owner_epoch: int = 0  # bumped by every take_ownership: the current owner's epoch


PUBLIC_FIELDS = ("character_id", "display_name", "x", "y", "health", "max_health")
"""What any node, observer or ``GET /api/characters/{id}`` may show of a character (nothing
private: no user id, inventory or stats)."""


def public_view(source: Any) -> dict[str, Any]:
    """The public fields of a character, from a mapping or an object with those attributes
    (a KeyError/AttributeError when one is missing)."""
    if isinstance(source, dict):
        return {k: source[k] for k in PUBLIC_FIELDS}
    return {k: getattr(source, k) for k in PUBLIC_FIELDS}


_COLUMNS = (
    "character_id::text, user_id, display_name, position_x AS x, position_y AS y, health, "
    "max_health, inventory_json, stats_json, last_action_seq, version, owner_epoch"
)


def load_character(conn: psycopg.Connection, character_id: str) -> CharacterRecord | None:
    """The character row, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_COLUMNS} FROM character_profile WHERE character_id = %s", (character_id,)
        ).fetchone()
    return CharacterRecord(**row) if row else None


def load_or_create_character(
    conn: psycopg.Connection,
    user_id: str,
    display_name: str,
    character_id: str | None,
    spawn: Any,
    max_health: int,
) -> tuple[CharacterRecord, bool]:
    """The user's character (``character_id`` or their first one), created on first login.

    ``spawn(character_id) -> (x, y)`` places a new character. Returns (record, created).
    Raises :class:`CharacterNotOwned` for an id that is not one of this user's characters.
    """
    if character_id is not None:
        try:
            uuid.UUID(character_id)
        except ValueError:
            raise CharacterNotOwned(character_id) from None
        record = load_character(conn, character_id)
        if record is None or record.user_id != user_id:
            raise CharacterNotOwned(character_id)
        return record, False
    with conn.cursor(row_factory=dict_row) as cur:
        row = _first_of(cur, user_id)
        if row:
            conn.commit()
            return CharacterRecord(**row), False
        new_id = str(uuid.uuid4())
        x, y = spawn(new_id)
        stats = {"max_health": max_health}
        # Two first logins at once both get here: the partial unique index on (user_id) WHERE
        # is_first lets one INSERT through; the other waits for it, does nothing, and reads it.
        created = cur.execute(
            f"""INSERT INTO character_profile (character_id, user_id, display_name, position_x,
                position_y, health, max_health, inventory_json, stats_json, is_first)
            VALUES (%s, %s, %s, %s, %s, %s, %s, '{{"items": []}}', %s, true)
            ON CONFLICT (user_id) WHERE is_first DO NOTHING
            RETURNING {_COLUMNS}""",
            (new_id, user_id, display_name, x, y, max_health, max_health, psycopg.types.json.Jsonb(stats)),
        ).fetchone()
        row = created or _first_of(cur, user_id)
    conn.commit()
    if row is None:  # the winner's row vanished between its commit and our read
        raise CharacterNotOwned(user_id)
    return CharacterRecord(**row), created is not None


def _first_of(cur: psycopg.Cursor, user_id: str) -> dict[str, Any] | None:
    return cur.execute(
        f"SELECT {_COLUMNS} FROM character_profile WHERE user_id = %s "
        "ORDER BY is_first DESC, created_at, character_id LIMIT 1",
        (user_id,),
    ).fetchone()


def take_ownership(conn: psycopg.Connection, character_id: str) -> CharacterRecord | None:
    """Become the character's only writer: bump ``owner_epoch`` and return the row (None when
    there is no such character), committed.

    One statement: it waits for the row lock (bounded by the connection's ``lock_timeout``), so
    the record it returns is the row after the previous owner's last commit, and any later write
    of that owner carries the old epoch and is fenced by :func:`~storage.postgres.actions.commit_batch`.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"UPDATE character_profile SET owner_epoch = owner_epoch + 1 WHERE character_id = %s "
            f"RETURNING {_COLUMNS}",
            (character_id,),
        ).fetchone()
    conn.commit()
    return CharacterRecord(**row) if row else None


def seed_characters(conn: psycopg.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """COPY new characters in bulk (the benchmark's players) and commit. Each row is
    (character_id, user_id, display_name, x, y, health, max_health, stats_json text)."""
    with conn.cursor() as cur, cur.copy(
        "COPY character_profile (character_id, user_id, display_name, position_x,"
        " position_y, health, max_health, stats_json) FROM STDIN"
    ) as copy:
        for row in rows:
            copy.write_row(row)
    conn.commit()
