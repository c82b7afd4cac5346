"""What the actors need from the transport, as interfaces (dependencies point transport → actors).

The transport passes in a :class:`FrameCodec` (protocol v1's frame builders) and, per socket, a
:class:`Connection`; the node passes the ZoneActor a :class:`ZoneLink` to the other nodes. The
actors never import the transport or storage.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol


class FrameCodec(Protocol):
    """Builds the JSON text of server frames (``transport.codec`` implements it)."""

    def ack_json(self, seq: int, action_id: str, persisted_at: str | datetime, state: dict[str, Any]) -> str: ...

    def reject_json(self, seq: int, code: str, message: str) -> str: ...

    def event_body_json(
        self, action_id: str, character_id: str, display_name: str, action_type: str,
        payload: dict[str, Any], persisted_at: str | datetime,
    ) -> str: ...

    def stamp_event(self, body: str, event_seq: int) -> str: ...

    def ack_with_event(self, ack: str, event: str) -> str: ...

    def iso_utc(self, dt: datetime) -> str: ...

    def server_frame_json(self, frame_type: str, **fields: Any) -> str: ...


class Connection(Protocol):
    """One client socket, usable from any thread; calls return at once. ``features``: the
    protocol additions its client asked for (``actors.vocabulary.Feature`` values)."""

    features: frozenset[str]

    last_heartbeat_at: float
    """Wall time of the client's last ping (the transport stamps it; no message per ping)."""

    def send(self, frame_json: str) -> None:
        """Queue a frame for writing (dropped if the socket is closed)."""

    def close(self, code: int, frame_json: str | None = None) -> None:
        """Write ``frame_json`` (an error or kicked frame) if given, then close with ``code``."""


class SessionHooks(Protocol):
    """What a SessionActor reports to its node (metrics, registry); callable from any thread."""

    def session_ended(self, session_id: str, user_id: str) -> None:
        """The session is gone: forget it."""

    def action_answered(self, latency_s: float, acked: bool, code: str | None) -> None:
        """An action was answered ``latency_s`` after its frame arrived."""

    def snapshot_forced(self) -> None:
        """A resume could not be served from the event buffer."""

    def welcomed(self) -> None:
        """The session sent its ``welcome`` (a login succeeded)."""

    def resumed(self) -> None:
        """The session sent ``resumed`` (a resume succeeded)."""

    def park(self, state: dict[str, Any], session: Any) -> None:
        """Write the session's parked state off the actor; then tell ``session`` ParkWritten."""


class ZoneLink(Protocol):
    """The zone's line to the other nodes of the cluster (``storage.relay.zone_relay`` implements it)."""

    def publish(self, message: dict[str, Any]) -> None:
        """Send ``message`` to the other nodes' ZoneActors; returns at once, may be lost."""
