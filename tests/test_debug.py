"""``/debug/actors``: every live actor, one actor's detail, the admin guard, and answers that never
wait on a busy actor. Also the JSON log format operators ship to their log store."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from waiting import poll
from wsclient import login

from actors.base import DedicatedThreadActor, TilehallActor
from config.settings import Settings
from config.version import SERVER_VERSION
from transport.auth import issue_dev_token
from transport.http_ops import is_loopback, prefers_html
from transport.logs import configure_logging


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, Any, str]:
    """(status, headers (case-insensitive), body) of a GET; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode("utf-8")


def actors_json(base_url: str, **headers: str) -> dict[str, Any]:
    status, _, body = get(base_url + "/debug/actors", headers)
    assert status == 200, body
    return json.loads(body)




SESSION_FIELDS = {"session_id", "user_id", "character_id", "status", "last_action_seq",
                  "last_heartbeat_at", "protocol_version", "reconnect_attempts"}
ROW_FIELDS = {"class", "urn", "entity_id", "status", "inbox_depth", "messages_handled",
              "last_message_age_s", "started_at"}


def test_listing_and_session_detail(live_server: Any) -> None:
    async def play() -> None:
        alice = await login(live_server.ws_url, issue_dev_token(live_server.settings, "debug-alice"))
        await alice.answer(await alice.chat("hi"))
        character_id = alice.welcome["character"]["character_id"]
        session_id = alice.welcome["session_id"]
        # The ack can reach us before the session has handled the messages queued behind it
        # (its own chat event, a lease refresh): wait for its inbox to drain, then read.
        def session_row(listing: dict[str, Any]) -> dict[str, Any]:
            return next((r for r in listing["actors"] if r["class"] == "SessionActor"), {})

        listing = poll(lambda: actors_json(live_server.url), lambda got: session_row(got).get("inbox_depth") == 0)
        assert listing["node_id"] == live_server.node.node_id
        by_class = listing["by_class"]
        assert by_class["SessionActor"] == 1 and by_class["CharacterActor"] == 1
        assert by_class["StorageActor"] == 1 and by_class["ZoneActor"] == 1
        rows = {r["class"]: r for r in listing["actors"]}
        for row in listing["actors"]:
            assert ROW_FIELDS <= row.keys(), row
        session = rows["SessionActor"]
        assert session["entity_id"] == session_id
        assert session["messages_handled"] >= 3 and session["inbox_depth"] == 0
        assert session["started_at"].endswith("Z") and session["last_message_age_s"] >= 0
        assert rows["CharacterActor"]["entity_id"] == character_id

        status, _, body = get(live_server.url + "/debug/actors/" + session["urn"])
        assert status == 200, body
        detail = json.loads(body)
        assert detail["urn"] == session["urn"] and detail["class"] == "SessionActor"
        assert SESSION_FIELDS <= detail["detail"].keys()
        d = detail["detail"]
        assert (d["session_id"], d["user_id"], d["character_id"], d["status"], d["last_action_seq"]) == (
            session_id, "debug-alice", character_id, "active", 1)
        assert d["protocol_version"] == SERVER_VERSION and d["reconnect_attempts"] == 0

        only = json.loads(get(live_server.url + "/debug/actors?class=CharacterActor")[2])
        assert [r["class"] for r in only["actors"]] == ["CharacterActor"]
        alice.close()

    asyncio.run(play())


def test_unknown_urn_is_404(live_server: Any) -> None:
    status, _, body = get(live_server.url + "/debug/actors/urn:uuid:00000000-0000-0000-0000-000000000000")
    assert status == 404 and json.loads(body)["error"] == "not_found"


def test_html_when_the_browser_prefers_it(live_server: Any) -> None:
    browser = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    status, headers, body = get(live_server.url + "/debug/actors", browser)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "<table>" in body and "StorageActor" in body and "inbox_depth" in body
    storage = next(r for r in actors_json(live_server.url)["actors"] if r["class"] == "StorageActor")
    status, headers, body = get(live_server.url + "/debug/actors/" + storage["urn"], browser)
    assert status == 200 and headers["Content-Type"].startswith("text/html") and "max_batch" in body
    status, headers, _ = get(live_server.url + "/debug/actors", {"Accept": "*/*"})
    assert headers["Content-Type"].startswith("application/json")


def test_accept_negotiation() -> None:
    assert prefers_html("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
    assert not prefers_html("*/*")
    assert not prefers_html(None)
    assert not prefers_html("application/json, text/html;q=0.5")
    assert prefers_html("text/*;q=0.5, application/json;q=0.4")


def test_admin_token_required_when_configured(start_server: Callable[..., Any]) -> None:
    server = start_server(admin_token="s3cret-admin-token")
    url = server.url + "/debug/actors"
    status, headers, body = get(url)
    assert status == 401 and "Bearer" in headers["WWW-Authenticate"], body
    assert get(url, {"Authorization": "Bearer not-the-token"})[0] == 401
    assert get(url, {"Authorization": "Basic s3cret-admin-token"})[0] == 401
    storage_urn = next(r["urn"] for r in actors_json(server.url, Authorization="Bearer s3cret-admin-token")["actors"]
                       if r["class"] == "StorageActor")
    assert get(server.url + "/debug/actors/" + storage_urn, {"Authorization": "Bearer wrong"})[0] == 401
    assert get(server.url + "/debug/actors/" + storage_urn, {"Authorization": "Bearer s3cret-admin-token"})[0] == 200


def _non_loopback_ip() -> str | None:
    """An address of this host other than loopback, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if is_loopback(ip) or ip == "0.0.0.0" else ip


def test_without_admin_token_only_loopback_is_served(start_server: Callable[..., Any]) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("10.1.2.3") and not is_loopback("not an ip")
    ip = _non_loopback_ip()
    if ip is None:
        pytest.skip("this host has no non-loopback address to call from")
    server = start_server(server={"host": "0.0.0.0", "allow_remote_dev": True})
    port = server.node.port
    status, _, body = get(f"http://{ip}:{port}/debug/actors")
    assert status == 403 and "loopback" in json.loads(body)["message"]
    assert get(f"http://127.0.0.1:{port}/debug/actors")[0] == 200
    assert get(f"http://{ip}:{port}/healthz")[0] == 200  # the guard is only on /debug


class Gate:
    """A message that blocks its handler until ``release`` is set."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()


class Nudge:
    """A message queued behind the gate."""


class StuckActor(DedicatedThreadActor):
    """A test actor that blocks inside a handler (as a StorageActor stuck in a commit would)."""

    def __init__(self) -> None:
        super().__init__()
        self.entity_id = "stuck-1"

    def on_Gate(self, msg: Gate) -> None:
        self.debug_status = "blocked on an event"
        msg.entered.set()
        msg.release.wait(30)
        self.debug_status = "running"

    def on_Nudge(self, msg: Nudge) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"note": "blocks until released"}


