"""webclient/js/protocol.js in a real browser against a scripted fake WebSocket.

These pin the client's side of the protocol (DESIGN section 4) exactly, frame by frame, with
no game server: sequence numbering, resume with resend, duplicate suppression, close codes,
backoff and heartbeat. The end-to-end tests (test_play.py) show the same against the server.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

# A WebSocket stand-in: records what the client sends; the test plays the server.
FAKE_SOCKET = """
window.sockets = [];
window.WebSocket = class FakeSocket {
  static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;
  constructor(url) {
    this.url = url; this.readyState = 0; this.sent = []; window.sockets.push(this);
    setTimeout(() => { this.readyState = 1; this.onopen && this.onopen({}); }, 0);
  }
  send(text) { this.sent.push(JSON.parse(text)); }
  close() { this.readyState = 3; }
  deliver(frame) { this.onmessage && this.onmessage({ data: JSON.stringify(frame) }); }
  drop(code = 1006, reason = '') { this.readyState = 3; this.onclose && this.onclose({ code, reason }); }
};
"""

START = """async ({heartbeat}) => {
  const m = await import('/js/protocol.js');
  window.protocol = m;
  window.seen = [];
  const conn = new m.Connection({ url: 'ws://test/ws', version: '1.2.3', getToken: async () => 'jwt' });
  for (const name of ['status', 'welcome', 'snapshot', 'resumed', 'event', 'ack', 'reject', 'fatal', 'latency', 'notice']) {
    conn.on(name, (d) => window.seen.push({ name, ...JSON.parse(JSON.stringify(d)) }));
  }
  window.conn = conn;
  conn.start();
}"""

SELF = "11111111-1111-4111-8111-111111111111"
OTHER = "22222222-2222-4222-8222-222222222222"
TS = "2024-05-01T12:00:00.000000Z"
FEATURES = ["events", "ack_event"]  # what the client asks for in hello and resume


def welcome(last_action_seq=41, event_seq=0, heartbeat_ms=60000):
    me = {"character_id": SELF, "display_name": "alice", "x": 4, "y": 6, "health": 100, "max_health": 100}
    return {
        "type": "welcome", "session_id": "33333333-3333-4333-8333-333333333333", "server_version": "1.2.3",
        "character": {**me, "inventory": [], "stats": {}}, "last_action_seq": last_action_seq,
        "reconnect_token": "r" * 43, "reconnect_expires_at": "2999-01-01T00:00:00.000000Z",
        "heartbeat_interval_ms": heartbeat_ms, "event_seq": event_seq,
        "world": {"map_id": "default", "width": 40, "height": 30, "characters": [me], "items": []},
    }


def event(event_seq, action_id, character_id=OTHER, action_type="chat", payload=None):
    return {
        "type": "event", "event_seq": event_seq, "action_id": action_id, "character_id": character_id,
        "display_name": "bob", "action_type": action_type, "payload": payload or {"text": "hi"},
        "persisted_at": TS,
    }


def ack(seq, action_id, state=None):
    return {"type": "ack", "seq": seq, "action_id": action_id, "persisted_at": TS, "state": state or {}}


def aid(n: int) -> str:
    return f"aaaaaaaa-aaaa-4aaa-8aaa-{n:012d}"


def test_an_events_frame_is_its_events_in_order_and_a_plain_event_still_works(harness):
    harness.deliver(welcome(event_seq=0))
    harness.deliver({"type": "events", "events": [event(1, aid(1)), event(2, aid(2)), event(3, aid(3))]})
    harness.deliver(event(4, aid(4)))
    harness.deliver({"type": "events", "events": [event(4, aid(4)), event(5, aid(5))]})  # 4 again: once
    assert [e["eventSeq"] for e in harness.seen("event")] == [1, 2, 3, 4, 5]
    assert harness.js("window.conn.lastEventSeq") == 5
    assert harness.js("window.conn.stats.duplicateEvents") == 1


def test_the_ack_carries_the_own_event_its_seq_counts_for_the_resume(harness):
    harness.deliver(welcome(last_action_seq=41, event_seq=0))
    move_id = harness.send_action("move", {"dx": 1, "dy": 0})
    harness.deliver(event(1, aid(1)))
    own = event(2, aid(2), character_id=SELF, action_type="move",
                payload={"x": 5, "y": 6, "dx": 1, "dy": 0, "health": 100, "max_health": 100})
    harness.deliver({**ack(42, aid(2), {"x": 5, "y": 6}), "event": own})
    acks = harness.seen("ack")
    assert [(a["id"], a["seq"], a["state"]) for a in acks] == [(move_id, 42, {"x": 5, "y": 6})]
    assert [e["eventSeq"] for e in harness.seen("event")] == [1], "the own event applies through the ack"
    assert harness.js("window.conn.lastEventSeq") == 2
    harness.drop(1006)
    harness.wait_sockets(2)
    assert harness.sent()[0]["last_event_seq"] == 2


class Harness:
    def __init__(self, page):
        self.page = page

    def deliver(self, frame, socket=-1):
        self.page.evaluate("([i, f]) => window.sockets.at(i).deliver(f)", [socket, frame])

    def drop(self, code=1006, reason="", socket=-1):
        self.page.evaluate("([i, c, r]) => window.sockets.at(i).drop(c, r)", [socket, code, reason])

    def sent(self, socket=-1):
        return self.page.evaluate("(i) => window.sockets.at(i).sent", socket)

    def seen(self, name=None):
        seen = self.page.evaluate("window.seen")
        return [s for s in seen if name is None or s["name"] == name]

    def wait_sockets(self, n):
        self.page.wait_for_function("(n) => window.sockets.length >= n && window.sockets.at(-1).sent.length > 0", arg=n, timeout=5000)

    def wait_sent(self, n, socket=-1):
        self.page.wait_for_function("([i, n]) => window.sockets.at(i).sent.length >= n", arg=[socket, n], timeout=5000)

    def send_action(self, action_type, payload):
        return self.page.evaluate("([t, p]) => window.conn.sendAction(t, p)", [action_type, payload])

    def js(self, expr):
        return self.page.evaluate(expr)


@pytest.fixture
def harness(new_page, client_files):
    page = new_page()
    page.add_init_script(FAKE_SOCKET)
    page.goto(client_files + "/blank.html")
    page.evaluate(START, {"heartbeat": 60000})
    h = Harness(page)
    h.wait_sockets(1)
    return h


def test_hello_first_then_actions_numbered_after_last_action_seq(harness):
    assert harness.sent() == [{"type": "hello", "protocol_version": "1.2.3", "token": "jwt", "features": FEATURES}]
    harness.deliver(welcome(last_action_seq=41))
    assert harness.js("window.conn.status") == "active"
    harness.send_action("move", {"dx": 1, "dy": 0})
    harness.send_action("chat", {"text": "hello"})
    actions = [f for f in harness.sent() if f["type"] == "action"]
    assert [(a["seq"], a["action_type"], a["payload"]) for a in actions] == [
        (42, "move", {"dx": 1, "dy": 0}),
        (43, "chat", {"text": "hello"}),
    ]
    assert len(harness.js("window.conn.pendingActions()")) == 2

    harness.deliver(ack(42, aid(1), {"x": 5, "y": 6}))
    harness.deliver(ack(42, aid(1), {"x": 5, "y": 6}))  # a repeated ack changes nothing
    acks = harness.seen("ack")
    assert [(a["seq"], a["state"]) for a in acks] == [(42, {"x": 5, "y": 6})]
    assert [a["seq"] for a in harness.js("window.conn.pendingActions()")] == [43]
    assert harness.js("window.conn.stats.duplicateAcks") == 1


def test_drop_resumes_replays_and_resends_without_applying_twice(harness):
    harness.deliver(welcome(last_action_seq=41, event_seq=0))
    harness.deliver(event(1, aid(1)))
    chat_id = harness.send_action("chat", {"text": "hello"})
    move_id = harness.send_action("move", {"dx": 1, "dy": 0})
    harness.drop(1006)
    assert harness.js("window.conn.status") == "reconnecting"

    harness.wait_sockets(2)
    resume = harness.sent()[0]
    assert resume == {
        "type": "resume", "protocol_version": "1.2.3", "token": "jwt",
        "reconnect_token": "r" * 43, "last_event_seq": 1, "features": FEATURES,
    }
    # The chat (seq 42) was committed before the drop; its ack was lost. The move never arrived.
    harness.deliver({
        "type": "resumed", "session_id": "33333333-3333-4333-8333-333333333333",
        "reconnect_token": "s" * 43, "reconnect_expires_at": "2999-01-01T00:00:00.000000Z",
        "sync": "delta", "replayed": 2, "world": None, "event_seq": 3,
    })
    harness.deliver(event(1, aid(1)))  # already seen before the drop
    harness.deliver(event(2, aid(2), character_id=SELF, payload={"text": "hello"}))  # our own chat
    harness.deliver(event(3, aid(3), payload={"text": "while you were away"}))
    assert harness.js("window.conn.status") == "active"

    resent = [f for f in harness.sent() if f["type"] == "action"]
    assert [(a["seq"], a["action_type"]) for a in resent] == [(42, "chat"), (43, "move")]
    harness.deliver(ack(42, aid(2)))  # the original ack of the duplicate
    harness.deliver(ack(43, aid(4), {"x": 5, "y": 6}))

    events = harness.seen("event")
    assert [e["eventSeq"] for e in events] == [1, 3], "each event once; our own chat only via its ack"
    acks = harness.seen("ack")
    assert [(a["id"], a["seq"]) for a in acks] == [(chat_id, 42), (move_id, 43)]
    assert harness.js("window.conn.pendingActions()") == []
    assert harness.js("window.conn.lastEventSeq") == 3

    # The next drop resumes with the new single-use token.
    harness.drop(1001)
    harness.wait_sockets(3)
    assert harness.sent()[0]["reconnect_token"] == "s" * 43


def test_snapshot_resume_replaces_the_world_and_sets_event_seq(harness):
    harness.deliver(welcome(event_seq=0))
    harness.drop(1006)
    harness.wait_sockets(2)
    snap = welcome()["world"] | {"items": [{"item_id": "item-3", "kind": "potion", "x": 9, "y": 2}]}
    harness.deliver({
        "type": "resumed", "session_id": "33333333-3333-4333-8333-333333333333",
        "reconnect_token": "s" * 43, "reconnect_expires_at": "2999-01-01T00:00:00.000000Z",
        "sync": "snapshot", "replayed": 0, "world": snap, "event_seq": 40,
    })
    snapshots = harness.seen("snapshot")
    assert len(snapshots) == 1
    assert snapshots[0]["world"]["items"] == [{"id": "item-3", "kind": "potion", "x": 9, "y": 2}]
    harness.deliver(event(40, aid(9)))  # inside the snapshot already
    harness.deliver(event(41, aid(10)))
    assert [e["eventSeq"] for e in harness.seen("event")] == [41]


def test_invalid_reconnect_token_starts_over_with_hello(harness):
    harness.deliver(welcome(last_action_seq=41))
    pending = harness.send_action("chat", {"text": "kept"})
    harness.drop(1006)
    harness.wait_sockets(2)
    assert harness.sent()[0]["type"] == "resume"
    harness.deliver({"type": "error", "code": "reconnect_invalid", "message": "reconnect token used"})
    harness.drop(4004, "reconnect_invalid")
    harness.wait_sockets(3)
    # A fresh session, for the same character.
    assert harness.sent()[0] == {
        "type": "hello", "protocol_version": "1.2.3", "token": "jwt", "features": FEATURES, "character_id": SELF,
    }
    # The server had already applied 42; a fresh session resends it under its own seq.
    harness.deliver(welcome(last_action_seq=42))
    assert [(f["seq"], f["payload"]) for f in harness.sent() if f["type"] == "action"] == [(42, {"text": "kept"})]
    harness.deliver(ack(42, aid(5)))
    assert [a["id"] for a in harness.seen("ack")] == [pending]


def test_version_mismatch_is_final_and_names_the_server_version(harness):
    harness.deliver({"type": "error", "code": "version_mismatch",
                     "message": "protocol_version 1.2.3 does not match server version 1.3.0; reload the page"})
    harness.drop(4000, "version_mismatch")
    fatal = harness.seen("fatal")
    assert [(f["kind"], f["serverVersion"]) for f in fatal] == [("version", "1.3.0")]
    assert harness.js("window.conn.status") == "closed"
    assert harness.js("'retry' in window.conn._timers") is False, "a stale page must not retry"


@pytest.mark.parametrize(("code", "kind"), [(4009, "replaced"), (4001, "auth"), (4003, "auth")])
def test_closes_that_must_not_reconnect(harness, code, kind):
    harness.deliver(welcome())
    if code == 4009:
        harness.deliver({"type": "kicked", "reason": "session_replaced"})
    harness.drop(code)
    assert [f["kind"] for f in harness.seen("fatal")] == [kind]
    assert harness.js("'retry' in window.conn._timers") is False


def test_gap_reported_by_server_renumbers_unanswered_actions(harness):
    harness.deliver(welcome(last_action_seq=10))
    harness.send_action("move", {"dx": 1, "dy": 0})   # 11
    harness.send_action("move", {"dx": 0, "dy": 1})   # 12
    harness.deliver({"type": "resync_required", "expected_seq": 11})
    actions = [(f["seq"], f["payload"]) for f in harness.sent() if f["type"] == "action"]
    assert actions[-2:] == [(11, {"dx": 1, "dy": 0}), (12, {"dx": 0, "dy": 1})]
    assert harness.js("window.conn.nextSeq") == 13


def test_backoff_is_jittered_exponential_and_capped(harness):
    delays = harness.js("""[1, 2, 3, 4, 5, 10, 30].map((n) => [
        window.protocol.backoffDelay(n, 500, 15000, () => 0),
        window.protocol.backoffDelay(n, 500, 15000, () => 0.999999)])""")
    lows, highs = zip(*delays, strict=True)
    assert list(lows) == [250, 500, 1000, 2000, 4000, 7500, 7500]
    assert list(highs) == [500, 1000, 2000, 4000, 8000, 15000, 15000]


def test_heartbeat_pings_and_pong_gives_latency(new_page, client_files):
    page = new_page()
    page.add_init_script(FAKE_SOCKET)
    page.goto(client_files + "/blank.html")
    page.evaluate(START, {"heartbeat": 50})
    h = Harness(page)
    h.wait_sockets(1)
    h.deliver(welcome(heartbeat_ms=50))
    h.wait_sent(3)  # hello + at least two pings
    pings = [f for f in h.sent() if f["type"] == "ping"]
    assert len(pings) >= 2 and all(isinstance(p["t"], int) for p in pings)
    t = pings[-1]["t"]
    h.deliver({"type": "pong", "t": t, "server_time": t})
    latency = h.seen("latency")
    assert len(latency) == 1 and latency[0]["ms"] >= 0


def resumed(sync="delta", replayed=0, event_seq=0):
    return {
        "type": "resumed", "session_id": "33333333-3333-4333-8333-333333333333",
        "reconnect_token": "s" * 43, "reconnect_expires_at": "2999-01-01T00:00:00.000000Z",
        "sync": sync, "replayed": replayed, "world": None, "event_seq": event_seq,
    }


def test_a_draining_node_moves_the_player_at_once_and_resends_unacked(harness):
    harness.deliver(welcome(last_action_seq=41, event_seq=5))
    move_id = harness.send_action("move", {"dx": 1, "dy": 0})  # 42, unanswered when the node drains
    harness.deliver({"type": "kicked", "reason": "node_draining"})
    assert harness.js("window.conn.status") == "reconnecting", "a drain is not an ending"
    harness.drop(1012, "node_draining")

    statuses = [s for s in harness.seen("status") if s.get("moving")]
    assert statuses and all(s["status"] == "reconnecting" for s in statuses)
    assert statuses[-1]["retryInMs"] == 0, "no backoff after a drain"
    assert harness.seen("fatal") == [] and harness.seen("notice") == []
    harness.wait_sockets(2)
    assert harness.js("window.sockets.at(-1).url") == "ws://test/ws", "the same URL: the balancer picks the node"
    assert harness.sent() == [{
        "type": "resume", "protocol_version": "1.2.3", "token": "jwt",
        "reconnect_token": "r" * 43, "last_event_seq": 5, "features": FEATURES,
    }]
    assert harness.js("window.conn.status") == "reconnecting"

    harness.deliver(resumed(sync="delta", event_seq=5))
    assert harness.js("window.conn.status") == "active"
    assert [(f["seq"], f["payload"]) for f in harness.sent() if f["type"] == "action"] == [(42, {"dx": 1, "dy": 0})]
    harness.deliver(ack(42, aid(1), {"x": 5, "y": 6}))
    assert [a["id"] for a in harness.seen("ack")] == [move_id]
    assert harness.js("window.conn.attempt") == 0


def test_a_second_drain_close_before_resuming_backs_off(harness):
    harness.deliver(welcome())
    harness.drop(1012)
    harness.wait_sockets(2)
    # The balancer had not yet seen that node go unready: it refuses the resume with 1012 too.
    harness.deliver({"type": "kicked", "reason": "node_draining"})
    harness.drop(1012)
    last = harness.seen("status")[-1]
    assert (last["status"], last["attempt"]) == ("reconnecting", 2)
    assert last["retryInMs"] > 0, "a repeated 1012 waits, so an all-draining cluster is not hammered"
    assert harness.seen("fatal") == []


def test_a_refused_resume_after_a_drain_starts_over_with_hello(harness):
    harness.deliver(welcome(last_action_seq=41))
    harness.drop(1012)
    harness.wait_sockets(2)
    assert harness.sent()[0]["type"] == "resume"
    harness.drop(4004, "reconnect_invalid")
    harness.wait_sockets(3)
    assert harness.sent()[0] == {
        "type": "hello", "protocol_version": "1.2.3", "token": "jwt", "features": FEATURES, "character_id": SELF,
    }
