"""The foundation: settings, migrations, the server's probes and its CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import psycopg
import pytest

from config.settings import SettingsError, load_settings
from storage.postgres import migrate, partitions


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_env_overrides_toml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TILEHALL_STORAGE__MAX_BATCH", "17")
    monkeypatch.setenv("TILEHALL_DATABASE_URL", "postgresql://u@db.example:5432/x")
    s = load_settings()
    assert s.storage.max_batch == 17
    assert s.database_url == "postgresql://u@db.example:5432/x"
    assert s.server.port == 8888  # from default.toml


def test_config_file_between_default_and_env(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[server]\nport = 9001\n[storage]\nmax_batch = 3\n")
    monkeypatch.setenv("TILEHALL_STORAGE__MAX_BATCH", "4")
    s = load_settings(cfg)
    assert (s.server.port, s.storage.max_batch) == (9001, 4)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"TILEHALL_MODE": "staging"}, "mode"),
        ({"TILEHALL_DATABASE_URL": "mysql://x"}, "database_url"),
        ({"TILEHALL_REDIS_URL": "http://x"}, "redis_url"),
        ({"TILEHALL_MODE": "production"}, "production mode needs JWT verification keys"),
        ({"TILEHALL_SERVER__PORT": "seventy"}, "server.port"),
    ],
)
def test_bad_settings_exit_2_with_one_line(env: dict, needle: str, tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "transport.cli", "db", "status"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_settings_error_is_one_line() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(mode="production", database_url="postgresql://a@b/c")
    assert "\n" not in str(err.value) and "admin token" in str(err.value)


ALL_MIGRATIONS = ["0001_initial_schema", "0002_ownership"]


def test_migrate_twice_is_a_noop(make_database) -> None:
    url = make_database(migrated=False)
    assert migrate.migrate(url) == ALL_MIGRATIONS
    assert migrate.migrate(url) == []
    assert migrate.status(url).up_to_date


def test_concurrent_migrations_leave_one_schema(make_database) -> None:
    url = make_database(migrated=False)
    results: list = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrate.migrate(url))
        except Exception as exc:  # noqa: BLE001 - the assertion below reports it
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(map(str, results)) == sorted([str(ALL_MIGRATIONS), "[]", "[]", "[]"])
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(ALL_MIGRATIONS)
        assert conn.execute("SELECT to_regclass('action_event') IS NOT NULL").fetchone()[0]


def test_concurrent_migrations_from_two_processes(make_database) -> None:
    url = make_database(migrated=False)
    code = "import sys; from storage.postgres import migrate; print(migrate.migrate(sys.argv[1]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == [str(ALL_MIGRATIONS), "[]"]


def test_schema_constraints(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO character_profile (character_id, user_id, display_name, position_x, position_y, health)"
                " VALUES (gen_random_uuid(), 'u', 'n', 1, 1, 101)"
            )
        conn.rollback()
        partitions.ensure_partitions(conn)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO action_event VALUES (gen_random_uuid(), 'u', gen_random_uuid(), NULL, 'move', '{}', now())"
            )


def test_probes(live_server) -> None:
    assert _get(live_server.url + "/healthz") == (200, {"status": "ok"})
    status, body = _get(live_server.url + "/readyz")
    assert (status, body["status"]) == (200, "ready"), body


def test_readyz_503_when_redis_unreachable(start_server) -> None:
    server = start_server(redis_url="redis://127.0.0.1:1/0")
    status, body = _get(server.url + "/readyz")
    assert status == 503
    assert any("redis" in p for p in body["problems"])


def test_every_setting_is_documented() -> None:
    """docs/configuration.md names the environment variable of every setting."""
    from pathlib import Path

    from pydantic import BaseModel

    from config.settings import Settings

    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    missing = []
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            envs = [f"TILEHALL_{name.upper()}__{sub.upper()}" for sub in group.model_fields]
        else:
            envs = [f"TILEHALL_{name.upper()}"]
        missing += [env for env in envs if env not in doc]
    assert missing == [], f"document these in docs/configuration.md: {missing}"


def test_unreachable_database_fails_in_one_line(tmp_path) -> None:
    """An operator sees what failed, exit 1, not a traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "transport.cli", "db", "migrate"],
        env={**os.environ, "TILEHALL_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nope"},
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("tilehall db: failed: ")
