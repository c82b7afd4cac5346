"""Frame reads served from the stream's buffer: many frames in one TCP segment, one frame over
many segments, fragments and a ping in between — all read as Tornado would, in order."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct

from config.version import SERVER_VERSION
from transport.auth import issue_dev_token


def _client_frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """One masked client frame (RFC 6455 5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes((0x80 * fin | opcode,))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n <= 0xFFFF:
        head += struct.pack("!BH", 0x80 | 126, n)
    else:
        head += struct.pack("!BQ", 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _text(frame: dict) -> bytes:
    return _client_frame(json.dumps(frame).encode())


class RawClient:
    """A WebSocket client on a bare socket, so the test decides how bytes are segmented."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def read(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload)."""
        async def one() -> tuple[int, bytes]:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return b0 & 0x0F, await self.reader.readexactly(n)
        return await asyncio.wait_for(one(), timeout)

    async def read_json_until(self, pred, timeout: float = 10.0) -> list[dict]:
        """Text frames (``events`` frames flattened) up to and including the first matching one."""
        seen: list[dict] = []
        while True:
            opcode, payload = await self.read(timeout)
            if opcode != 0x1:
                continue
            frame = json.loads(payload)
            seen.append(frame)
            if pred(frame):
                return seen


def test_frames_read_whole_from_one_segment_and_across_many(start_server) -> None:
    live_server = start_server(game={"chats_per_second": 100})

    async def scenario() -> None:
        client = await RawClient.connect(live_server.node.port)
        token = issue_dev_token(live_server.settings, "reader")
        client.writer.write(_text({"type": "hello", "protocol_version": SERVER_VERSION, "token": token}))
        welcome = (await client.read_json_until(lambda f: f["type"] in ("welcome", "error")))[-1]
        assert welcome["type"] == "welcome", welcome
        seq = int(welcome["last_action_seq"])
        protocols = live_server.call(
            lambda: [s.ws_connection for s in live_server.node.sockets if s.ws_connection])
        assert protocols and all(p._fast_reads is not False for p in protocols)

        # Six actions, a ping between them, and a chat split in two fragments: one write.
        burst = b""
        texts = [f"burst {i}" for i in range(6)]
        for i, t in enumerate(texts):
            burst += _text({"type": "action", "seq": seq + 1 + i, "action_type": "chat", "payload": {"text": t}})
            if i == 2:
                burst += _client_frame(b"still here", opcode=0x9)
        frag = json.dumps({"type": "action", "seq": seq + 7, "action_type": "chat",
                           "payload": {"text": "fragmented"}}).encode()
        burst += _client_frame(frag[:10], opcode=0x1, fin=False) + _client_frame(frag[10:], opcode=0x0)
        client.writer.write(burst)
        await client.writer.drain()
        # And one frame of the 16-bit length class, one byte per segment.
        long_text = "y" * 200
        slow = _text({"type": "action", "seq": seq + 8, "action_type": "chat", "payload": {"text": long_text}})
        for b in slow:
            client.writer.write(bytes((b,)))
            await client.writer.drain()
            await asyncio.sleep(0.001)  # not a wait for a result: it makes each byte a segment

        acks: list[int] = []
        pong = False
        while len(acks) < 8:
            opcode, payload = await client.read()
            if opcode == 0xA:
                pong = pong or payload == b"still here"
            elif opcode == 0x1 and (f := json.loads(payload))["type"] in ("ack", "reject", "error"):
                assert f["type"] == "ack", f
                acks.append(f["seq"])
        assert acks == list(range(seq + 1, seq + 9))
        assert pong
        assert live_server.call(lambda: all(p._fast_reads for p in protocols)), "the fast path was never taken"
        client.writer.close()

    asyncio.run(scenario())
