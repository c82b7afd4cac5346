"""The batched socket write: frames reach the client intact, on the fast path Tornado allows."""

from __future__ import annotations

import asyncio

from wsclient import is_type, login

from transport.auth import issue_dev_token


def test_queued_frames_arrive_whole_and_in_order_on_the_fast_path(start_server) -> None:
    live_server = start_server(game={"chats_per_second": 50})

    async def scenario() -> None:
        client = await login(live_server.ws_url, issue_dev_token(live_server.settings, "writer"))
        sockets = live_server.call(lambda: list(live_server.node.sockets))
        # A Tornado upgrade that renames the internals we rely on must show up here, not as
        # a silent fall back to the slow path.
        assert all(live_server.call(s.fast_path) for s in sockets)
        # Frames of every length class of RFC 6455 (7-bit, 16-bit) in one burst.
        texts = ["x" * n for n in (1, 125, 126, 200, 279)]
        seqs = [await client.chat(t) for t in texts]
        for seq in seqs:
            ack = await client.read_until(lambda f, s=seq: is_type("ack")(f) and f["seq"] == s)
            assert ack["state"] == {}
        # Events travel by the zone and may trail their acks: wait for the last one.
        await client.read_until(lambda f: is_type("event")(f) and f["payload"].get("text") == texts[-1])
        events = [f for f in client.history if f.get("type") == "event" and f["action_type"] == "chat"]
        assert [e["payload"]["text"] for e in events][-len(texts):] == texts
        client.close()

    asyncio.run(scenario())
