"""Retention: old partitions are archived, verified, then dropped; a crash in between loses nothing."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from config.settings import Settings
from storage.postgres import archive, partitions, retention

TODAY = dt.datetime.now(dt.UTC).date()
OLD = [40, 35, 31]  # days ago: past the 30-day retention
KEPT = 29


def _day(days_ago: int) -> dt.date:
    return TODAY - dt.timedelta(days=days_ago)


def _insert_rows(conn: psycopg.Connection, day: dt.date, n: int) -> None:
    """``n`` rows spread over ``day``: every action type, NULL sequence numbers, awkward text."""
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    character = uuid.uuid4()
    rows = []
    for i in range(n):
        kind = ("move", "chat", "ability", "system")[i % 4]
        payload = {"i": i, "text": 'quote " backslash \\ newline \n tab \t é 🐉', "ratio": 0.1}
        rows.append(
            (
                uuid.uuid4(),
                f"user-{i % 3}",
                character,
                None if kind == "system" else i + 1,
                kind,
                json.dumps(payload),
                # The same instant twice, so the action_id tie-break in the ORDER BY matters.
                start + dt.timedelta(seconds=(i // 2) * 997, microseconds=(i // 2) * 7),
            )
        )
    conn.cursor().executemany(
        "INSERT INTO action_event (action_id, user_id, character_id, sequence_number, action_type,"
        " payload_json, persisted_at) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s)",
        rows,
    )


def _canonical(row: dict) -> str:
    """A row as the test sees it, independent of how retention serialises it."""
    row = dict(row)
    ts = row["persisted_at"]
    ts = dt.datetime.fromisoformat(ts) if isinstance(ts, str) else ts
    row["persisted_at"] = ts.astimezone(dt.UTC).isoformat()
    for key in ("action_id", "character_id"):
        row[key] = str(row[key])
    return json.dumps(row, sort_keys=True, separators=(",", ":"))


def _digest(rows: list[dict]) -> tuple[int, str]:
    h = hashlib.sha256()
    for row in sorted(_canonical(r) for r in rows):
        h.update(row.encode() + b"\n")
    return len(rows), h.hexdigest()


def _db_rows(conn: psycopg.Connection, day: dt.date) -> list[dict]:
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(
        "SELECT * FROM action_event WHERE persisted_at >= %s AND persisted_at < %s",
        (start, start + dt.timedelta(days=1)),
    ).fetchall()


def _archive_rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def seeded(make_database: Callable[..., str]) -> tuple[str, dict[dt.date, tuple[int, str]]]:
    """A fresh database with partitions 40, 35, 31 and 29 days old; returns (url, digest by day)."""
    url = make_database(migrated=True)
    before = {}
    with psycopg.connect(url) as conn:
        for n, days_ago in zip((5, 12, 1), OLD, strict=True):
            partitions.create_partition(conn, _day(days_ago))
            _insert_rows(conn, _day(days_ago), n)
        partitions.create_partition(conn, _day(KEPT))
        _insert_rows(conn, _day(KEPT), 3)
        conn.commit()
        for days_ago in [*OLD, KEPT]:
            before[_day(days_ago)] = _digest(_db_rows(conn, _day(days_ago)))
    return url, before


def _attached(url: str) -> set[dt.date]:
    with psycopg.connect(url) as conn:
        return set(partitions.list_partitions(conn))


def _assert_archived(archive_dir: Path, day: dt.date, expected: tuple[int, str]) -> None:
    path = archive.archive_path(archive_dir, day)
    assert _digest(_archive_rows(path)) == expected
    recorded, name = archive.checksum_path(path).read_text().split()
    assert name == path.name
    assert recorded == hashlib.sha256(path.read_bytes()).hexdigest()


def test_old_partitions_are_archived_then_dropped(seeded, settings: Settings) -> None:
    url, before = seeded
    report = retention.run_retention(url, settings, today=TODAY)

    assert [p.day for p in report.dropped] == sorted(_day(d) for d in OLD)  # oldest first
    assert all(p.action == retention.ARCHIVED for p in report.partitions)
    assert _attached(url) == {_day(KEPT)}
    for days_ago in OLD:
        _assert_archived(settings.retention.archive_dir, _day(days_ago), before[_day(days_ago)])
        assert not archive.archive_path(settings.retention.archive_dir, _day(KEPT)).exists()
    with psycopg.connect(url) as conn:
        assert _digest(_db_rows(conn, _day(KEPT))) == before[_day(KEPT)]
        assert conn.execute("SELECT count(*) FROM action_event").fetchone()[0] == 3
        # The server's partition maintenance never brings a dropped day back.
        partitions.ensure_partitions(conn, today=TODAY)
        assert not {_day(d) for d in OLD} & set(partitions.list_partitions(conn))

    summary = report.summary().splitlines()
    assert len(summary) == 4 and summary[-1].startswith("total: 3 partitions, 18 rows archived")
    assert "\n" not in report.partitions[0].line() and "action_event_p" in summary[0]

    again = retention.run_retention(url, settings, today=TODAY)
    assert again.partitions == [] and "no partition older than" in again.summary()


def test_archive_lines_are_ordered_and_hold_every_column(seeded, settings: Settings) -> None:
    url, _ = seeded
    retention.run_retention(url, settings, today=TODAY)
    rows = _archive_rows(archive.archive_path(settings.retention.archive_dir, _day(35)))
    assert set(rows[0]) == {
        "action_id", "user_id", "character_id", "sequence_number", "action_type", "payload_json", "persisted_at",
    }
    keys = [(dt.datetime.fromisoformat(r["persisted_at"]), r["action_id"]) for r in rows]
    assert keys == sorted(keys) and len({k[0] for k in keys}) < len(keys)
    assert any(r["sequence_number"] is None for r in rows)
    assert rows[0]["payload_json"]["text"] == 'quote " backslash \\ newline \n tab \t é 🐉'


def test_dry_run_changes_nothing(seeded, settings: Settings) -> None:
    url, before = seeded
    report = retention.run_retention(url, settings, dry_run=True, today=TODAY)

    assert [(p.day, p.rows, p.dropped) for p in report.partitions] == [
        (_day(40), 5, False), (_day(35), 12, False), (_day(31), 1, False),
    ]
    assert "would be archived" in report.summary() and "nothing changed" in report.summary()
    assert not settings.retention.archive_dir.exists()
    assert _attached(url) == {_day(d) for d in [*OLD, KEPT]}
    with psycopg.connect(url) as conn:
        assert {d: _digest(_db_rows(conn, d)) for d in before} == before


def test_crash_between_export_and_drop_then_rerun(seeded, settings: Settings, tmp_path: Path) -> None:
    """A process killed after writing the first archive, before its drop: nothing lost, rerun finishes."""
    url, before = seeded
    archive_dir = settings.retention.archive_dir
    script = textwrap.dedent(
        """
        import datetime, os, sys
        from config.settings import load_settings
        from storage.postgres import retention

        def crash(conn, name):
            os._exit(41)  # no cleanup, no rollback sent: the connection just dies

        retention._drop_partition = crash
        retention.run_retention(
            sys.argv[1], load_settings(), today=datetime.date.fromisoformat(sys.argv[2])
        )
        """
    )
    env = {**os.environ, "TILEHALL_RETENTION__ARCHIVE_DIR": str(archive_dir)}
    proc = subprocess.run(
        [sys.executable, "-c", script, url, TODAY.isoformat()],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 41, proc.stderr

    first = _day(40)
    assert _attached(url) == {_day(d) for d in [*OLD, KEPT]}
    with psycopg.connect(url) as conn:
        assert _digest(_db_rows(conn, first)) == before[first]
    _assert_archived(archive_dir, first, before[first])  # exported and renamed before the "crash"
    archived_bytes = archive.archive_path(archive_dir, first).read_bytes()

    report = retention.run_retention(url, settings, today=TODAY)

    assert [(p.day, p.action) for p in report.dropped] == [
        (_day(40), retention.REUSED), (_day(35), retention.ARCHIVED), (_day(31), retention.ARCHIVED),
    ]
    assert archive.archive_path(archive_dir, first).read_bytes() == archived_bytes
    assert _attached(url) == {_day(KEPT)}
    for days_ago in OLD:
        _assert_archived(archive_dir, _day(days_ago), before[_day(days_ago)])


def _crash_on_drop(monkeypatch: pytest.MonkeyPatch, url: str, settings: Settings) -> None:
    def crash(conn: psycopg.Connection, name: str) -> None:
        raise RuntimeError("simulated crash before the drop")

    monkeypatch.setattr(retention, "_drop_partition", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        retention.run_retention(url, settings, today=TODAY)
    monkeypatch.undo()


def _tear(path: Path, url: str) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble_checksum(path: Path, url: str) -> None:
    archive.checksum_path(path).write_text("0" * 64 + "  " + path.name + "\n")


def _change_a_row(path: Path, url: str) -> None:
    with psycopg.connect(url) as conn:  # same row count, different content
        conn.execute(
            "UPDATE action_event SET payload_json = '{\"edited\": true}'"
            " WHERE action_id = (SELECT action_id FROM action_event WHERE persisted_at < %s LIMIT 1)",
            (dt.datetime.combine(_day(39), dt.time(), dt.UTC),),
        )


def _lose_checksum(path: Path, url: str) -> None:
    archive.checksum_path(path).unlink()  # as if the crash came between the two renames


def _add_a_row(path: Path, url: str) -> None:
    with psycopg.connect(url) as conn:
        _insert_rows(conn, _day(40), 1)


@pytest.mark.parametrize(
    ("damage", "expected_action", "set_aside"),
    [
        (_tear, retention.REEXPORTED, True),
        (_garble_checksum, retention.REEXPORTED, True),
        (_add_a_row, retention.REEXPORTED, True),
        (_change_a_row, retention.REEXPORTED, True),
        (_lose_checksum, retention.REUSED, False),
    ],
)
def test_rerun_repairs_a_leftover_archive(
    seeded, settings: Settings, monkeypatch: pytest.MonkeyPatch, damage, expected_action: str, set_aside: bool
) -> None:
    url, _ = seeded
    archive_dir = settings.retention.archive_dir
    _crash_on_drop(monkeypatch, url, settings)
    path = archive.archive_path(archive_dir, _day(40))
    leftover = path.read_bytes()
    damage(path, url)
    with psycopg.connect(url) as conn:
        now = _digest(_db_rows(conn, _day(40)))

    report = retention.run_retention(url, settings, today=TODAY)

    assert report.partitions[0].day == _day(40) and report.partitions[0].dropped
    assert report.partitions[0].action == expected_action
    assert report.partitions[0].rows == now[0]
    _assert_archived(archive_dir, _day(40), now)
    aside = sorted(archive_dir.glob(path.name + ".unverified-*"))
    assert bool(aside) is set_aside
    if damage is _tear:
        assert leftover[: len(leftover) // 2] in [p.read_bytes() for p in aside]  # kept, not deleted
    assert _attached(url) == {_day(KEPT)}


def test_stale_temp_files_are_cleaned(seeded, settings: Settings) -> None:
    url, before = seeded
    archive_dir = settings.retention.archive_dir
    archive_dir.mkdir(parents=True)
    stale = archive_dir / f".{archive.archive_path(archive_dir, _day(40)).name}.999.tmp"
    stale.write_bytes(b"half an export")
    retention.run_retention(url, settings, today=TODAY)
    assert not stale.exists()
    _assert_archived(archive_dir, _day(40), before[_day(40)])


def test_a_second_run_waits_its_turn(seeded, settings: Settings) -> None:
    url, _ = seeded
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (retention.RETENTION_LOCK_ID,))
        report = retention.run_retention(url, settings, today=TODAY)
        assert report.locked_out and report.partitions == []
        assert "another retention run" in report.summary()
        assert _attached(url) == {_day(d) for d in [*OLD, KEPT]}
    assert len(retention.run_retention(url, settings, today=TODAY).dropped) == 3


def test_retention_job_on_the_server_pool(seeded, settings: Settings) -> None:
    url, before = seeded
    with ConnectionPool(url, min_size=1, max_size=1, open=True) as pool:
        report = retention.retention_job(pool, settings, today=TODAY)
        assert len(report.dropped) == 3
        # The pooled connection lives on: it must have let go of the lock (another session can
        # take it) and be back to idle, ready for its next borrower.
        with psycopg.connect(url, autocommit=True) as other:
            lock = "SELECT pg_try_advisory_lock(%s)"
            assert other.execute(lock, (retention.RETENTION_LOCK_ID,)).fetchone()[0]
        with pool.connection() as conn:
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert conn.execute("SELECT 1").fetchone()[0] == 1
    for days_ago in OLD:
        _assert_archived(settings.retention.archive_dir, _day(days_ago), before[_day(days_ago)])


def test_drop_waits_for_a_busy_table_only_briefly(seeded, settings: Settings) -> None:
    """A long reader on action_event postpones the drop instead of stalling every insert."""
    url, before = seeded
    with psycopg.connect(url) as reader:
        reader.execute("SELECT count(*) FROM action_event").fetchone()  # holds ACCESS SHARE
        report = retention.run_retention(url, settings, today=TODAY)
        reader.rollback()
    assert report.dropped == [] and len(report.partitions) == 3
    assert all("drop postponed" in p.action for p in report.partitions)
    assert "3 postponed" in report.summary()
    assert _attached(url) == {_day(d) for d in [*OLD, KEPT]}
    for days_ago in OLD:  # archived already; the next run reuses them
        _assert_archived(settings.retention.archive_dir, _day(days_ago), before[_day(days_ago)])
    again = retention.run_retention(url, settings, today=TODAY)
    assert [p.action for p in again.dropped] == [retention.REUSED] * 3


def test_cli_retention_run(seeded, tmp_path: Path) -> None:
    url, before = seeded
    archive_dir = tmp_path / "cli-archive"
    env = {**os.environ, "TILEHALL_DATABASE_URL": url, "TILEHALL_RETENTION__ARCHIVE_DIR": str(archive_dir)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "transport.cli", "retention", "run", *args],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )

    dry = cli("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would be archived" in dry.stdout and not archive_dir.exists()

    proc = cli()
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("total: 3 partitions, 18 rows archived and dropped"), proc.stdout
    assert all(partitions.partition_name(_day(d)) in proc.stdout for d in OLD)
    assert _attached(url) == {_day(KEPT)}
    for days_ago in OLD:
        _assert_archived(archive_dir, _day(days_ago), before[_day(days_ago)])


def test_action_seq_rows_go_with_their_dropped_partitions(seeded, settings: Settings) -> None:
    """Retention prunes the action_seq rows of the days it dropped (in the drop's transaction);
    the kept day's seqs stay."""
    url, _ = seeded
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO action_seq (character_id, sequence_number, action_id, persisted_at)"
            " SELECT character_id, sequence_number, action_id, persisted_at FROM action_event"
            " WHERE sequence_number IS NOT NULL"
        )
        conn.commit()
        kept_start = dt.datetime.combine(_day(KEPT), dt.time(), dt.UTC)
        kept = conn.execute("SELECT count(*) FROM action_seq WHERE persisted_at >= %s", (kept_start,)).fetchone()[0]
        assert kept >= 1 and conn.execute("SELECT count(*) FROM action_seq").fetchone()[0] > kept
    report = retention.run_retention(url, settings, today=TODAY)
    assert len(report.dropped) == len(OLD)
    with psycopg.connect(url) as conn:
        left = conn.execute("SELECT min(persisted_at), count(*) FROM action_seq").fetchone()
    assert left[1] == kept and left[0] >= kept_start
