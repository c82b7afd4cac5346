"""A smoke run of ``tilehall bench`` through a real server process (kept small: ~15 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/ is not an installed package

from bench.loadgen import format_summary, place_players  # noqa: E402


def test_placement_keeps_players_apart() -> None:
    """Active players get distinct 2x2 squares in the north, idle ones distinct tiles far south."""
    spots = place_players(50, 30, seed=1)
    active, idle = spots[:50], spots[50:]
    squares = {(x + dx, y + dy) for x, y in active for dx in (0, 1) for dy in (0, 1)}
    assert len(squares) == 4 * 50
    assert len(set(idle)) == 30
    assert max(y for _, y in active) + 1 + 12 < min(y for _, y in idle)


def test_bench_smoke(pg_admin_url: str, redis_url: str, tmp_path: Path) -> None:
    """5 players on two nodes for 2 s: actions are acked, and the report has every field
    docs/perf.md uses."""
    name = f"tilehall_test_bench_{os.getpid()}"
    out = tmp_path / "report.json"
    try:  # in a process of its own, like `tilehall bench` (its asyncio.run stays out of ours)
        proc = subprocess.run(
            [sys.executable, "-m", "bench.loadgen",
             "--players", "5", "--nodes", "2", "--window", "2", "--duration", "2", "--warmup", "0.5",
             "--bound-duration", "1", "--database-url", pg_admin_url, "--redis-url", redis_url,
             "--database-name", name, "--output", str(out), "--quiet"],
            cwd=ROOT, capture_output=True, text=True, timeout=90,
        )
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "durable acked actions/s" in proc.stdout
    report = json.loads(out.read_text())
    run = report["runs"][0]
    assert run["acked"] > 0 and run["acked_per_s"] > 0
    assert run["nodes"] == 2 and run["connected_players"] == 5 and run["server_exit"] == 0
    for key in ("p50_ms", "p95_ms", "p99_ms", "rejects", "fan_out", "server_rss_mib_peak",
                "server_threads_max", "machine_cpu_mean"):
        assert key in run, key
    assert run["storage"]["mean_batch"] >= 1
    assert run["storage"]["action_rows"] >= run["acked"] * 0.9  # acked means durable
    assert run["echo"]["acked_per_s"] > 0
    assert run["insert"]["rows_per_s"] > 0
    assert 0 < run["ratios"]["vs_echo"]
    assert report["median"]["acked_per_s"] > 0
    assert report["machine"]["nproc"] >= 1
    assert "durable acked actions/s" in format_summary(report)
