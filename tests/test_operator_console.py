"""The operators' console over HTTP (issue 14): the page and its files, this node's summary, the
cluster list from every node's summary in Redis, the actor detail's message counts, and the
operator actions (kick, broadcast), each logged and counted; the admin token reaches the page
through the sign-in cookie, and a cookie POST needs the console's header."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from waiting import poll
from wsclient import login

from actors.vocabulary import CloseCode, KickReason
from transport.auth import issue_dev_token
from transport.console_summary import STUCK_AFTER_S, looks_stuck


def call(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None,
         raw: bytes | None = None) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of one request; HTTP errors are returned, not raised."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode("utf-8")


def operator_actions(server: Any, action: str) -> float:
    return server.node.metrics.registry.get_sample_value(
        "tilehall_operator_actions_total", {"action": action}) or 0.0


def test_what_looks_stuck() -> None:
    now = 1000.0
    long_ago, just_now = now - STUCK_AFTER_S - 1, now - 0.1

    def snap(**over: Any) -> dict[str, Any]:
        return {"inbox_depth": 0, "handling": None, "last_message_at": long_ago, "started_at": long_ago - 10, **over}

    assert not looks_stuck(snap(), now)  # idle for long, nothing waiting: fine
    assert looks_stuck(snap(inbox_depth=3), now)  # messages wait, none handled for long
    assert not looks_stuck(snap(inbox_depth=3, last_message_at=just_now), now)  # busy, but moving
    assert looks_stuck(snap(handling="Persist"), now)  # one handler for long
    assert not looks_stuck(snap(handling="Persist", last_message_at=just_now), now)
    assert looks_stuck(snap(inbox_depth=1, last_message_at=None), now)  # never handled one
    assert not looks_stuck(snap(inbox_depth=1, last_message_at=None, started_at=just_now), now)


def test_page_and_files_are_served(live_server: Any) -> None:
    status, headers, body = call(live_server.url + "/debug/", headers={"Accept": "text/html"})
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert '<script type="module" src="/debug/console/console.js">' in body
    status, headers, body = call(live_server.url + "/debug/console/console.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    for name in ("api.js", "actors.js", "detail.js", "summary.js", "confirm.js", "console.css"):
        assert call(live_server.url + "/debug/console/" + name)[0] == 200, name
    assert call(live_server.url + "/debug/console/nope.js")[0] == 404


def test_summary_counts_the_session_and_the_cluster_lists_both_nodes(start_server: Any) -> None:
    one, two = start_server(), start_server()

    async def play() -> None:
        alice = await login(one.ws_url, issue_dev_token(one.settings, "console-sum"))
        await alice.answer(await alice.chat("hello"))
        summary = poll(lambda: json.loads(call(one.url + "/debug/summary")[2]),
                       lambda s: s["sessions"]["active"] == 1 and s["last_minute"]["acks"] >= 1)
        assert summary["node_id"] == one.node.node_id and summary["health"] == "ready"
        assert summary["actors"]["SessionActor"] >= 1 and summary["last_minute"]["batches"] >= 1
        assert summary["last_minute"]["commit_avg_ms"] > 0
        assert summary["console_url"].endswith(f":{one.node.port}/debug/")
        # Each node publishes every 2 s: within a few seconds node two lists both, node one's
        # with its session.
        def sessions_of_one(listing: dict[str, Any]) -> int:
            return next((n["sessions_total"] for n in listing["nodes"] if n["node_id"] == one.node.node_id), 0)

        listing = poll(lambda: json.loads(call(two.url + "/debug/cluster")[2]),
                       lambda c: two.node.node_id in {n["node_id"] for n in c["nodes"]} and sessions_of_one(c) == 1,
                       timeout=6)
        assert listing["node_id"] == two.node.node_id
        alice.close()

    asyncio.run(play())
    two.call(two.node.console.stop)  # what a graceful stop does first: its summary is withdrawn
    poll(lambda: json.loads(call(one.url + "/debug/cluster")[2]),
         lambda c: two.node.node_id not in {n["node_id"] for n in c["nodes"]})


def test_detail_counts_messages_by_type(live_server: Any) -> None:
    async def play() -> None:
        alice = await login(live_server.ws_url, issue_dev_token(live_server.settings, "console-detail"))
        await alice.answer(await alice.chat("one"))
        session_id = alice.welcome["session_id"]
        listing = json.loads(call(live_server.url + "/debug/actors")[2])
        urn = next(r["urn"] for r in listing["actors"] if r["entity_id"] == session_id)
        assert all("stuck" in r for r in listing["actors"])
        detail = json.loads(call(live_server.url + "/debug/actors/" + urn)[2])
        counts = detail["message_counts"]
        assert counts.get("ClientAction") == 1 and counts.get("StartSession") == 1, counts
        assert sum(counts.values()) == detail["messages_handled"]
        assert detail["handling"] is None
        alice.close()

    asyncio.run(play())


def test_kick_closes_the_socket_with_a_readable_frame_and_is_counted(live_server: Any, caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="transport.http_operator")

    async def play() -> None:
        alice = await login(live_server.ws_url, issue_dev_token(live_server.settings, "console-kick"))
        session_id = alice.welcome["session_id"]
        before = operator_actions(live_server, "kick")
        status, _, body = call(live_server.url + f"/admin/sessions/{session_id}/kick", "POST", {})
        assert status == 200, body
        code, _ = await alice.wait_closed(5)
        assert code == CloseCode.KICKED_BY_OPERATOR
        assert {"type": "kicked", "reason": KickReason.OPERATOR} in alice.history
        assert operator_actions(live_server, "kick") == before + 1
        logged = [r for r in caplog.records if getattr(r, "operator_action", None) == "kick"]
        assert logged and logged[0].session_id == session_id and "127.0.0.1" in logged[0].getMessage()
        # The session is gone: a second kick finds nothing.
        poll(lambda: call(live_server.url + f"/admin/sessions/{session_id}/kick", "POST", {})[0], lambda s: s == 404)
        assert call(live_server.url + "/admin/sessions/not-a-uuid/kick", "POST", {})[0] == 404

    asyncio.run(play())


def test_broadcast_reaches_the_zone_and_bad_bodies_are_refused(live_server: Any) -> None:
    zone = live_server.node.world.map_id

    async def play() -> None:
        alice = await login(live_server.ws_url, issue_dev_token(live_server.settings, "console-bcast"))
        before = operator_actions(live_server, "broadcast")
        status, _, body = call(live_server.url + "/admin/broadcast", "POST", {"zone": zone, "text": "restart at 5"})
        assert status == 200 and json.loads(body)["sessions"] == 1, body
        event = await alice.read_until(
            lambda f: f["type"] == "event" and f["payload"].get("kind") == "announcement", timeout=5)
        assert event["action_type"] == "system" and event["payload"]["text"] == "restart at 5"
        assert event["display_name"] == "operator"
        assert operator_actions(live_server, "broadcast") == before + 1
        alice.close()

    asyncio.run(play())
    for bad in ({}, {"text": ""}, {"text": "x" * 281}, {"text": "a\nb"}, {"text": "hi", "zone": 3},
                {"text": "hi", "extra": 1}, [1]):
        assert call(live_server.url + "/admin/broadcast", "POST", bad)[0] == 400, bad
    assert call(live_server.url + "/admin/broadcast", "POST", raw=b"{not json")[0] == 400
    assert call(live_server.url + "/admin/broadcast", "POST", {"text": "hi", "zone": "elsewhere"})[0] == 404


def test_drain_from_the_console_is_counted(live_server: Any) -> None:
    async def play() -> None:
        alice = await login(live_server.ws_url, issue_dev_token(live_server.settings, "console-drain"))
        status, _, body = call(live_server.url + "/admin/drain", "POST", {})
        assert status == 200 and json.loads(body)["parked"] == 1, body
        code, _ = await alice.wait_closed(5)
        assert code == CloseCode.SERVICE_RESTART
        assert operator_actions(live_server, "drain") == 1
        poll(live_server.node.stop_requested.is_set, bool)  # set just after the answer
        summary = json.loads(call(live_server.url + "/debug/summary")[2])
        assert summary["health"] == "draining"

    asyncio.run(play())


def test_broadcast_reaches_the_zone_on_the_other_nodes_too(start_server: Any) -> None:
    one, two = start_server(), start_server()

    def zone_of_one_hears_two() -> bool:
        listing = json.loads(call(one.url + "/debug/actors?class=ZoneActor")[2])
        details = [json.loads(call(one.url + "/debug/actors/" + r["urn"])[2]) for r in listing["actors"]]
        return any(d["detail"]["peers"] == [two.node.node_id] for d in details)

    poll(zone_of_one_hears_two, bool, timeout=10)

    async def play() -> None:
        bob = await login(two.ws_url, issue_dev_token(two.settings, "console-far"))
        status, _, body = call(one.url + "/admin/broadcast", "POST", {"text": "all nodes hear this"})
        assert status == 200 and json.loads(body)["sessions"] == 0, body  # none on node one
        event = await bob.read_until(
            lambda f: f["type"] == "event" and f["payload"].get("kind") == "announcement", timeout=5)
        assert event["payload"]["text"] == "all nodes hear this"
        bob.close()

    asyncio.run(play())


def test_admin_token_via_the_sign_in_cookie(start_server: Any) -> None:
    server = start_server(admin_token="s3cret-token")
    status, _, body = call(server.url + "/debug/", headers={"Accept": "text/html"})
    assert status == 401 and 'action="/debug/sign-in"' in body
    assert call(server.url + "/debug/summary")[0] == 401
    form = urllib.parse.urlencode({"token": "wrong"}).encode()
    assert call(server.url + "/debug/sign-in", "POST", raw=form)[0] == 401

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(server.url + "/debug/sign-in", data=urllib.parse.urlencode(
        {"token": "s3cret-token"}).encode(), method="POST")
    try:
        opener.open(req, timeout=5)
        raise AssertionError("no redirect")
    except urllib.error.HTTPError as exc:
        assert exc.code == 303 and exc.headers["Location"] == "/debug/"
        cookie = exc.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    jar = {"Cookie": cookie.split(";", 1)[0]}
    assert call(server.url + "/debug/summary", headers=jar)[0] == 200
    assert call(server.url + "/debug/", headers={**jar, "Accept": "text/html"})[0] == 200
    bad_jar = {"Cookie": "tilehall_admin=nope"}
    assert call(server.url + "/debug/summary", headers=bad_jar)[0] == 401
    # A POST by cookie alone (what a cross-site form could send) is refused; with the header it runs.
    body = {"text": "hello"}
    assert call(server.url + "/admin/broadcast", "POST", body, headers=jar)[0] == 403
    assert call(server.url + "/admin/broadcast", "POST", body, headers={**jar, "X-Tilehall-Console": "1"})[0] == 200
    assert call(server.url + "/admin/broadcast", "POST", body,
                headers={"Authorization": "Bearer s3cret-token"})[0] == 200