class StuckPooledActor(TilehallActor):
    """The same on the pooled runtime."""

    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.entity_id = "stuck-pooled"
        self.gate = gate

    def on_Gate(self, msg: Gate) -> None:
        self.debug_status = "blocked on an event"
        msg.entered.set()
        msg.release.wait(30)


def test_listing_answers_while_an_actor_is_blocked(live_server: Any) -> None:
    gate = Gate()
    stuck = StuckActor.start()
    try:
        stuck.tell(gate)
        assert gate.entered.wait(5)
        for _ in range(3):
            stuck.tell(Nudge())
        started = time.monotonic()
        listing = actors_json(live_server.url)
        row = next(r for r in listing["actors"] if r["urn"] == stuck.actor_urn)
        assert (row["class"], row["entity_id"], row["status"]) == ("StuckActor", "stuck-1", "blocked on an event")
        assert row["inbox_depth"] == 3
        assert row["handling"] == "Gate"  # what it is doing now, read while it does it
        status, _, body = get(live_server.url + "/debug/actors/" + stuck.actor_urn)
        assert status == 200 and json.loads(body)["detail"] == {"note": "blocks until released"}
        _, _, metrics = get(live_server.url + "/metrics")
        assert 'tilehall_actors{class="StuckActor"} 1.0' in metrics
        # Answered while the actor is still blocked: the handler never waited for it.
        assert not gate.release.is_set() and time.monotonic() - started < 2.0
    finally:
        gate.release.set()
        stuck.stop(timeout=5)
    poll(lambda: actors_json(live_server.url), lambda j: all(r["urn"] != stuck.actor_urn for r in j["actors"]))


def test_listing_answers_while_the_storage_actor_is_stuck_in_a_commit(start_server: Callable[..., Any]) -> None:
    """Hold a lock on action_seq so the StorageActor's COPY waits inside its commit (a row lock
    would only park the character's work: the batch skips locked rows)."""
    import psycopg

    server = start_server(game={"chats_per_second": 50.0})

    def storage_row() -> dict[str, Any]:
        return next(r for r in actors_json(server.url)["actors"] if r["class"] == "StorageActor")

    def batches(urn: str) -> int:
        return json.loads(get(server.url + "/debug/actors/" + urn)[2])["detail"]["batches"]

    async def play() -> None:
        alice = await login(server.ws_url, issue_dev_token(server.settings, "debug-stuck"))
        assert (await alice.answer(await alice.chat("first")))["type"] == "ack"
        idle = poll(storage_row, lambda r: r["inbox_depth"] == 0)
        done = batches(idle["urn"])
        with psycopg.connect(server.settings.database_url) as conn:
            conn.execute("LOCK TABLE action_seq IN EXCLUSIVE MODE")  # the commit waits on it
            seq = await alice.chat("waiting for a lock")
            # The storage actor took the work and is inside its commit, blocked on our lock.
            stuck = poll(storage_row, lambda r: r["messages_handled"] > idle["messages_handled"]
                         and r["status"] == "committing 1")
            started = time.monotonic()
            for _ in range(5):
                row = storage_row()
                assert row["urn"] == stuck["urn"]
                assert row["status"] == "committing 1"
                assert batches(stuck["urn"]) == done  # the batch has not finished
            assert time.monotonic() - started < 2.0
            await alice.expect_none(lambda f: f.get("type") in ("ack", "reject"), 0.2)
            conn.rollback()  # release the lock: the commit lands and the ack follows
        assert (await alice.answer(seq))["type"] == "ack"
        assert batches(stuck["urn"]) == done + 1
        alice.close()

    asyncio.run(play())


def test_json_logs_one_object_per_line_with_context(tmp_path: Any) -> None:
    settings = Settings(logging={"format": "json", "level": "INFO"}, var_dir=tmp_path)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        configure_logging(settings)
        root.handlers[0].setStream(stream)
        log = logging.getLogger("tilehall.test")
        log.info("player %s joined", "alice",
                 extra={"session_id": "s-1", "character_id": "c-1", "user_id": "alice"})
        log.warning("plain line\nwith a newline")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed", extra={"user_id": "bob"})
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    first, second, third = (json.loads(line) for line in lines)
    assert first["message"] == "player alice joined" and first["level"] == "INFO"
    assert (first["session_id"], first["character_id"], first["user_id"]) == ("s-1", "c-1", "alice")
    assert first["logger"] == "tilehall.test" and first["ts"].endswith("Z")
    assert second["message"] == "plain line\nwith a newline" and "session_id" not in second
    assert third["user_id"] == "bob" and "ValueError: boom" in third["exc"]
