"""A session's events, as the transport takes them: the metrics they count, and the session
directory forgetting a session that ended. Implements :class:`actors.ports.SessionHooks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transport.metrics import Metrics

if TYPE_CHECKING:
    from transport.sessions import SessionDirectory


class SessionHooks:
    """Session events → metrics and the directory (any thread). The session gauges are not
    kept here: /metrics counts the live sessions' statuses when it is scraped."""

    def __init__(self, directory: SessionDirectory, metrics: Metrics) -> None:
        self.directory = directory
        self.metrics = metrics

    def session_ended(self, session_id: str, user_id: str) -> None:
        """The session is over: the directory forgets it (its status leaves the gauges with it)."""
        self.directory.session_ended(session_id, user_id)

    def action_answered(self, latency_s: float, acked: bool, code: str | None) -> None:
        """Observe one ack or reject."""
        self.metrics.action_latency.observe(latency_s)
        if acked:
            self.metrics.acks.inc()
        else:
            self.metrics.rejects.labels(code or "unknown").inc()

    def snapshot_forced(self) -> None:
        """Count a resume that needed a full snapshot."""
        self.metrics.state_refresh_forced.inc()

    def welcomed(self) -> None:
        """The session sent its welcome: a login succeeded (counted only now, not at attach)."""
        self.metrics.connect_success.inc()

    def resumed(self) -> None:
        """The session sent ``resumed``: a resume succeeded (a session refusing it with 4004 or
        4029 never calls this)."""
        self.metrics.reconnect_success.inc()

    def park(self, state: dict[str, Any], session: Any) -> None:
        """The session hands itself over: the directory writes its state to Redis (off the
        actor) and tells the session ``ParkWritten``."""
        self.directory.park_written_later(state, session)
