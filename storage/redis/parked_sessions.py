"""Parked sessions: a session's resumable state, in Redis while it moves between nodes.

A node that drains (or is asked to hand a session over) writes the session's state —
session_id, user_id, character_id, display name, last_action_seq, event_seq, the recent event
frames, reconnect_attempts, protocol_version — to ``<prefix>parked:<session_id>`` as JSON with
a TTL (the reconnect window). The node the player resumes on takes it with GETDEL, so exactly
one node adopts it. A node asked to park a session it no longer has writes a short-lived
``gone`` marker instead, so the asking node stops waiting and refuses the resume.

Every call is blocking Redis I/O: run it off the IOLoop.
"""

from __future__ import annotations

import json
from typing import Any

import redis

GONE_TTL_S = 30


class ParkedSessions:
    """Park, take and mark gone (blocking Redis calls: never on the IOLoop)."""

    def __init__(self, client: redis.Redis, key_prefix: str, ttl_s: float) -> None:
        self.client = client
        self.prefix = key_prefix + "parked:"
        self.ttl_s = max(1, int(ttl_s))

    def park(self, state: dict[str, Any]) -> None:
        """Store ``state`` (a dict with ``session_id``) for the reconnect window."""
        self.client.set(self.prefix + str(state["session_id"]), json.dumps(state), ex=self.ttl_s)

    def mark_gone(self, session_id: str) -> None:
        """Say that ``session_id`` ended here and cannot be handed over (unless already parked)."""
        self.client.set(self.prefix + session_id, json.dumps({"gone": True}), ex=GONE_TTL_S, nx=True)

    def take(self, session_id: str) -> dict[str, Any] | None:
        """The parked state (or a ``{"gone": True}`` marker), deleting it; None if nothing."""
        raw = self.client.getdel(self.prefix + session_id)
        return None if raw is None else json.loads(raw)
