"""The ``action_event`` log: the group commit (many ActionEvent rows and one UPDATE per touched
character, one transaction) and the lookups of actions already stored."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True, slots=True)
class EventRow:
    """One ``action_event`` row to insert (``seq`` is None for a system event)."""

    action_id: str
    user_id: str
    character_id: str
    seq: int | None
    action_type: str
    payload_json: str


@dataclass(frozen=True, slots=True)
class CharacterWrite:
    """The state a character reaches after its events, valid only if the row is still at
    ``expected_version`` (optimistic concurrency: a second writer anywhere fails loudly)."""

    character_id: str
    x: int
    y: int
    health: int
    max_health: int
    inventory_json: str
    stats_json: str
    last_action_seq: int
    expected_version: int
    new_version: int
    owner_epoch: int = 0  # the writer's ownership epoch: the row must still carry it (fencing)


class VersionConflict(Exception):
    """Some characters' rows were not at the expected version; nothing was committed."""

    def __init__(self, character_ids: set[str]) -> None:
        super().__init__(f"version conflict for {len(character_ids)} character(s)")
        self.character_ids = character_ids


_COPY = (
    "COPY action_event (action_id, user_id, character_id, sequence_number, action_type, "
    "payload_json, persisted_at) FROM STDIN"
)

_UPDATE = """
UPDATE character_profile AS c SET
    position_x = v.x, position_y = v.y, health = v.health, max_health = v.max_health,
    inventory_json = v.inv::jsonb, stats_json = v.stats::jsonb,
    last_action_seq = GREATEST(c.last_action_seq, v.seq), version = v.new_version,
    updated_at = %(at)s
FROM unnest(%(id)s::uuid[], %(x)s::int[], %(y)s::int[], %(health)s::int[], %(max_health)s::int[],
            %(inv)s::text[], %(stats)s::text[], %(seq)s::bigint[], %(expected)s::bigint[],
            %(new_version)s::bigint[])
     AS v(id, x, y, health, max_health, inv, stats, seq, expected, new_version)
WHERE c.character_id = v.id AND c.version = v.expected
RETURNING c.character_id::text
"""


def merge_writes(writes: Sequence[CharacterWrite]) -> list[CharacterWrite]:
    """One write per character: the last state, checked against the first expected version."""
    merged: dict[str, CharacterWrite] = {}
    for w in writes:
        first = merged.get(w.character_id)
        if first is None:
            merged[w.character_id] = w
        else:
            merged[w.character_id] = CharacterWrite(
                **{**_asdict(w), "expected_version": first.expected_version}
            )
    return list(merged.values())


def _asdict(w: CharacterWrite) -> dict:
    return {name: getattr(w, name) for name in CharacterWrite.__slots__}


def commit_batch(
    conn: psycopg.Connection,
    events: Sequence[EventRow],
    writes: Sequence[CharacterWrite],
    persisted_at: dt.datetime,
) -> None:
    """Insert ``events`` (COPY) and apply ``writes`` (one UPDATE) in one transaction, then commit.

    Raises :class:`VersionConflict` (after rolling back) when any write's row has moved on.
    """
    writes = merge_writes(writes)
    with conn.transaction():
        with conn.cursor() as cur:
            if events:
                with cur.copy(_COPY) as copy:
                    for e in events:
                        copy.write_row(
                            (e.action_id, e.user_id, e.character_id, e.seq, e.action_type,
                             e.payload_json, persisted_at)
                        )
            if writes:
                cur.execute(
                    _UPDATE,
                    {
                        "at": persisted_at,
                        "id": [w.character_id for w in writes],
                        "x": [w.x for w in writes],
                        "y": [w.y for w in writes],
                        "health": [w.health for w in writes],
                        "max_health": [w.max_health for w in writes],
                        "inv": [w.inventory_json for w in writes],
                        "stats": [w.stats_json for w in writes],
                        "seq": [w.last_action_seq for w in writes],
                        "expected": [w.expected_version for w in writes],
                        "new_version": [w.new_version for w in writes],
                    },
                )
                updated = {row[0] for row in cur.fetchall()}
                missing = {w.character_id for w in writes} - updated
                if missing:
                    raise VersionConflict(missing)


@dataclass(frozen=True)
class StoredAction:
    """An action found in the durable log (to re-ack a duplicate after a restart)."""

    action_id: str
    sequence_number: int
    persisted_at: dt.datetime


def find_action(conn: psycopg.Connection, character_id: str, seq: int) -> StoredAction | None:
    """The persisted action with this character's sequence number, if any."""
    row = conn.execute(
        "SELECT action_id::text, sequence_number, persisted_at FROM action_event "
        "WHERE character_id = %s AND sequence_number = %s LIMIT 1",
        (character_id, seq),
    ).fetchone()
    return StoredAction(*row) if row else None


def action_landed(conn: psycopg.Connection, action_id: str, persisted_at: dt.datetime) -> bool:
    """True when the row of ``action_id`` persisted at ``persisted_at`` is in the log (a batch
    whose COMMIT lost its connection may still have landed)."""
    row = conn.execute(
        "SELECT 1 FROM action_event WHERE action_id = %s AND persisted_at = %s",
        (action_id, persisted_at),
    ).fetchone()
    return row is not None


def commit_stats(conn: psycopg.Connection, start: dt.datetime, end: dt.datetime) -> tuple[int, int, int]:
    """(rows, commits, action rows) persisted in [start, end): a commit is a distinct
    ``persisted_at``, an action row one with a sequence number (not a system event)."""
    return conn.execute(
        "SELECT count(*), count(DISTINCT persisted_at), count(sequence_number)"
        " FROM action_event WHERE persisted_at >= %s AND persisted_at < %s",
        (start, end),
    ).fetchone()
