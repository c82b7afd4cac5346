"""The ``action_event`` log: the group commit (many ActionEvent rows and one UPDATE per touched
character, one transaction) and the lookups of actions already stored."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


class BatchRefused(Exception):
    """Some characters' works cannot commit; nothing was committed (the transaction rolled
    back). The caller fails or parks those characters' works and commits the rest again."""

    reason = "refused"

    def __init__(self, character_ids: set[str]) -> None:
        super().__init__(f"{self.reason} for {len(character_ids)} character(s)")
        self.character_ids = set(character_ids)


class VersionConflict(BatchRefused):
    """Some characters' rows were not at the expected version (same epoch: a defence)."""

    reason = "version conflict"


class Fenced(BatchRefused):
    """Some writes carried an ownership epoch the row no longer has: another owner took the
    character. ``epochs[character_id] = (write's epoch, row's epoch)``."""

    reason = "fenced"

    def __init__(self, epochs: dict[str, tuple[int, int]]) -> None:
        super().__init__(set(epochs))
        self.epochs = epochs


class RowsBusy(BatchRefused):
    """Some characters' rows are locked by another transaction (``FOR UPDATE SKIP LOCKED``
    skipped them): their works must wait, the others need not."""

    reason = "row locked elsewhere"


class SeqAlreadyStored(BatchRefused):
    """Some (character, seq) pairs are already in ``action_seq`` (or twice in the batch):
    PostgreSQL refused to store a seq twice. ``seqs[character_id]`` = the seqs refused."""

    reason = "seq already stored"

    def __init__(self, seqs: dict[str, set[int]]) -> None:
        super().__init__(set(seqs))
        self.seqs = seqs


class CommitOutcomeUnknown(Exception):
    """The connection broke while the COMMIT was on its way: the batch may have landed or not.
    ``backend_pid`` is the server process that ran it (once it is gone it cannot commit any more)."""

    def __init__(self, backend_pid: int) -> None:
        super().__init__(f"connection to backend {backend_pid} lost during COMMIT")
        self.backend_pid = backend_pid


_COPY = (
    "COPY action_event (action_id, user_id, character_id, sequence_number, action_type, "
    "payload_json, persisted_at) FROM STDIN"
)

_COPY_SEQ = "COPY action_seq (character_id, sequence_number, action_id, persisted_at) FROM STDIN"

_LOCK = """
SELECT character_id::text FROM character_profile
WHERE character_id = ANY(%s::uuid[])
ORDER BY character_id
FOR UPDATE SKIP LOCKED
"""

