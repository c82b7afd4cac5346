"""Protocol v1's optional features (docs/protocol.md 4.1): ``events`` (the consecutive events of
one write as one frame) and ``ack_event`` (the ack carries the action's own event, which is then
sent in no other frame). A client that does not ask gets exactly the plain frames.

The coalescing itself is checked on a real IOLoop against a handler that records what it is
asked to write (deterministic: the frames are queued before the loop runs the flush); the rest
drives a live server (real PostgreSQL, Redis and Tornado) and waits on frames with timeouts.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from wsclient import WSClient, is_type, login

from actors.base import find_actor
from transport import codec
from transport import server_frames as sf
from transport.auth import issue_dev_token
from transport.client_frames import FrameError, parse_client_frame
from transport.ws_out import SocketConnection

Frame = dict[str, Any]
FAST_GAME = {"chats_per_second": 200.0, "moves_per_second": 200.0, "view_radius": 100}
UUID_A = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
UUID_B = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
TS = "2024-05-01T12:00:00.000000Z"


def run(coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def token(server: Any) -> str:
    return issue_dev_token(server.settings, f"u-{uuid.uuid4().hex[:12]}")


def event(seq: int, text: str = "hi") -> str:
    return codec.event_json(seq, UUID_A, UUID_B, "bob", "chat", {"text": text}, TS)


def ack(seq: int) -> str:
    return codec.ack_json(seq, UUID_A, TS, {})


def events_of(frame: Frame) -> list[Frame]:
    """The events a frame carries: itself, an ``events`` frame's list, or an ack's own event."""
    if frame["type"] == "event":
        return [frame]
    if frame["type"] == "events":
        return frame["events"]
    if frame["type"] == "ack" and "event" in frame:
        return [frame["event"]]
    return []


async def events_until(c: WSClient, until: Callable[[Frame], bool], timeout: float = 5.0) -> list[Frame]:
    """Every event (from any frame) until one matches ``until``, that one included."""
    got: list[Frame] = []
    deadline = time.monotonic() + timeout
    while True:
        frame = await c.read_until(lambda f: bool(events_of(f)), max(0.0, deadline - time.monotonic()))
        for e in events_of(frame):
            got.append(e)
            if until(e):
                return got


# ------------------------------------------------------------------ the frames themselves


def test_features_are_parsed_strictly() -> None:
    hello = {"type": "hello", "protocol_version": "1", "token": "t"}
    assert parse_client_frame(json.dumps(hello)).features == []
    both = parse_client_frame(json.dumps({**hello, "features": ["events", "ack_event"]}))
    assert both.features == ["events", "ack_event"]
    with pytest.raises(FrameError) as info:
        parse_client_frame(json.dumps({**hello, "features": ["teleport"]}))
    assert info.value.field == "features.0"
    with pytest.raises(FrameError):
        parse_client_frame(json.dumps({**hello, "features": "events"}))


def test_coalesce_merges_only_runs_of_events_and_keeps_every_frame_in_place() -> None:
    frames = [ack(1), event(1), event(2), ack(2), event(3), "{\"type\":\"pong\",\"t\":1,\"server_time\":2}",
              event(4), event(5), event(6)]
    out = list(codec.coalesce_events(deque(frames)))
    kinds = [json.loads(f)["type"] for f in out]
    assert kinds == ["ack", "events", "ack", "event", "pong", "events"]
    flat = [e for f in out for e in (json.loads(f).get("events") or [json.loads(f)])]
    assert flat == [json.loads(f) for f in frames]
    for f in out:
        sf.parse_server_frame(f)  # every frame is valid protocol v1


def test_a_long_run_is_cut_into_frames_of_at_most_events_per_frame() -> None:
    n = codec.EVENTS_PER_FRAME * 2 + 3
    out = list(codec.coalesce_events(deque(event(i) for i in range(1, n + 1))))
    sizes = [len(json.loads(f).get("events") or [1]) for f in out]
    assert sizes == [codec.EVENTS_PER_FRAME, codec.EVENTS_PER_FRAME, 3]
    assert [e["event_seq"] for f in out for e in json.loads(f)["events"]] == list(range(1, n + 1))


def test_the_ack_with_its_event_is_a_valid_ack() -> None:
    own = event(7)
    frame = sf.parse_server_frame(codec.ack_with_event(ack(3), own))
    assert frame.type == "ack" and frame.seq == 3 and frame.event.event_seq == 7
    assert sf.Ack.model_validate_json(ack(3)).to_json() == ack(3)  # no "event" key without one


class _Recorder:
    """What SocketConnection asks the socket handler to write, one list per write."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []

    def write_frames(self, out: deque[str]) -> None:
        self.writes.append(list(out))
        out.clear()


