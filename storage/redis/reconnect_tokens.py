"""Reconnect tokens: 256-bit random, stored hashed in Redis with a TTL, single use.

The token itself is only ever sent to the client; Redis holds ``sha256(token)`` → the session
it resumes. Consuming a token deletes it atomically (GETDEL), so a token works once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

import redis


@dataclass(frozen=True)
class TokenGrant:
    """What a valid reconnect token resumes."""

    session_id: str
    user_id: str
    issued_at: float
    expires_at: float
    last_sequence_number: int


class ReconnectTokens:
    """Issue and consume reconnect tokens (blocking Redis calls: never on the IOLoop)."""

    def __init__(self, client: redis.Redis, key_prefix: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = key_prefix + "rt:"
        self.ttl_s = ttl_s

    def _key(self, token: str) -> str:
        return self.prefix + hashlib.sha256(token.encode("utf-8")).hexdigest()

    def issue(self, session_id: str, user_id: str, last_sequence_number: int = 0) -> tuple[str, float]:
        """A new token for the session; returns (token, expires_at epoch seconds)."""
        token = secrets.token_urlsafe(32)  # 256 bits
        now = time.time()
        grant = {
            "session_id": session_id,
            "user_id": user_id,
            "issued_at": now,
            "expires_at": now + self.ttl_s,
            "last_sequence_number": last_sequence_number,
        }
        self.client.set(self._key(token), json.dumps(grant), ex=self.ttl_s)
        return token, now + self.ttl_s

    def consume(self, token: str) -> TokenGrant | None:
        """The grant of a valid token, deleting it (single use); None if unknown or expired."""
        raw = self.client.getdel(self._key(token))
        if raw is None:
            return None
        grant = TokenGrant(**json.loads(raw))
        return grant if grant.expires_at > time.time() else None
