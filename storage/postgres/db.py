"""PostgreSQL access: the connection pool, the durability guard and readiness probes."""

from __future__ import annotations

import logging

import psycopg
from psycopg_pool import ConnectionPool

from config.settings import Settings
from storage.postgres import migrate

log = logging.getLogger(__name__)


class UnsafeDurability(RuntimeError):
    """The database would acknowledge commits it could lose (fsync or synchronous_commit off)."""


def connection_kwargs(settings: Settings) -> dict[str, object]:
    """libpq parameters of every pooled connection: synchronous_commit forced on, and every wait
    bounded (connect, dead peer via TCP keepalives, statement, lock, idle transaction)."""
    s = settings.storage
    options = {
        "synchronous_commit": "on",
        "statement_timeout": _ms(s.statement_timeout_s),
        "lock_timeout": _ms(s.lock_timeout_s),
        "idle_in_transaction_session_timeout": _ms(s.idle_in_transaction_timeout_s),
    }
    return {
        "options": " ".join(f"-c {name}={value}" for name, value in options.items()),
        "application_name": "tilehall",
        "connect_timeout": s.connect_timeout_s,
        "keepalives": 1,
        "keepalives_idle": s.keepalives_idle_s,
        "keepalives_interval": s.keepalives_interval_s,
        "keepalives_count": s.keepalives_count,
    }


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def open_pool(settings: Settings, database_url: str) -> ConnectionPool:
    """Open the shared connection pool (see :func:`connection_kwargs` for every connection's
    settings)."""
    pool = ConnectionPool(
        database_url,
        min_size=settings.storage.pool_min_size,
        max_size=settings.storage.pool_max_size,
        kwargs=connection_kwargs(settings),
        timeout=settings.storage.commit_timeout_s,
        name="tilehall",
        open=False,
    )
    pool.open(wait=False)
    return pool


def check_durability(conn: psycopg.Connection, *, allow_unsafe: bool) -> None:
    """Refuse a server whose commits are not durable, unless the operator explicitly allows it."""
    fsync = conn.execute("SHOW fsync").fetchone()[0]
    sync_commit = conn.execute("SHOW synchronous_commit").fetchone()[0]
    if fsync == "on" and sync_commit != "off":
        return
    problem = f"PostgreSQL has fsync={fsync}, synchronous_commit={sync_commit}: acks would not mean durable"
    if not allow_unsafe:
        raise UnsafeDurability(
            problem + " (set storage.allow_unsafe_durability = true to run anyway, e.g. for benchmarks)"
        )
    log.warning("%s; running anyway because storage.allow_unsafe_durability is set", problem)


def can_write(pool: ConnectionPool, timeout: float) -> bool:
    """Whether a pooled connection can run a write transaction now (a failed commit's node
    probes this to learn that PostgreSQL is back before any player acts)."""
    try:
        with pool.connection(timeout=timeout) as conn:
            return not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    except Exception:
        return False


def database_ready(pool: ConnectionPool) -> str | None:
    """None when PostgreSQL answers and every migration is applied, else the reason it is not.

    A pooled connection that died since its last use (a restart, ``pg_terminate_backend``) fails
    once and is discarded by the pool: such failures are retried (every idle connection may have
    died at once) before the node is called unreachable."""
    attempts = (pool.max_size or 1) + 1
    for attempt in range(1, attempts + 1):
        try:
            with pool.connection(timeout=1.0) as conn:
                exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
                applied = (
                    {r[0] for r in conn.execute("SELECT version FROM schema_migrations")} if exists else set()
                )
            break
        except Exception as exc:
            if attempt == attempts or not isinstance(exc, psycopg.OperationalError):
                return f"postgresql unreachable: {type(exc).__name__}"
    pending = [m.version for m in migrate.available_migrations() if m.version not in applied]
    return f"migrations pending: {', '.join(pending)}" if pending else None