async def _burst(features: list[str], frames: list[str]) -> list[list[str]]:
    handler = _Recorder()
    conn = SocketConnection(handler)
    conn.use_features(features)
    for f in frames:  # queued before the loop can run the flush: one burst
        conn.send(f)
    deadline = time.monotonic() + 5
    while not handler.writes:
        assert time.monotonic() < deadline, "the flush never ran"
        await asyncio.sleep(0.01)
    return handler.writes


def test_a_burst_goes_out_as_one_write_with_the_events_coalesced() -> None:
    frames = [event(1), event(2), event(3), ack(1), event(4)]
    writes = run(_burst(["events"], frames))
    assert len(writes) == 1
    assert [json.loads(f)["type"] for f in writes[0]] == ["events", "ack", "event"]
    assert [e["event_seq"] for e in json.loads(writes[0][0])["events"]] == [1, 2, 3]


def test_a_client_that_did_not_ask_gets_the_plain_frames() -> None:
    frames = [event(1), event(2), event(3), ack(1), event(4)]
    assert run(_burst([], frames)) == [frames]
    assert run(_burst(["ack_event"], frames)) == [frames]


# ------------------------------------------------------------------ a live server


def _session_actor(server: Any, session_id: str) -> Any:
    ref = server.node.directory.sessions.get(session_id)
    return find_actor(ref.actor_urn) if ref is not None else None


def test_an_old_client_gets_ack_and_own_event_and_never_an_events_frame(start_server: Callable[..., Any]) -> None:
    server = start_server(game=FAST_GAME)

    async def scenario() -> None:
        alice = await login(server.ws_url, token(server))
        bob = await login(server.ws_url, token(server))
        seqs = [await bob.chat(f"line {i}") for i in range(5)]
        answers = await bob.answers_for(seqs)
        ids = {answers[s]["action_id"] for s in seqs}
        assert all("event" not in answers[s] for s in seqs)
        own = await events_until(bob, lambda e: e["payload"].get("text") == "line 4")
        assert {e["action_id"] for e in own if e["action_id"] in ids} == ids
        seen = await events_until(alice, lambda e: e["payload"].get("text") == "line 4")
        assert {e["action_id"] for e in seen if e["action_id"] in ids} == ids
        for c in (alice, bob):
            assert all(f["type"] != "events" for f in c.history)
            seq_list = [e["event_seq"] for f in c.history for e in events_of(f)]
            assert seq_list == list(range(seq_list[0], seq_list[0] + len(seq_list)))
        alice.close()
        bob.close()

    run(scenario())


