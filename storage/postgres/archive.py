"""Partition archives: export a daily ``action_event`` partition to a gzip file and verify it.

An archive is ``action_event-YYYY-MM-DD.jsonl.gz``: the partition's rows ``ORDER BY persisted_at,
action_id``, one JSON object per line (PostgreSQL's own ``to_jsonb`` text of the row), written to
a temp file, fsynced and atomically renamed; its sha256 goes beside it in ``sha256sum`` format.
Verification reads the archive back and compares the file's sha256, the row count and a checksum
of the lines with the partition. The retention job (:mod:`storage.postgres.retention`) decides
when a partition is archived and dropped.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import psycopg
from psycopg import sql

_FETCH_ROWS = 2000
_WRITE_BYTES = 1 << 20


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


def set_aside_archive(path: Path) -> None:
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
