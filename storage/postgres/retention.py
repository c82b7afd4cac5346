"""Retention: archive the daily ``action_event`` partitions past the retention period, then drop them.

A partition is retired when its whole UTC day lies before ``today - retention.days``. Each one,
oldest first, is handled in one transaction that holds a SHARE lock on it, so its rows cannot
change between export, verification and drop:

1. an archive already on disk (from a run that crashed before its drop) is verified against the
   partition and reused; one that does not verify is set aside (renamed ``*.unverified-<time>``,
   never deleted) and the partition is exported again;
2. export: the rows, ``ORDER BY persisted_at, action_id``, one JSON object per line (PostgreSQL's
   own ``to_jsonb`` text of the row, so every column is there and numbers keep their precision),
   streamed through a server-side cursor into a gzip temp file, fsynced, atomically renamed to
   ``action_event-YYYY-MM-DD.jsonl.gz``; its sha256 goes beside it in ``sha256sum`` format;
3. verification reads the archive back: the sha256 of the .gz, the row count and a checksum of
   the lines must all match what was read from the partition;
4. only then ``DETACH PARTITION`` and ``DROP TABLE``, committed with the same transaction.

A crash anywhere before that commit leaves the partition untouched and at worst a complete archive
the next run verifies and reuses. A session-level advisory lock keeps two runs from overlapping.
Export and verification live in :mod:`storage.postgres.archive`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from config.settings import Settings
from storage.postgres.archive import (
    archive_path,
    export_partition,
    partition_digest,
    set_aside_archive,
    verify_archive,
)
from storage.postgres.partitions import list_partitions

log = logging.getLogger(__name__)

_PARTITION_DAY = re.compile(r"^action_event_p(\d{8})$")

# "tilehalr" as an int64; the migration and partition locks use neighbouring values.
RETENTION_LOCK_ID = 0x74696C6568616C72
# Waiting for the partition itself only delays retention, so it may wait a while; DETACH needs
# ACCESS EXCLUSIVE on action_event and every insert queues behind it while it waits, so it may not.
PARTITION_LOCK_TIMEOUT = "5s"
DETACH_LOCK_TIMEOUT = "1s"

ARCHIVED = "archived"
REUSED = "archive reused"
REEXPORTED = "re-exported"
WOULD_ARCHIVE = "would archive"


class RetentionError(RuntimeError):
    """An archive could not be made to match its partition; the partition was kept."""


@dataclass(frozen=True)
class PartitionOutcome:
    """What happened to one partition."""

    day: dt.date
    partition: str
    rows: int
    action: str
    archive: Path
    dropped: bool

    def line(self) -> str:
        """One readable line for the summary."""
        if self.action == WOULD_ARCHIVE:
            done = f"would be archived to {self.archive} and dropped"
        elif self.dropped:
            how = {REUSED: "existing archive verified", REEXPORTED: "bad archive set aside, re-exported"}
            done = f"archived to {self.archive} ({how.get(self.action, 'verified')}), dropped"
        else:
            done = f"kept: {self.action}"
        return f"{self.partition} ({self.day}): {_n(self.rows, 'row')} {done}"


@dataclass
class RetentionReport:
    """The result of one retention run."""

    dry_run: bool
    cutoff: dt.date
    retention_days: int
    archive_dir: Path
    partitions: list[PartitionOutcome] = field(default_factory=list)
    locked_out: bool = False

    @property
    def dropped(self) -> list[PartitionOutcome]:
        """The partitions this run archived and dropped."""
        return [p for p in self.partitions if p.dropped]

    def summary(self) -> str:
        """One line per partition, then a total."""
        if self.locked_out:
            return "retention: another retention run holds the lock; nothing done"
        lines = [p.line() for p in self.partitions]
        scope = f"retention {self.retention_days} days, keeping {self.cutoff} onward"
        if not self.partitions:
            lines.append(f"total: no partition older than {self.cutoff} ({scope})")
        elif self.dry_run:
            rows = sum(p.rows for p in self.partitions)
            lines.append(
                f"total (dry run, nothing changed): {_n(len(self.partitions), 'partition')}, "
                f"{_n(rows, 'row')} would be archived ({scope})"
            )
        else:
            rows = sum(p.rows for p in self.dropped)
            kept = len(self.partitions) - len(self.dropped)
            lines.append(
                f"total: {_n(len(self.dropped), 'partition')}, {_n(rows, 'row')} archived and dropped"
                + (f", {kept} postponed" if kept else "")
                + f" ({scope})"
            )
        return "\n".join(lines)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def run_retention(
    database_url: str, settings: Settings, *, dry_run: bool = False, today: dt.date | None = None
) -> RetentionReport:
    """Archive and drop every partition past retention (``tilehall retention run``)."""
    with psycopg.connect(database_url, application_name="tilehall-retention") as conn:
        return _run(conn, settings, dry_run=dry_run, today=today)


def retention_job(
    pool: ConnectionPool, settings: Settings, *, dry_run: bool = False, today: dt.date | None = None
) -> RetentionReport:
    """The same run on a connection from the server's pool (blocking: call it off the IOLoop)."""
    with pool.connection() as conn:
        return _run(conn, settings, dry_run=dry_run, today=today)