def test_the_ack_carries_the_own_event_and_no_other_frame_does(start_server: Callable[..., Any]) -> None:
    """bob asks for ack_event: each ack holds his event (same action_id, the next event_seq of
    his session), no separate event frame of his actions comes, an observer still gets them,
    and a resume replays them as plain events with the same event_seq."""
    server = start_server(game=FAST_GAME)

    async def scenario() -> None:
        alice = await login(server.ws_url, token(server))
        bob_token = token(server)
        bob = await login(server.ws_url, bob_token, features=["ack_event"])
        before = max([e["event_seq"] for f in bob.history for e in events_of(f)] or [bob.welcome["event_seq"]])
        seqs = [await bob.chat(f"line {i}") for i in range(5)]
        answers = await bob.answers_for(seqs)
        own = [answers[s]["event"] for s in seqs]
        assert [e["action_id"] for e in own] == [answers[s]["action_id"] for s in seqs]
        assert [e["payload"]["text"] for e in own] == [f"line {i}" for i in range(5)]
        assert all(e["character_id"] == bob.welcome["character"]["character_id"] for e in own)
        assert all(e["persisted_at"] == answers[s]["persisted_at"] for e, s in zip(own, seqs, strict=True))
        # Then alice chats: her event reaches bob after any event of his own the zone would send.
        await alice.answer(await alice.chat("after"))
        await events_until(bob, lambda e: e["payload"].get("text") == "after")
        ids = {e["action_id"] for e in own}
        separate = [f for f in bob.history if f["type"] == "event" and f["action_id"] in ids]
        assert separate == [], "the own event was also sent on its own"
        numbered = [e["event_seq"] for f in bob.history for e in events_of(f)]
        assert numbered == list(range(numbered[0], numbered[0] + len(numbered))), "event_seq has a gap"
        seen = await events_until(alice, lambda e: e["payload"].get("text") == "line 4")
        assert {e["action_id"] for e in seen} >= ids, "an observer still gets every event"

        # Drop and resume from before the chats: the replay holds them, numbered as in the acks.
        session_id = bob.welcome["session_id"]
        bob.close()
        deadline = time.monotonic() + 5
        while getattr(_session_actor(server, session_id), "status", None) != "reconnecting":
            assert time.monotonic() < deadline, "the session did not notice the drop"
            await asyncio.sleep(0.02)
        c = await WSClient.connect(server.ws_url)
        resumed = await c.resume(bob_token, bob.welcome["reconnect_token"], before, features=["ack_event"])
        assert resumed["sync"] == "delta"
        replay = [await c.read_until(is_type("event")) for _ in range(resumed["replayed"])]
        by_id = {e["action_id"]: e for e in replay}
        assert [by_id[e["action_id"]] for e in own] == own
        assert [e["event_seq"] for e in replay] == list(range(before + 1, resumed["event_seq"] + 1))
        # A resent seq gets its original ack again: the same answer, without the event.
        await c.send({"type": "action", "seq": seqs[0], "action_type": "chat", "payload": {"text": "line 0"}})
        again = await c.answer(seqs[0])
        assert "event" not in again and again["action_id"] == answers[seqs[0]]["action_id"]
        c.close()
        alice.close()

    run(scenario())


def test_a_resume_replay_comes_coalesced_with_event_seq_unchanged(start_server: Callable[..., Any]) -> None:
    server = start_server(game=FAST_GAME)

    async def scenario() -> None:
        alice_token = token(server)
        alice = await login(server.ws_url, alice_token, features=["events", "ack_event"])
        bob = await login(server.ws_url, token(server))
        await events_until(alice, lambda e: e["payload"].get("kind") == "login"
                           and e["character_id"] == bob.welcome["character"]["character_id"])
        last = max(e["event_seq"] for f in alice.history for e in events_of(f))
        session_id = alice.welcome["session_id"]
        alice.close()
        deadline = time.monotonic() + 5
        while getattr(_session_actor(server, session_id), "status", None) != "reconnecting":
            assert time.monotonic() < deadline, "the session did not notice the drop"
            await asyncio.sleep(0.02)
        seqs = [await bob.chat(f"away {i}") for i in range(20)]
        await bob.answers_for(seqs)
        c = await WSClient.connect(server.ws_url)
        resumed = await c.resume(alice_token, alice.welcome["reconnect_token"], last,
                                 features=["events", "ack_event"])
        assert resumed["sync"] == "delta" and resumed["replayed"] >= 20
        replay = await events_until(c, lambda e: e["event_seq"] == resumed["event_seq"])
        assert [e["event_seq"] for e in replay] == list(range(last + 1, resumed["event_seq"] + 1))
        assert [e["payload"]["text"] for e in replay if e["action_type"] == "chat"] == [
            f"away {i}" for i in range(20)]
        frames = [f for f in c.history if events_of(f)]
        assert len(frames) < len(replay), "a replay burst came one frame per event"
        for f in c.history:
            sf.parse_server_frame(json.dumps(f))
        c.close()
        bob.close()

    run(scenario())
