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
    "max_health, inventory_json, stats_json, last_action_seq, version"
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
        row = cur.execute(
            f"SELECT {_COLUMNS} FROM character_profile WHERE user_id = %s "
            "ORDER BY created_at, character_id LIMIT 1",
            (user_id,),
        ).fetchone()
        if row:
            return CharacterRecord(**row), False
        new_id = str(uuid.uuid4())
        x, y = spawn(new_id)
        stats = {"max_health": max_health}
        row = cur.execute(
            f"""INSERT INTO character_profile (character_id, user_id, display_name, position_x,
                position_y, health, max_health, inventory_json, stats_json)
            VALUES (%s, %s, %s, %s, %s, %s, %s, '{{"items": []}}', %s)
            RETURNING {_COLUMNS}""",
            (new_id, user_id, display_name, x, y, max_health, max_health, psycopg.types.json.Jsonb(stats)),
        ).fetchone()
    conn.commit()
    return CharacterRecord(**row), True


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