def _run(
    conn: psycopg.Connection, settings: Settings, *, dry_run: bool, today: dt.date | None
) -> RetentionReport:
    # Every statement runs inside an explicit transaction block, so this works the same on a
    # fresh connection and on a pooled one whatever its autocommit setting.
    today = today or dt.datetime.now(dt.UTC).date()
    cutoff = today - dt.timedelta(days=settings.retention.days)
    archive_dir = Path(settings.retention.archive_dir)
    report = RetentionReport(dry_run, cutoff, settings.retention.days, archive_dir)

    if dry_run:
        with conn.transaction():
            for day, name in _expired(conn, cutoff):
                rows = _count(conn, name)
                report.partitions.append(
                    PartitionOutcome(day, name, rows, WOULD_ARCHIVE, archive_path(archive_dir, day), False)
                )
        return report

    with conn.transaction():
        locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (RETENTION_LOCK_ID,)).fetchone()[0]
    if not locked:
        report.locked_out = True
        log.info("retention: another run holds the lock; skipping")
        return report
    try:
        archive_dir.mkdir(parents=True, exist_ok=True)
        for stale in archive_dir.glob(".action_event-*.tmp"):
            stale.unlink()  # a crashed export's temp file; we hold the lock, so nobody writes it
        with conn.transaction():
            expired = _expired(conn, cutoff)
        for day, name in expired:
            outcome = _retire(conn, day, name, archive_path(archive_dir, day))
            log.info("retention: %s", outcome.line())
            report.partitions.append(outcome)
    finally:
        if not conn.closed:
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_unlock(%s)", (RETENTION_LOCK_ID,))
            except psycopg.Error:
                log.warning("retention: could not release the advisory lock", exc_info=True)
    return report


def _expired(conn: psycopg.Connection, cutoff: dt.date) -> list[tuple[dt.date, str]]:
    return [(day, name) for day, name in list_partitions(conn).items() if day < cutoff]


def _count(conn: psycopg.Connection, name: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
    return conn.execute(query).fetchone()[0]


def _retire(conn: psycopg.Connection, day: dt.date, name: str, path: Path) -> PartitionOutcome:
    """Archive, verify and drop one partition in one transaction."""
    action: str | None = None
    set_aside = False
    rows = 0
    try:
        with conn.transaction():
            conn.execute("SET LOCAL TimeZone = 'UTC'")  # timestamps in the archive are UTC
            # A pooled connection bounds statements and idle transactions for the action path;
            # exporting and verifying a whole day legitimately takes longer (locks stay bounded).
            conn.execute("SET LOCAL statement_timeout = 0")
            conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(PARTITION_LOCK_TIMEOUT)))
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier(name)))
            rows = _count(conn, name)
            if path.exists():
                problem = verify_archive(path, day, partition_digest(conn, name))
                if problem is None:
                    action = REUSED
                else:
                    log.warning("retention: %s does not match %s (%s); exporting again", path, name, problem)
                    set_aside_archive(path)
                    set_aside = True
            if action is None:
                expected = export_partition(conn, name, path)
                problem = verify_archive(path, day, expected)
                if problem is not None:
                    raise RetentionError(f"{path} does not verify after export: {problem}; {name} kept")
                if expected.rows != rows:
                    raise RetentionError(f"{name} has {rows} rows but {expected.rows} were exported; kept")
                action = REEXPORTED if set_aside else ARCHIVED
            _drop_partition(conn, name)
    except psycopg.errors.LockNotAvailable:
        state = "not archived" if action is None else "archived"
        return PartitionOutcome(day, name, rows, f"{state}, drop postponed: table busy", path, False)
    return PartitionOutcome(day, name, rows, action, path, True)


def _drop_partition(conn: psycopg.Connection, name: str) -> None:
    """Detach and drop, inside the caller's transaction (tests replace this to simulate a crash)."""
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(DETACH_LOCK_TIMEOUT)))
    conn.execute(sql.SQL("ALTER TABLE action_event DETACH PARTITION {}").format(sql.Identifier(name)))
    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
    _prune_action_seq(conn, name)


def _prune_action_seq(conn: psycopg.Connection, name: str) -> int:
    """Delete the ``action_seq`` rows of actions persisted before the end of partition ``name``'s
    day (partitions go oldest first, so that is every row older than the dropped partitions), in
    the drop's transaction. Returns how many."""
    m = _PARTITION_DAY.match(name)
    if m is None:
        return 0
    day = dt.datetime.strptime(m.group(1), "%Y%m%d").date()
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
    return conn.execute("DELETE FROM action_seq WHERE persisted_at < %s", (end,)).rowcount
