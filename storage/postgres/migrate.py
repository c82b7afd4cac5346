"""Schema migrations: ordered plain-SQL files applied under an advisory lock.

Every pending file runs inside one transaction that first takes a transaction-scoped advisory
lock, so two processes migrating at once serialise: the second waits, then finds nothing to do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# An arbitrary constant shared by every tilehall process: "tilehall" as an int64.
MIGRATION_LOCK_ID = 0x74696C6568616C6C

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class Migration:
    """One SQL file: ``version`` is its name without ``.sql``."""

    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class MigrationStatus:
    """Which migrations a database has and which it still needs."""

    applied: list[str]
    pending: list[str]

    @property
    def up_to_date(self) -> bool:
        return not self.pending


def available_migrations() -> list[Migration]:
    """The migration files shipped with this build, in order."""
    return [Migration(p.stem, p) for p in sorted(MIGRATIONS_DIR.glob("*.sql"))]


def migrate(conninfo: str) -> list[str]:
    """Apply every pending migration; return the versions applied (empty when up to date)."""
    with psycopg.connect(conninfo) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
            conn.execute(_CREATE_LEDGER)
            applied = _applied(conn)
            done = []
            for migration in available_migrations():
                if migration.version in applied:
                    if applied[migration.version] != migration.checksum:
                        raise RuntimeError(
                            f"migration {migration.version} was changed after it was applied"
                        )
                    continue
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                    (migration.version, migration.checksum),
                )
                done.append(migration.version)
    return done


def status(conninfo: str) -> MigrationStatus:
    """Report applied and pending migrations without changing anything."""
    with psycopg.connect(conninfo) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
        applied = _applied(conn) if exists else {}
    wanted = [m.version for m in available_migrations()]
    return MigrationStatus(
        applied=sorted(applied), pending=[v for v in wanted if v not in applied]
    )


def _applied(conn: psycopg.Connection) -> dict[str, str]:
    rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return dict(rows)
