"""The Redis cache of CharacterProfile public views (DESIGN section 6).

- **Write-through**: after each commit the StorageActor's observer hands the committed views to
  :meth:`ProfileCache.submit`, which never blocks: a background writer thread coalesces them
  (latest view per character wins) and writes each round with one pipelined ``SET`` per
  character, so a slow or dead Redis never slows a commit.
- **Read-through**: :meth:`ProfileCache.read` serves a cached view only while it is at most
  ``staleness_ms`` old (by the injectable ``clock``); otherwise it asks the source of truth (the
  live actor or PostgreSQL, a callable given by the caller), serves that and refills the cache.
- **Best effort**: every Redis failure opens a circuit breaker for ``cooldown_s``; while it is
  open the cache is bypassed without touching Redis, then one call probes it again.

Every method except :meth:`submit` blocks on Redis (bounded by the client's socket timeout):
call them from an executor, never from the IOLoop.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis

from storage.postgres.characters import PUBLIC_FIELDS

log = logging.getLogger(__name__)


def _public_part(profile: dict[str, Any]) -> dict[str, Any]:
    # Unlike characters.public_view this tolerates a missing field: a cached entry is served
    # as stored, never turned into an error.
    return {k: profile[k] for k in PUBLIC_FIELDS if k in profile}


@dataclass(frozen=True)
class CachedProfile:
    """One cache entry: the public view and when (by the cache's clock) it was written."""

    view: dict[str, Any]
    cached_at: float


@dataclass(frozen=True)
class ProfileRead:
    """The answer of :meth:`ProfileCache.read`: the view (None: unknown character) and where it
    came from (``cache`` or ``source``)."""

    view: dict[str, Any] | None
    origin: str


class ProfileCache:
    """Write-through, read-through profile cache over one Redis client."""

    def __init__(
        self,
        client: redis.Redis,
        key_prefix: str,
        *,
        staleness_ms: int = 100,
        ttl_s: int = 3600,
        clock: Callable[[], float] = time.time,
        metrics: Any = None,
        cooldown_s: float = 5.0,
    ) -> None:
        self.client = client
        self.prefix = key_prefix + "profile:"
        self.staleness_s = staleness_ms / 1000.0
        self.ttl_s = ttl_s
        self.clock = clock
        self.metrics = metrics  # transport.metrics.Metrics (or None): lookups, writes, errors
        self.cooldown_s = cooldown_s
        self._open_until = 0.0  # time.monotonic() until which the breaker bypasses Redis
        self._state_lock = threading.Lock()
        self._pending: dict[str, dict[str, Any]] = {}
        self._wake = threading.Condition(threading.Lock())
        self._closing = False
        self._writer: threading.Thread | None = None
        self.writes = 0
        self.errors = 0

    def key(self, character_id: str) -> str:
        """The Redis key of one character's entry."""
        return self.prefix + character_id

    # ---------------------------------------------------------------- circuit breaker

    @property
    def available(self) -> bool:
        """False while the breaker is open (Redis failed less than ``cooldown_s`` ago)."""
        return time.monotonic() >= self._open_until

    def _failed(self, what: str, exc: Exception) -> None:
        with self._state_lock:
            was_available = self.available
            self._open_until = time.monotonic() + self.cooldown_s
            self.errors += 1
        if self.metrics is not None:
            self.metrics.cache_errors.inc()
            self.metrics.cache_available.set(0)
        if was_available:
            log.warning("profile cache bypassed for %.0f s: %s failed: %s", self.cooldown_s, what, exc)

    def _succeeded(self) -> None:
        if self.metrics is not None:
            self.metrics.cache_available.set(1)

    # ---------------------------------------------------------------- reading

    def get(self, character_id: str) -> CachedProfile | None:
        """The cached entry, or None (absent, unreadable, or Redis bypassed)."""
        if not self.available:
            return None
        try:
            raw = self.client.get(self.key(character_id))
        except redis.RedisError as exc:
            self._failed("GET", exc)
            return None
        self._succeeded()
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
            return CachedProfile(dict(entry["view"]), float(entry["cached_at"]))
        except (ValueError, KeyError, TypeError):
            return None

    def is_fresh(self, entry: CachedProfile) -> bool:
        """True while the entry is at most ``staleness_ms`` old by ``clock`` (to the microsecond,
        so float noise never turns exactly 100 ms into 100.000000001)."""
        return round((self.clock() - entry.cached_at) * 1e6) <= round(self.staleness_s * 1e6)

    def read(self, character_id: str, source: Callable[[str], dict[str, Any] | None]) -> ProfileRead:
        """A fresh cached view, else ``source(character_id)`` (refilling the cache).

        ``source`` is the source of truth: the live actor's committed state when the character
        is in play, else PostgreSQL. Position and health are therefore never older than the
        staleness window. Counts a hit or a miss.
        """
        entry = self.get(character_id)
        if entry is not None and self.is_fresh(entry):
            self._count(True)
            return ProfileRead(_public_part(entry.view), "cache")
        self._count(False)
        view = source(character_id)
        if view is None:
            return ProfileRead(None, "source")
        view = _public_part(view)
        self.put_many([view])
        return ProfileRead(view, "source")

    def _count(self, hit: bool) -> None:
        if self.metrics is not None:
            self.metrics.cache_lookup(hit)

    # ---------------------------------------------------------------- writing

    def put_many(self, views: Iterable[dict[str, Any]]) -> bool:
        """Write ``views`` (each with ``character_id``) in one pipelined round trip, stamped
        with ``clock()``. Best effort: False when Redis failed or is bypassed."""
        views = list(views)
        if not views or not self.available:
            return False
        now = self.clock()
        try:
            pipe = self.client.pipeline(transaction=False)
            for view in views:
                entry = json.dumps({"view": _public_part(view), "cached_at": now}, separators=(",", ":"))
                pipe.set(self.key(view["character_id"]), entry, ex=self.ttl_s)
            pipe.execute()
        except redis.RedisError as exc:
            self._failed("SET", exc)
            return False
        self._succeeded()
        self.writes += len(views)
        if self.metrics is not None:
            self.metrics.cache_writes.inc(len(views))
        return True

    def submit(self, views: Iterable[dict[str, Any] | None]) -> None:
        """Queue committed views for the background writer; never blocks on Redis (any thread).

        Dropped while the breaker is open: a later commit or a read refills the entry, and a
        stale entry is never served past the staleness window anyway.
        """
        if not self.available:
            return
        with self._wake:
            for view in views:
                if view is not None:
                    self._pending[view["character_id"]] = view
            if self._pending:
                self._wake.notify()

    def start(self) -> None:
        """Start the background writer thread."""
        self._writer = threading.Thread(target=self._write_loop, name="profile-cache-writer", daemon=True)
        self._writer.start()

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (best effort, bounded) and stop the writer."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._writer is not None:
            self._writer.join(timeout)

    def flush_pending(self) -> int:
        """Write everything queued now, on the calling thread; returns how many views."""
        with self._wake:
            batch, self._pending = self._pending, {}
        if batch:
            self.put_many(batch.values())
        return len(batch)

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closing:
                    self._wake.wait()
                closing = self._closing
            try:
                self.flush_pending()
            except Exception:  # never let the writer die: the cache is best effort
                log.exception("profile cache writer failed")
            if closing:
                return