_UPDATE = """
UPDATE character_profile AS c SET
    position_x = v.x, position_y = v.y, health = v.health, max_health = v.max_health,
    inventory_json = v.inv::jsonb, stats_json = v.stats::jsonb,
    last_action_seq = GREATEST(c.last_action_seq, v.seq), version = v.new_version,
    updated_at = %(at)s
FROM unnest(%(id)s::uuid[], %(x)s::int[], %(y)s::int[], %(health)s::int[], %(max_health)s::int[],
            %(inv)s::text[], %(stats)s::text[], %(seq)s::bigint[], %(expected)s::bigint[],
            %(new_version)s::bigint[], %(epoch)s::bigint[])
     AS v(id, x, y, health, max_health, inv, stats, seq, expected, new_version, epoch)
WHERE c.character_id = v.id AND c.owner_epoch = v.epoch AND c.version = v.expected
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
    """Insert ``events`` (COPY, their seqs into ``action_seq`` too) and apply ``writes`` (one
    UPDATE) in one transaction, then commit.

    The written characters' rows are locked first without waiting (``FOR UPDATE SKIP LOCKED``).
    Raises, after rolling back, a :class:`BatchRefused` naming the characters that cannot commit:
    :class:`RowsBusy` (row locked by another transaction), :class:`Fenced` (the row's
    ``owner_epoch`` is not the write's), :class:`VersionConflict` (same epoch, other version),
    :class:`SeqAlreadyStored` (a seq PostgreSQL already holds). The connection lost during the
    COMMIT itself raises :class:`CommitOutcomeUnknown` (it may have landed: look it up with
    :func:`action_landed`). Any other error is PostgreSQL's, and nothing landed.
    """
    writes = merge_writes(writes)
    in_batch = _seqs_twice_in(events)
    if in_batch:
        raise SeqAlreadyStored(in_batch)
    backend_pid = conn.info.backend_pid
    sent = False
    try:
        with conn.transaction(), conn.cursor() as cur:
            if writes:
                _lock_rows(cur, [w.character_id for w in writes])
            if events:
                _copy_events(cur, events, persisted_at)
            if writes:
                _update_rows(cur, writes, persisted_at)
            sent = True  # what follows is the COMMIT
    except psycopg.OperationalError as exc:
        if sent and conn.broken:
            raise CommitOutcomeUnknown(backend_pid) from exc
        raise
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.table_name != "action_seq":
            raise
        stored = _seqs_stored(conn, events)
        if not stored:
            raise  # gone again (pruned meanwhile): PostgreSQL's error, reported as such
        raise SeqAlreadyStored(stored) from exc


def _seqs_twice_in(events: Sequence[EventRow]) -> dict[str, set[int]]:
    seen: set[tuple[str, int]] = set()
    twice: dict[str, set[int]] = {}
    for e in events:
        if e.seq is None:
            continue
        key = (e.character_id, e.seq)
        if key in seen:
            twice.setdefault(e.character_id, set()).add(e.seq)
        seen.add(key)
    return twice


def _lock_rows(cur: psycopg.Cursor, character_ids: list[str]) -> None:
    """Lock the rows (no waiting); raise :class:`RowsBusy` for the ones held elsewhere."""
    locked = {row[0] for row in cur.execute(_LOCK, (character_ids,)).fetchall()}
    skipped = [c for c in character_ids if c not in locked]
    if not skipped:
        return
    # A skipped id is either locked by someone else or not there at all (a plain read, which
    # never waits, tells them apart); a missing row is left to the UPDATE's conflict check.
    present = {
        row[0]
        for row in cur.execute(
            "SELECT character_id::text FROM character_profile WHERE character_id = ANY(%s::uuid[])",
            (skipped,),
        ).fetchall()
    }
    if present:
        raise RowsBusy(present)


def _copy_events(cur: psycopg.Cursor, events: Sequence[EventRow], persisted_at: dt.datetime) -> None:
    with cur.copy(_COPY) as copy:
        for e in events:
            copy.write_row(
                (e.action_id, e.user_id, e.character_id, e.seq, e.action_type, e.payload_json, persisted_at)
            )
    if any(e.seq is not None for e in events):
        with cur.copy(_COPY_SEQ) as copy:
            for e in events:
                if e.seq is not None:
                    copy.write_row((e.character_id, e.seq, e.action_id, persisted_at))


def _update_rows(cur: psycopg.Cursor, writes: Sequence[CharacterWrite], persisted_at: dt.datetime) -> None:
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
            "epoch": [w.owner_epoch for w in writes],
        },
    )
    updated = {row[0] for row in cur.fetchall()}
    missing = [w for w in writes if w.character_id not in updated]
    if not missing:
        return
    # Re-read the rows not updated (locked by us, so this is their state): an epoch that moved
    # on is a fence, the same epoch a version conflict (or a row that does not exist).
    epochs = dict(
        cur.execute(
            "SELECT character_id::text, owner_epoch FROM character_profile WHERE character_id = ANY(%s::uuid[])",
            ([w.character_id for w in missing],),
        ).fetchall()
    )
    fenced = {
        w.character_id: (w.owner_epoch, epochs[w.character_id])
        for w in missing
        if w.character_id in epochs and epochs[w.character_id] != w.owner_epoch
    }
    if fenced:
        raise Fenced(fenced)
    raise VersionConflict({w.character_id for w in missing})


def _seqs_stored(conn: psycopg.Connection, events: Sequence[EventRow]) -> dict[str, set[int]]:
    """Which of the events' (character, seq) pairs ``action_seq`` already holds."""
    pairs = [(e.character_id, e.seq) for e in events if e.seq is not None]
    with conn.transaction():
        rows = conn.execute(
            "SELECT s.character_id::text, s.sequence_number FROM action_seq s"
            " JOIN unnest(%s::uuid[], %s::bigint[]) AS p(c, n)"
            " ON s.character_id = p.c AND s.sequence_number = p.n",
            ([c for c, _ in pairs], [n for _, n in pairs]),
        ).fetchall()
    stored: dict[str, set[int]] = {}
    for character_id, seq in rows:
        stored.setdefault(character_id, set()).add(seq)
    return stored


@dataclass(frozen=True)
class StoredAction:
    """An action found in the durable log (to answer a resent seq with its original ack)."""

    action_id: str
    sequence_number: int
    persisted_at: dt.datetime
    action_type: str | None = None  # None when its partition was dropped meanwhile
    payload: Any = None


def find_action(conn: psycopg.Connection, character_id: str, seq: int) -> StoredAction | None:
    """The stored action with this character's sequence number (from ``action_seq``, its type
    and payload from ``action_event``), if any."""
    row = conn.execute(
        "SELECT s.action_id::text, s.sequence_number, s.persisted_at, e.action_type::text, e.payload_json"
        " FROM action_seq s LEFT JOIN action_event e"
        " ON e.action_id = s.action_id AND e.persisted_at = s.persisted_at"
        " WHERE s.character_id = %s AND s.sequence_number = %s",
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


def batch_landed(
    conn: psycopg.Connection, events: Sequence[EventRow], writes: Sequence[CharacterWrite],
    persisted_at: dt.datetime, backend_pid: int,
) -> bool | None:
    """Whether a batch whose COMMIT lost its connection (run by ``backend_pid``) landed: True,
    False (not stored, and that backend is gone so it never will be), or None (not yet known:
    the backend may still commit it)."""
    if events:
        landed = action_landed(conn, events[0].action_id, persisted_at)
    elif writes:
        w = writes[0]
        landed = conn.execute(
            "SELECT 1 FROM character_profile WHERE character_id = %s AND version >= %s",
            (w.character_id, w.new_version),
        ).fetchone() is not None
    else:
        return True
    if landed:
        return True
    alive = conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend_pid,)).fetchone()
    return None if alive else False


def commit_stats(conn: psycopg.Connection, start: dt.datetime, end: dt.datetime) -> tuple[int, int, int]:
    """(rows, commits, action rows) persisted in [start, end): a commit is a distinct
    ``persisted_at``, an action row one with a sequence number (not a system event)."""
    return conn.execute(
        "SELECT count(*), count(DISTINCT persisted_at), count(sequence_number)"
        " FROM action_event WHERE persisted_at >= %s AND persisted_at < %s",
        (start, end),
    ).fetchone()
