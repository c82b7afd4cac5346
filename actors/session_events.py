"""A session's events: numbered (``event_seq``), kept for a delta replay, then sent.

:class:`SessionEvents` is a mixin of :class:`actors.session.SessionActor`. The zone delivers
what the session sees (:class:`~actors.messages.DeliverEvent`); the event of the session's own
action comes from the character with its ack (``ActionAnswered.event_body``), numbered like any
other at that point. A client that asked for ``ack_event`` gets it inside the ack, the others
get the ack and then the ``event`` frame (docs/protocol.md section 4.1).
"""

from __future__ import annotations

import time

from actors.messages import ActionAnswered, DeliverEvent
from actors.vocabulary import Feature


class SessionEvents:
    """Event numbering, buffering and sending, for :class:`actors.session.SessionActor`."""

    def on_DeliverEvent(self, msg: DeliverEvent) -> None:
        """Number an observed event, keep it for replay, send it."""
        if self.status == "connecting":
            self._early_events.append(msg.body_json)
        else:
            self._deliver(msg.body_json)

    def on_ActionAnswered(self, msg: ActionAnswered) -> None:
        """The ack (after commit) or reject for ``seq``: remember it and send it (a fresh ack
        with its own event, numbered here: inside the ack when the client asked for it)."""
        self._remember(msg.seq, msg.frame_json)  # resends get the plain ack: no event twice
        received_at = self.pending.pop(msg.seq, None)
        if received_at is not None:
            latency = time.perf_counter() - received_at
            self.hooks.action_answered(latency, msg.reject_code is None, msg.reject_code)
        if msg.event_body is not None and self._event_in_ack():
            self._send(self.codec.ack_with_event(msg.frame_json, self._number(msg.event_body)))
        else:
            self._send(msg.frame_json)
            if msg.event_body is not None:
                self.on_DeliverEvent(DeliverEvent(msg.event_body))
        self._park_when_landed()

    def _event_in_ack(self) -> bool:
        """True when an own event would be sent now and the client takes it inside the ack."""
        connection = self.connection
        return (connection is not None and self.status != "connecting" and not self._awaiting_snapshot
                and not self._park_sent and Feature.ACK_EVENT in getattr(connection, "features", ()))

    def _number(self, body: str) -> str:
        """The next ``event`` frame of this session for ``body``, kept in the replay buffer."""
        self.event_seq += 1
        frame = self.codec.stamp_event(body, self.event_seq)
        self.events.append((self.event_seq, frame))
        return frame

    def _deliver(self, body: str) -> None:
        frame = self._number(body)
        if not self._awaiting_snapshot and not self._park_sent:  # parked: replayed on the next node
            self._send(frame)
