"""Session leases: one active session per user across every node sharing a Redis (DESIGN 6).

A lease is one Redis key per user, ``<prefix>lease:<user_id>``, whose value names the holder,
``<node_id> <session_id>``, with a TTL. A login takes it (``SET NX PX``; when another session
holds it, the newest login wins and the key is overwritten). The holding node refreshes it while
the session lives (only if it still holds it) and deletes it when the session ends (again only
if it still holds it). A node whose refresh finds the lease held by someone else knows its
session was replaced on another node and ends it.

Every call is blocking Redis I/O: run it off the IOLoop. Redis being down never stops a login:
callers treat :class:`redis.RedisError` as "lease unknown" and carry on.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

# Long enough to ride out a few missed refreshes, short enough that a crashed node's leases
# fade soon. The node refreshes every LEASE_REFRESH_S.
LEASE_TTL_S = 30.0
LEASE_REFRESH_S = 10.0

# Refresh / release only while we still hold the lease (compare-and-set in one round trip).
# A lease that vanished (Redis restarted, or refreshes failed while Redis was unreachable) is
# taken again: the session is alive and nobody else claimed the user.
_REFRESH = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# The same for many leases in one call: KEYS are the leases, ARGV[1] the TTL, ARGV[i + 1] the
# holder of KEYS[i]; returns one 0/1 per key. One script call per chunk instead of one per
# lease: the node's Python side (which holds the GIL) encodes one command, not thousands.
_REFRESH_MANY = """
local out = {}
for i, key in ipairs(KEYS) do
  local holder = ARGV[i + 1]
  local current = redis.call('GET', key)
  if current == holder then
    out[i] = redis.call('PEXPIRE', key, ARGV[1])
  elseif not current then
    redis.call('SET', key, holder, 'PX', ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
REFRESH_CHUNK = 500
"""Leases per script call: Redis runs a script without serving anyone else, so keep each short."""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Holder:
    """Who holds a user's lease."""

    node_id: str
    session_id: str

    def encode(self) -> str:
        """The Redis value: node id and session id separated by a space."""
        return f"{self.node_id} {self.session_id}"

    @classmethod
    def decode(cls, raw: bytes | str) -> Holder:
        """Parse a Redis value written by :meth:`encode`."""
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        node_id, _, session_id = text.rpartition(" ")
        return cls(node_id, session_id)


class SessionLeases:
    """Take, refresh and release the per-user session lease (blocking Redis calls)."""

    def __init__(self, client: redis.Redis, key_prefix: str, ttl_s: float = LEASE_TTL_S) -> None:
        self.client = client
        self.prefix = key_prefix + "lease:"
        self.ttl_ms = int(ttl_s * 1000)
        self._refresh = client.register_script(_REFRESH)
        self._refresh_many = client.register_script(_REFRESH_MANY)
        self._release = client.register_script(_RELEASE)

    def key(self, user_id: str) -> str:
        """The lease key of ``user_id``."""
        return self.prefix + user_id

    def acquire(self, user_id: str, holder: Holder) -> Holder | None:
        """Take the lease for ``holder``; returns the previous holder it replaced (None: free).

        ``SET NX PX`` first; if someone holds it, the newest login wins: the value is swapped
        atomically (``SET ... GET``) and the previous holder returned, so the caller can tell
        whether it replaced a session of this node or of another one.
        """
        key, value = self.key(user_id), holder.encode()
        if self.client.set(key, value, nx=True, px=self.ttl_ms):
            return None
        previous = self.client.set(key, value, px=self.ttl_ms, get=True)
        return Holder.decode(previous) if previous is not None else None

    def refresh(self, user_id: str, holder: Holder) -> bool:
        """Extend the lease (taking it again if it vanished); False when another holder has it."""
        return bool(self._refresh(keys=[self.key(user_id)], args=[holder.encode(), self.ttl_ms]))

    def refresh_many(self, held: list[tuple[str, Holder]]) -> list[bool]:
        """:meth:`refresh` for many leases in one pipelined round trip (one script call per
        :data:`REFRESH_CHUNK` leases); results in order."""
        if not held:
            return []
        pipe = self.client.pipeline(transaction=False)
        for i in range(0, len(held), REFRESH_CHUNK):
            chunk = held[i:i + REFRESH_CHUNK]
            self._refresh_many(
                keys=[self.key(u) for u, _ in chunk], args=[self.ttl_ms, *(h.encode() for _, h in chunk)], client=pipe
            )
        return [bool(r) for replies in pipe.execute() for r in replies]

    def release(self, user_id: str, holder: Holder) -> bool:
        """Delete the lease if ``holder`` still holds it; True when deleted."""
        return bool(self._release(keys=[self.key(user_id)], args=[holder.encode()]))

    def holder(self, user_id: str) -> Holder | None:
        """The current holder, or None."""
        raw = self.client.get(self.key(user_id))
        return Holder.decode(raw) if raw is not None else None
