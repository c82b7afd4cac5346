"""A small async WebSocket test client for protocol v1.

Use it inside ``asyncio.run(...)`` in the test thread (the server runs on its own IOLoop
thread)::

    async def scenario() -> None:
        async with await WSClient.connect(server.ws_url) as c:
            welcome = await c.hello(issue_dev_token(server.settings, "alice"))
            seq = await c.move(1, 0)
            ack = await c.answer(seq)            # the ack or reject of that seq
            ev = await c.read_until(lambda f: f["type"] == "event", timeout=2)

    asyncio.run(scenario())

Every frame received is kept in ``history``; frames not yet consumed by a ``read_until`` /
``answer`` wait in ``inbox``, so waiting for one frame never loses another. Answers
(``ack``/``reject``) are also indexed by seq in ``answers`` (a list per seq, so a test can see
a duplicate answer). Waits always have a timeout and raise :class:`FrameTimeout` naming what
was seen. Read from one coroutine at a time per client (a second concurrent reader would
wait for a frame the first one took).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from tornado.websocket import WebSocketClientConnection, websocket_connect

from config.version import SERVER_VERSION

Frame = dict[str, Any]
Predicate = Callable[[Frame], bool]


class FrameTimeout(AssertionError):
    """No frame matching the predicate arrived in time (or the socket closed first)."""


def is_type(*types: str) -> Predicate:
    """Predicate: the frame's ``type`` is one of ``types``."""
    return lambda f: f.get("type") in types


def answer_to(seq: int) -> Predicate:
    """Predicate: the ``ack`` or ``reject`` of action ``seq``."""
    return lambda f: f.get("type") in ("ack", "reject") and f.get("seq") == seq


class WSClient:
    """One protocol-v1 connection with frame buffering and auto-incrementing action seqs."""

    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn
        self.history: list[Frame] = []
        self.inbox: list[Frame] = []
        self.answers: dict[int, list[Frame]] = {}
        self.next_seq = 1
        self.closed = False
        self.welcome: Frame | None = None

    # ---------------------------------------------------------------- connecting

    @classmethod
    async def connect(cls, ws_url: str, timeout: float = 5.0) -> WSClient:
        """Open a WebSocket to ``ws_url`` (no frame sent yet)."""
        conn = await asyncio.wait_for(websocket_connect(ws_url), timeout)
        return cls(conn)

    async def __aenter__(self) -> WSClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def hello(
        self,
        token: str,
        character_id: str | None = None,
        protocol_version: str = SERVER_VERSION,
        timeout: float = 10.0,
        features: list[str] | None = None,
    ) -> Frame:
        """Send ``hello`` (asking for ``features`` when given) and return the ``welcome``; seqs
        continue from its ``last_action_seq``.

        Raises :class:`FrameTimeout` if an ``error`` (or a close) comes instead.
        """
        frame: Frame = {"type": "hello", "protocol_version": protocol_version, "token": token}
        if character_id is not None:
            frame["character_id"] = character_id
        if features is not None:
            frame["features"] = features
        await self.send(frame)
        got = await self.read_until(is_type("welcome", "error"), timeout)
        if got["type"] != "welcome":
            raise FrameTimeout(f"hello answered with {got}")
        self.welcome = got
        self.next_seq = int(got["last_action_seq"]) + 1
        return got

    async def resume(
        self, token: str, reconnect_token: str, last_event_seq: int = 0, timeout: float = 10.0,
        features: list[str] | None = None,
    ) -> Frame:
        """Send ``resume`` (asking for ``features`` when given) and return the ``resumed`` frame
        (or raise on ``error``)."""
        frame: Frame = {
            "type": "resume",
            "protocol_version": SERVER_VERSION,
            "token": token,
            "reconnect_token": reconnect_token,
            "last_event_seq": last_event_seq,
        }
        if features is not None:
            frame["features"] = features
        await self.send(frame)
        got = await self.read_until(is_type("resumed", "error"), timeout)
        if got["type"] != "resumed":
            raise FrameTimeout(f"resume answered with {got}")
        return got

    # ---------------------------------------------------------------- sending

    async def send(self, frame: Frame | str) -> None:
        """Send one frame (a dict is JSON-encoded; a str goes as is)."""
        text = frame if isinstance(frame, str) else json.dumps(frame)
        await self.conn.write_message(text)

    async def action(
        self, action_type: str, payload: Frame, seq: int | None = None
    ) -> int:
        """Send an ``action``; without ``seq`` the next one is used (and the counter advances).
        Returns the seq sent."""
        if seq is None:
            seq = self.next_seq
            self.next_seq += 1
        await self.send({"type": "action", "seq": seq, "action_type": action_type, "payload": payload})
        return seq

    async def move(self, dx: int, dy: int, seq: int | None = None) -> int:
        """Send a move action; returns its seq."""
        return await self.action("move", {"dx": dx, "dy": dy}, seq)

    async def chat(self, text: str, seq: int | None = None) -> int:
        """Send a chat action; returns its seq."""
        return await self.action("chat", {"text": text}, seq)

    async def ability(self, name: str, seq: int | None = None, **fields: str) -> int:
        """Send an ability action (``target_id=`` / ``item_id=`` optional); returns its seq."""
        return await self.action("ability", {"name": name, **fields}, seq)

    async def ping(self, t: float = 0.0) -> None:
        """Send a heartbeat."""
        await self.send({"type": "ping", "t": t})

    def close(self, code: int | None = None) -> None:
        """Close the socket from the client side (no logout)."""
        self.conn.close(code)

    # ---------------------------------------------------------------- receiving

    async def _read_one(self, timeout: float) -> Frame | None:
        """The next frame off the wire; None when the socket closed. Raises TimeoutError."""
        if self.closed:
            return None
        raw = await asyncio.wait_for(self.conn.read_message(), timeout)
        if raw is None:
            self.closed = True
            return None
        frame = json.loads(raw)
        self.history.append(frame)
        if frame.get("type") in ("ack", "reject"):
            self.answers.setdefault(frame["seq"], []).append(frame)
        return frame

    async def read_until(self, pred: Predicate, timeout: float = 5.0) -> Frame:
        """Consume and return the first frame (buffered or new) matching ``pred``.

        Raises :class:`FrameTimeout` after ``timeout`` seconds or when the socket closes first.
        """
        for i, frame in enumerate(self.inbox):
            if pred(frame):
                return self.inbox.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FrameTimeout(self._describe(f"no matching frame within {timeout:g} s"))
            try:
                frame = await self._read_one(left)
            except TimeoutError:
                raise FrameTimeout(self._describe(f"no matching frame within {timeout:g} s")) from None
            if frame is None:
                raise FrameTimeout(self._describe(
                    f"socket closed ({self.close_code} {self.close_reason!r}) before a matching frame"))
            if pred(frame):
                return frame
            self.inbox.append(frame)

    async def expect_none(self, pred: Predicate, duration: float) -> None:
        """Assert that no frame matching ``pred`` arrives for ``duration`` seconds (frames that
        do arrive are kept in the inbox)."""
        if any(pred(f) for f in self.inbox):
            raise AssertionError(f"unexpected frame: {next(f for f in self.inbox if pred(f))}")
        deadline = time.monotonic() + duration
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = await self._read_one(left)
            except TimeoutError:
                return
            if frame is None:
                return
            if pred(frame):
                raise AssertionError(f"unexpected frame within {duration:g} s: {frame}")
            self.inbox.append(frame)

    async def answer(self, seq: int, timeout: float = 5.0) -> Frame:
        """The ``ack`` or ``reject`` of ``seq`` (consumed from the inbox)."""
        return await self.read_until(answer_to(seq), timeout)

    async def answers_for(self, seqs: Iterable[int], timeout: float = 10.0) -> dict[int, Frame]:
        """Wait until every seq in ``seqs`` has an answer; returns seq → its first answer."""
        wanted = set(seqs)
        deadline = time.monotonic() + timeout
        self.inbox = [f for f in self.inbox if not answer_to_any(f, wanted)]
        while not wanted <= self.answers.keys():
            left = deadline - time.monotonic()
            missing = sorted(wanted - self.answers.keys())
            if left <= 0:
                raise FrameTimeout(self._describe(f"no answer within {timeout:g} s for seqs {missing[:20]}"))
            try:
                frame = await self._read_one(left)
            except TimeoutError:
                continue
            if frame is None:
                raise FrameTimeout(self._describe(f"socket closed; unanswered seqs {missing[:20]}"))
            if not answer_to_any(frame, wanted):
                self.inbox.append(frame)
        return {s: self.answers[s][0] for s in wanted}

    async def wait_closed(self, timeout: float = 5.0) -> tuple[int | None, str | None]:
        """Read (and keep) frames until the server closes; returns (close_code, close_reason)."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FrameTimeout(self._describe(f"socket still open after {timeout:g} s"))
            try:
                frame = await self._read_one(left)
            except TimeoutError:
                continue
            if frame is not None:
                self.inbox.append(frame)
        return self.close_code, self.close_reason

    @property
    def close_code(self) -> int | None:
        """The server's close code once closed."""
        return self.conn.close_code

    @property
    def close_reason(self) -> str | None:
        """The server's close reason once closed."""
        return self.conn.close_reason

    def _describe(self, what: str) -> str:
        tail = self.history[-8:]
        return f"{what}; last frames: {json.dumps(tail)[:1500]}"


def answer_to_any(frame: Frame, seqs: set[int]) -> bool:
    """True when ``frame`` is an ack/reject of one of ``seqs``."""
    return frame.get("type") in ("ack", "reject") and frame.get("seq") in seqs


async def login(
    ws_url: str, token: str, character_id: str | None = None, features: list[str] | None = None
) -> WSClient:
    """Connect and say hello; returns the client with ``welcome`` set."""
    client = await WSClient.connect(ws_url)
    await client.hello(token, character_id, features=features)
    return client


