"""One zone's traffic between nodes: JSON messages on the Redis channel ``<prefix>zone:<map>``.

Every node of a cluster publishes what happens to its own characters (enter, leave, committed
events, rosters, ability effects on another node's character) and hears the others'. Pub/sub is
at most once: a message lost while Redis is away is repaired by the next roster, so the relay
drops rather than queues without bound. Messages carry ``v`` (wire version) and ``node`` (the
sender); a node ignores its own.

Publishing never blocks the caller: messages queue for a writer thread that sends what queued
meanwhile as one Redis message, ``{"v", "node", "batch": [m, ...]}`` (a single message goes
alone, as before): each Redis message costs a reader a parse, a decode and a wake-up, so under
load one per flush instead of one per event is what keeps ``serve --workers`` cheap. A reader
thread subscribes, decodes and hands each message to ``deliver`` in order; both threads
reconnect with a backoff when Redis goes away. (A node older than batches drops a batch as an
unknown message: during a rolling upgrade it sees the newer nodes through their rosters only.)
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

log = logging.getLogger(__name__)

WIRE_VERSION = 1
MAX_QUEUED = 100_000  # past this many unsent messages Redis is away: drop (rosters repair)
MAX_PIPELINE = 500  # most messages sent as one batch
_RETRY_S = (0.1, 0.5, 1.0, 2.0)


def zone_channel(key_prefix: str, map_id: str) -> str:
    """The Redis channel a zone's nodes talk on."""
    return f"{key_prefix}zone:{map_id}"


class ZoneRelay:
    """Publishes this node's zone messages and delivers the other nodes' to ``deliver``."""

    def __init__(
        self, client: redis.Redis, key_prefix: str, map_id: str, node_id: str,
        deliver: Callable[[dict[str, Any]], None], on_dropped: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.client = client
        self.channel = zone_channel(key_prefix, map_id)
        self._wake_channel = f"{self.channel}:wake:{node_id}"  # close() ends the reader's wait
        self.node_id = node_id
        self.deliver = deliver
        self.on_dropped = on_dropped  # told how many messages were not published (queue full, Redis away)
        self._outbox: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._first_try = threading.Event()  # the reader subscribed, or failed its first try
        self._listening = False  # Redis confirmed the subscription, not lost since
        self._threads: list[threading.Thread] = []

    def publish(self, message: dict[str, Any]) -> None:
        """Queue ``message`` for the other nodes (any thread; returns at once)."""
        if self._outbox.qsize() >= MAX_QUEUED:
            self.on_dropped(1)
            return
        self._outbox.put(message)

    def start(self, timeout: float = 2.0) -> bool:
        """Start the writer and reader threads; block until Redis confirmed the subscription
        (at most ``timeout``), so the node announces itself only once it can hear the answers.
        False when Redis could not be reached yet (the reader keeps trying)."""
        for target, name in ((self._write_loop, "zone-relay-writer"), (self._read_loop, "zone-relay-reader")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self._first_try.wait(timeout) and self._listening

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (bounded by ``timeout``) and stop both threads."""
        self._closing.set()
        self._outbox.put(None)
        try:
            self.client.publish(self._wake_channel, b"")
        except redis.RedisError:
            pass  # the reader's own timeout ends its wait
        for t in self._threads:
            t.join(timeout)

    # ---------------------------------------------------------------- writer

    def _write_loop(self) -> None:
        failures = 0
        while True:
            first = self._outbox.get()
            batch = [first] if first is not None else []
            while len(batch) < MAX_PIPELINE:
                try:
                    more = self._outbox.get_nowait()
                except queue.Empty:
                    break
                if more is not None:
                    batch.append(more)
            if batch:
                try:
                    self._send(batch)
                    failures = 0
                except redis.RedisError as exc:
                    self.on_dropped(len(batch))
                    if failures == 0:
                        log.warning("zone relay: cannot publish to Redis (%s); peers catch up from rosters", exc)
                    failures += 1
                    time.sleep(_RETRY_S[min(failures, len(_RETRY_S)) - 1])
                except Exception:  # never let the writer die: a bad message must not stop the rest
                    log.exception("zone relay: publishing failed")
            if self._closing.is_set() and self._outbox.empty():
                return

    def _send(self, batch: list[dict[str, Any]]) -> None:
        if len(batch) == 1:
            envelope: dict[str, Any] = {"v": WIRE_VERSION, "node": self.node_id, **batch[0]}
        else:
            envelope = {"v": WIRE_VERSION, "node": self.node_id, "batch": batch}
        self.client.publish(self.channel, json.dumps(envelope, separators=(",", ":")))

    # ---------------------------------------------------------------- reader

    def _read_loop(self) -> None:
        failures = 0
        while not self._closing.is_set():
            pubsub = self.client.pubsub()
            try:
                pubsub.subscribe(self.channel, self._wake_channel)
                while not self._closing.is_set():
                    raw = pubsub.get_message(timeout=0.5)
                    if raw is None or self._closing.is_set():
                        continue
                    if raw["type"] == "message":
                        self._hand_over(raw["data"])
                    elif raw["type"] == "subscribe" and _text(raw["channel"]) == self.channel:
                        if failures:
                            log.info("zone relay: listening on %s again", self.channel)
                        failures = 0
                        self._listening = True
                        self._first_try.set()
            except redis.RedisError as exc:
                self._listening = False
                self._first_try.set()
                if failures == 0:
                    log.warning("zone relay: lost the Redis subscription (%s); retrying", exc)
                failures += 1
                self._closing.wait(_RETRY_S[min(failures, len(_RETRY_S)) - 1])
            finally:
                try:
                    pubsub.close()
                except redis.RedisError:
                    pass

    def _hand_over(self, data: bytes | str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("zone relay: ignored a message that is not JSON on %s", self.channel)
            return
        if not isinstance(message, dict) or message.get("v") != WIRE_VERSION:
            log.warning("zone relay: ignored a message of an unknown wire version on %s", self.channel)
            return
        node = message.get("node")
        if node == self.node_id:
            return
        batch = message.get("batch")
        if not isinstance(batch, list):
            self._deliver(message)
            return
        for one in batch:
            if isinstance(one, dict):
                self._deliver({**one, "v": WIRE_VERSION, "node": node})

    def _deliver(self, message: dict[str, Any]) -> None:
        try:
            self.deliver(message)
        except Exception:
            log.exception("zone relay: delivering a peer's message failed")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
