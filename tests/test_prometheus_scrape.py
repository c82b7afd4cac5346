"""A real Prometheus server scrapes a live tilehall and answers queries with the values the test
produced; the example config in config/ is valid."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from wsclient import login

from transport.auth import issue_dev_token
from transport.metrics import Metrics

REPO = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    """The Prometheus binary ``name``; skipped (failed under CI) when it is not installed."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing in CI: install Debian's `prometheus` package (.ci/run does)")
        pytest.skip(f"{name} not installed (Debian package `prometheus`); CI installs it")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


class PrometheusServer:
    """A Prometheus process scraping ``target`` every second, with its TSDB in ``tmp``."""

    def __init__(self, binary: str, tmp: Path, target: str) -> None:
        self.config = tmp / "prometheus.yml"
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n"
            "  - job_name: tilehall\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if _get(self.url + "/-/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready within {timeout} s:\n{self.log_tail()}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        status, body = _get(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert status == 200, body
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def wait_value(self, expr: str, expected: float, timeout: float = 30.0) -> None:
        """Poll the query API until ``expr`` has exactly one series equal to ``expected``."""
        deadline = time.monotonic() + timeout
        got: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            got = self.query(expr)
            if len(got) == 1 and float(got[0]["value"][1]) == expected:
                return
            time.sleep(0.2)
        targets = _get(self.url + "/api/v1/targets")[1]
        raise AssertionError(f"{expr} never became {expected}; last answer {got}; targets {targets[:1500]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


@pytest.fixture
def prometheus(tmp_path: Path, live_server: Any) -> Iterator[PrometheusServer]:
    binary = _tool("prometheus")
    server = PrometheusServer(binary, tmp_path, f"127.0.0.1:{live_server.node.port}")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_prometheus_scrapes_the_values_we_produced(live_server: Any, prometheus: PrometheusServer) -> None:
    async def two_players() -> None:
        alice = await login(live_server.ws_url, issue_dev_token(live_server.settings, "scrape-alice"))
        bob = await login(live_server.ws_url, issue_dev_token(live_server.settings, "scrape-bob"))
        await alice.answer(await alice.chat("hello prometheus"))
        # Hold both sessions open while Prometheus scrapes (blocking waits run off this loop).
        await asyncio.get_running_loop().run_in_executor(None, scraped_two)
        alice.close()
        bob.close()

    def scraped_two() -> None:
        prometheus.wait_value('up{job="tilehall"}', 1.0)
        prometheus.wait_value("tilehall_active_sessions", 2.0)
        prometheus.wait_value("tilehall_connect_success_total", 2.0)
        prometheus.wait_value("tilehall_action_acks_total", 1.0)
        prometheus.wait_value('tilehall_actors{class="SessionActor"}', 2.0)

    asyncio.run(two_players())


def test_example_config_is_valid(tmp_path: Path) -> None:
    promtool = _tool("promtool")
    proc = subprocess.run([promtool, "check", "config", str(REPO / "config" / "prometheus.yml")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_dashboard_queries_real_metrics() -> None:
    """Every panel of the dashboard queries a metric tilehall exports."""
    exported = {s.name for f in text_string_to_metric_families(generate_latest(Metrics().registry).decode())
                for s in f.samples}
    exported |= {"tilehall_actors", "tilehall_actor_inbox_depth"}  # collected from live actors
    dashboard = json.loads((REPO / "config" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 6
    for expr in exprs:
        names = set(re.findall(r"\btilehall_[a-z_]+", expr))
        assert names, expr
        assert names <= exported, (expr, names - exported)
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("sessions", "action", "latency", "batch", "cache hit", "reject"):
        assert topic in titles, topic
