"""``/metrics``: every metric of DESIGN section 7, with the values real traffic produces, and an
exposition that ``promtool check metrics`` accepts."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from wsclient import login

from transport.auth import issue_dev_token

DESIGN_METRICS = (
    "tilehall_connect_attempts_total",
    "tilehall_connect_success_total",
    "tilehall_reconnect_attempts_total",
    "tilehall_reconnect_success_total",
    "tilehall_version_reject_total",
    "tilehall_action_latency_seconds_bucket",
    "tilehall_state_refresh_forced_total",
    "tilehall_cache_hit_ratio",
    "tilehall_active_sessions",
    "tilehall_sessions",
    "tilehall_storage_batch_size_bucket",
    "tilehall_storage_commit_seconds_bucket",
    "tilehall_actors",
    "tilehall_action_rejects_total",
    "tilehall_frames_in_total",
    "tilehall_frames_out_total",
)


def scrape(base_url: str, accept: str | None = None) -> tuple[str, str]:
    """(content type, body) of GET /metrics."""
    req = urllib.request.Request(base_url + "/metrics", headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.headers["Content-Type"], resp.read().decode("utf-8")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) → value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    """One sample's value, or None when absent."""
    return samples(text).get((name, tuple(sorted(labels.items()))))


def wait_for(base_url: str, check: Callable[[str], bool], timeout: float = 5.0) -> str:
    """Scrape until ``check(exposition)`` holds; returns that exposition (fails after timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        _, text = scrape(base_url)
        if check(text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics never satisfied the check; last scrape:\n{text[:4000]}")
        time.sleep(0.02)


def test_every_design_metric_is_exported_with_help(live_server: Any) -> None:
    content_type, text = scrape(live_server.url)
    assert content_type.startswith("text/plain; version=0.0.4")
    names = {s[0] for s in samples(text)}
    missing = [n for n in DESIGN_METRICS if n not in names]
    assert not missing, missing
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for family in families.values():
        assert family.documentation.strip(), f"{family.name} has no help text"
    # Latency in seconds with fine buckets below the 50 ms target.
    les = sorted(float(dict(lbl)["le"]) for (n, lbl) in samples(text)
                 if n == "tilehall_action_latency_seconds_bucket" and dict(lbl)["le"] != "+Inf")
    assert len([le for le in les if le <= 0.05]) >= 8, les
    for status in ("connecting", "active", "reconnecting", "terminating"):
        assert value(text, "tilehall_sessions", status=status) == 0.0
    assert value(text, "tilehall_actors", **{"class": "StorageActor"}) == 1.0
    assert value(text, "tilehall_actors", **{"class": "ZoneActor"}) == 1.0


def test_openmetrics_when_asked(live_server: Any) -> None:
    content_type, text = scrape(live_server.url, accept="application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")
    assert "tilehall_connect_success_total" in text


def test_traffic_moves_the_metrics(start_server: Callable[..., Any]) -> None:
    server = start_server(game={"chats_per_second": 1.0})
    url = server.url

    async def play() -> None:
        alice = await login(server.ws_url, issue_dev_token(server.settings, "metrics-alice"))
        bob = await login(server.ws_url, issue_dev_token(server.settings, "metrics-bob"))
        first = await alice.answer(await alice.chat("hello"))
        second = await alice.answer(await alice.chat("hello again"))  # over 1 chat/s
        assert (first["type"], second["type"], second["code"]) == ("ack", "reject", "too_fast")
        text = wait_for(url, lambda t: value(t, "tilehall_active_sessions") == 2.0)
        assert value(text, "tilehall_connect_attempts_total") == 2.0
        assert value(text, "tilehall_connect_success_total") == 2.0
        assert value(text, "tilehall_sessions", status="active") == 2.0
        assert value(text, "tilehall_sessions", status="connecting") == 0.0
        assert value(text, "tilehall_sessions", status="terminating") == 0.0
        assert value(text, "tilehall_actors", **{"class": "SessionActor"}) == 2.0
        assert value(text, "tilehall_actors", **{"class": "CharacterActor"}) == 2.0
        assert value(text, "tilehall_action_rejects_total", code="too_fast") == 1.0
        assert value(text, "tilehall_action_acks_total") == 1.0
        assert value(text, "tilehall_action_latency_seconds_count") == 2.0
        # Two logins (system events) and one chat committed: at least one batch, three works.
        assert value(text, "tilehall_storage_batch_size_sum") >= 3.0
        assert value(text, "tilehall_storage_commit_seconds_count") >= 1.0
        assert value(text, "tilehall_frames_in_total") == 4.0  # 2 hellos + 2 chats
        assert value(text, "tilehall_frames_out_total") >= 4.0  # 2 welcomes + ack + reject
        bob.close()
        text = wait_for(url, lambda t: value(t, "tilehall_sessions", status="reconnecting") == 1.0)
        assert value(text, "tilehall_active_sessions") == 1.0
        await alice.send({"type": "logout"})
        await alice.wait_closed()
        text = wait_for(url, lambda t: value(t, "tilehall_active_sessions") == 0.0)
        # The logged-out session is gone; bob's still waits in its reconnect window.
        text = wait_for(url, lambda t: value(t, "tilehall_sessions", status="terminating") == 0.0)
        assert value(text, "tilehall_sessions", status="reconnecting") == 1.0
        assert value(text, "tilehall_sessions", status="connecting") == 0.0

    asyncio.run(play())


def test_version_reject_counted(live_server: Any) -> None:
    async def stale_tab() -> None:
        from wsclient import FrameTimeout, WSClient

        client = await WSClient.connect(live_server.ws_url)
        with pytest.raises(FrameTimeout):
            await client.hello(issue_dev_token(live_server.settings, "metrics-old"), protocol_version="0.0.1")
        client.close()

    asyncio.run(stale_tab())
    text = wait_for(live_server.url, lambda t: value(t, "tilehall_version_reject_total") == 1.0)
    assert value(text, "tilehall_connect_success_total") == 0.0


def _promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if os.path.exists("/usr/bin/promtool") else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: install Debian's `prometheus` package (.ci/run does)")
        pytest.skip("promtool not installed (Debian package `prometheus`); CI installs it")
    return path


def test_promtool_check_metrics_passes(live_server: Any) -> None:
    promtool = _promtool()

    async def traffic() -> None:
        c = await login(live_server.ws_url, issue_dev_token(live_server.settings, "metrics-lint"))
        await c.answer(await c.chat("lint me"))
        c.close()

    asyncio.run(traffic())
    _, text = scrape(live_server.url)
    assert "tilehall_action_rejects_total" in text
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr
