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
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import logging
import os
import zlib
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from config.settings import Settings
from storage.partitions import list_partitions

log = logging.getLogger(__name__)

# "tilehalr" as an int64; the migration and partition locks use neighbouring values.
RETENTION_LOCK_ID = 0x74696C6568616C72
# Waiting for the partition itself only delays retention, so it may wait a while; DETACH needs
# ACCESS EXCLUSIVE on action_event and every insert queues behind it while it waits, so it may not.
PARTITION_LOCK_TIMEOUT = "5s"
DETACH_LOCK_TIMEOUT = "1s"
_FETCH_ROWS = 2000
_WRITE_BYTES = 1 << 20

ARCHIVED = "archived"
REUSED = "archive reused"
REEXPORTED = "re-exported"
WOULD_ARCHIVE = "would archive"


class RetentionError(RuntimeError):
    """An archive could not be made to match its partition; the partition was kept."""


def archive_path(archive_dir: str | Path, day: dt.date) -> Path:
    """Where the archive of ``day``'s partition lives: ``action_event-YYYY-MM-DD.jsonl.gz``."""
    return Path(archive_dir) / f"action_event-{day:%Y-%m-%d}.jsonl.gz"


def checksum_path(archive: Path) -> Path:
    """The ``sha256sum``-format file beside an archive."""
    return archive.with_name(archive.name + ".sha256")


@dataclass(frozen=True)
class Digest:
    """What a partition (or an archive) holds: its row count and a sha256 over its JSON lines."""

    rows: int
    content_sha256: str


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
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(PARTITION_LOCK_TIMEOUT)))
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier(name)))
            rows = _count(conn, name)
            if path.exists():
                problem = verify_archive(path, day, partition_digest(conn, name))
                if problem is None:
                    action = REUSED
                else:
                    log.warning("retention: %s does not match %s (%s); exporting again", path, name, problem)
                    _set_aside(path)
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


def _partition_lines(conn: psycopg.Connection, name: str) -> Iterator[bytes]:
    """The partition's rows as archive lines, streamed through a server-side cursor.

    Consume it inside ``closing()``: the cursor must close before the transaction ends.
    """
    query = sql.SQL(
        "SELECT to_jsonb(p)::text FROM {} p ORDER BY p.persisted_at, p.action_id"
    ).format(sql.Identifier(name))
    with conn.cursor(name=f"retention_{name}") as cur:
        cur.itersize = _FETCH_ROWS
        cur.execute(query)
        for (text,) in cur:
            yield text.encode("utf-8") + b"\n"


def partition_digest(conn: psycopg.Connection, name: str) -> Digest:
    """Row count and content checksum of a partition, as its archive would hold it."""
    content = hashlib.sha256()
    rows = 0
    with closing(_partition_lines(conn, name)) as lines:
        for line in lines:
            content.update(line)
            rows += 1
    return Digest(rows, content.hexdigest())


class _HashingWriter:
    """A write-only file object that hashes what passes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def export_partition(conn: psycopg.Connection, name: str, path: Path) -> Digest:
    """Write a partition to ``path`` (gzip, fsync, atomic rename) and its sha256 file beside it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    content = hashlib.sha256()
    rows = 0
    try:
        with tmp.open("wb") as raw:
            hashing = _HashingWriter(raw)
            # No name and mtime 0 in the gzip header: the same rows give the same bytes.
            with (
                gzip.GzipFile(fileobj=hashing, mode="wb", mtime=0) as gz,
                closing(_partition_lines(conn, name)) as lines,
            ):
                pending = bytearray()
                for line in lines:
                    content.update(line)
                    rows += 1
                    pending += line
                    if len(pending) >= _WRITE_BYTES:
                        gz.write(pending)
                        pending.clear()
                gz.write(pending)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_checksum(path, hashing.sha256.hexdigest())
    return Digest(rows, content.hexdigest())


def verify_archive(path: Path, day: dt.date, expected: Digest) -> str | None:
    """Read an archive back; None when it holds exactly ``expected``, else what is wrong.

    The .gz must match its sha256 file, every line must be a JSON object persisted on ``day``,
    and the row count and line checksum must equal ``expected``. A missing sha256 file (a crash
    right after the rename) is written once the content has verified.
    """
    try:
        file_sha = _file_sha256(path)
        content = hashlib.sha256()
        rows = 0
        with gzip.open(path, "rb") as gz:
            for line in gz:
                if not line.endswith(b"\n"):
                    return f"line {rows + 1} is cut short"
                obj = json.loads(line)
                if not isinstance(obj, dict) or "persisted_at" not in obj:
                    return f"line {rows + 1} is not an action_event row"
                if dt.datetime.fromisoformat(obj["persisted_at"]).astimezone(dt.UTC).date() != day:
                    return f"line {rows + 1} was not persisted on {day}"
                content.update(line)
                rows += 1
    except (OSError, EOFError, zlib.error, ValueError, TypeError) as exc:
        return f"unreadable: {exc}"
    if rows != expected.rows:
        return f"{rows} rows, the partition has {expected.rows}"
    if content.hexdigest() != expected.content_sha256:
        return "rows differ from the partition's"
    sums = checksum_path(path)
    if not sums.exists():
        _write_checksum(path, file_sha)
        return None
    try:
        recorded, _, recorded_name = sums.read_text(encoding="utf-8").strip().partition("  ")
    except (OSError, ValueError) as exc:
        return f"unreadable {sums.name}: {exc}"
    if recorded != file_sha or recorded_name != path.name:
        return f"sha256 does not match {sums.name}"
    return None


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_WRITE_BYTES):
            h.update(chunk)
    return h.hexdigest()


def _write_checksum(path: Path, sha256: str) -> None:
    sums = checksum_path(path)
    tmp = sums.with_name(f".{path.name}.sha256.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(f"{sha256}  {path.name}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, sums)
    _fsync_dir(path.parent)


def _set_aside(path: Path) -> None:
    """Keep an archive that failed verification under another name rather than overwrite it."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    for p in (path, checksum_path(path)):
        if p.exists():
            p.rename(p.with_name(f"{p.name}.unverified-{stamp}"))
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
