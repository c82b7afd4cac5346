"""Reconnect tokens: 256-bit random, stored hashed in Redis with a TTL, single use.

The token itself is only ever sent to the client; Redis holds ``sha256(token)`` → the session
it resumes (its session, user and character, and the node that issued it). A node first
*peeks* at a grant (GET) to find where the session is; only the node that resumes the session
consumes the token, atomically (GETDEL), so a token works once.
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
    character_id: str = ""
    node_id: str = ""


class ReconnectTokens:
    """Issue and consume reconnect tokens (blocking Redis calls: never on the IOLoop)."""

    def __init__(self, client: redis.Redis, key_prefix: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = key_prefix + "rt:"
        self.ttl_s = ttl_s

    def _key(self, token: str) -> str:
        return self.prefix + hashlib.sha256(token.encode("utf-8")).hexdigest()

    def issue(
        self, session_id: str, user_id: str, last_sequence_number: int = 0, character_id: str = "",
        node_id: str = "",
    ) -> tuple[str, float]:
        """A new token for the session (held by ``node_id``); returns (token, expires_at)."""
        token = secrets.token_urlsafe(32)  # 256 bits
        now = time.time()
        grant = {
            "session_id": session_id,
            "user_id": user_id,
            "issued_at": now,
            "expires_at": now + self.ttl_s,
            "last_sequence_number": last_sequence_number,
            "character_id": character_id,
            "node_id": node_id,
        }
        self.client.set(self._key(token), json.dumps(grant), ex=self.ttl_s)
        return token, now + self.ttl_s

    def peek(self, token: str) -> TokenGrant | None:
        """The grant of a valid token, leaving it in place; None if unknown or expired."""
        return _grant(self.client.get(self._key(token)))

    def consume(self, token: str) -> TokenGrant | None:
        """The grant of a valid token, deleting it (single use); None if unknown or expired."""
        return _grant(self.client.getdel(self._key(token)))


def _grant(raw: bytes | str | None) -> TokenGrant | None:
    """A stored grant, or None when absent or expired."""
    if raw is None:
        return None
    grant = TokenGrant(**json.loads(raw))
    return grant if grant.expires_at > time.time() else None
