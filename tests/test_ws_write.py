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


def test_direct_send_keeps_every_byte_in_order_when_the_socket_fills() -> None:
    """``write_now``: one ``send`` while nothing is pending; once the peer stops reading, the
    rest queues in the stream and later writes queue behind it, never overtaking it."""
    import socket

    import tornado.iostream

    from transport.ws_out import write_now

    async def scenario() -> None:
        ours, peer = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        stream = tornado.iostream.IOStream(ours)
        small = b"first frame"
        write_now(stream, small)
        assert not stream._write_buffer  # went straight to the socket
        chunks = [bytes([65 + i % 26]) * 50_000 for i in range(40)]  # far more than the buffers
        for chunk in chunks:
            write_now(stream, chunk)
        assert stream._write_buffer, "the peer does not read: the stream must hold the rest"
        # The peer reads a little (room in the socket again) before the IOLoop has written what
        # the stream holds: a later write must queue behind it, not go straight out.
        peer.setblocking(False)
        got = bytearray(peer.recv(64 * 1024))
        tail = b"the last frame"
        write_now(stream, tail)
        expected = small + b"".join(chunks) + tail
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while len(got) < len(expected):
            assert loop.time() < deadline, f"only {len(got)} of {len(expected)} bytes arrived"
            try:
                got += peer.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.005)  # let the IOLoop write what the stream holds
        assert bytes(got) == expected
        stream.close()
        peer.close()

    asyncio.run(scenario())
