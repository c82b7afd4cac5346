"""The operators' actions (the console's buttons; also a plain HTTP API):

- ``POST /admin/sessions/{session_id}/kick``: end one session of this node; the player gets
  ``kicked {reason: "operator"}`` and close 4010 (the web client does not resume it);
- ``POST /admin/broadcast`` ``{"text": ..., "zone"?: map id}``: an ``announcement`` system event
  to every session of the zone, on this node and (over the zone link) on the others;
- ``POST /admin/drain`` (:mod:`transport.http_admin`).

Each is guarded by the admin token (:class:`transport.http_console.ConsoleHandler`), logged
(who, from where, what) and counted in ``tilehall_operator_actions_total{action}``.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

from actors.base import tell_if_alive
from actors.messages import Announce, Kick
from actors.runtime import ask_async
from actors.vocabulary import CloseCode, KickReason
from transport.http_console import ConsoleHandler

log = logging.getLogger(__name__)
MAX_TEXT = 280  # as a chat line
# Control characters (C0, DEL, C1), bidi overrides and lone surrogates: never in an announcement.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_BLANK = re.compile("[\\s\ufeff]*")  # what counts as blank (the API document says the same)


def announcement_text(text: object) -> str | None:
    """The announcement ``text`` stripped, or None when it is not 1 to 280 allowed characters
    (docs/openapi.json expresses the same rule as a pattern)."""
    if not isinstance(text, str) or len(text) > MAX_TEXT or _FORBIDDEN.search(text) or _BLANK.fullmatch(text):
        return None
    return text.strip()


def record(handler: ConsoleHandler, action: str, **what: Any) -> None:
    """Log and count one operator action taken through ``handler``'s request."""
    handler.node.metrics.operator_actions.labels(action).inc()
    detail = " ".join(f"{k}={v}" for k, v in what.items())
    log.warning("operator action %s from %s: %s", action, handler.request.remote_ip, detail,
                extra={"operator_action": action, "node_id": handler.node.node_id, **what})


def _body(handler: ConsoleHandler) -> dict[str, Any] | None:
    try:
        body = json.loads(handler.request.body or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class KickHandler(ConsoleHandler):
    """End a session of this node now, with a ``kicked operator`` frame the player can read."""

    def post(self, session_id: str) -> None:
        """200 ``{"status": "kicked", "session_id"}``; 404 when no such session lives here."""
        try:
            session_id = str(uuid.UUID(session_id))
        except ValueError:
            self._refuse(404, "not_found", "no such session on this node")
            return
        directory = self.node.directory
        ref = None if directory is None else directory.sessions.get(session_id)
        kick = Kick(KickReason.OPERATOR, int(CloseCode.KICKED_BY_OPERATOR))
        if ref is None or not tell_if_alive(ref, kick):
            self._refuse(404, "not_found", "no such session on this node")
            return
        record(self, "kick", session_id=session_id)
        self.send_json(200, {"status": "kicked", "session_id": session_id, "node_id": self.node.node_id})


class BroadcastHandler(ConsoleHandler):
    """An operator's announcement to the zone's sessions (every node; ``sessions`` counts this
    node's)."""

    async def post(self) -> None:
        """200 ``{"status": "sent", "zone", "sessions": n}``; 400 for a bad body, 404 for another
        zone than this node's, 503 when the zone cannot answer."""
        body = _body(self)
        text = None if body is None else announcement_text(body.get("text"))
        zone = self.node.world.map_id if self.node.zone is not None else None
        if text is None or set(body) - {"text", "zone"}:
            self._refuse(400, "bad_request", f'send {{"text": "1 to {MAX_TEXT} printable characters", "zone"?: "map id"}}')
            return
        wanted = body.get("zone", zone)
        if not isinstance(wanted, str):
            self._refuse(400, "bad_request", "zone must be a string (a map id)")
            return
        if zone is None or wanted != zone:
            self._refuse(404, "not_found", f"this node serves zone {zone}, not {wanted}")
            return
        try:
            reached = await ask_async(self.node.zone, Announce(text), timeout=5.0)
        except Exception as exc:  # the zone stopped or did not answer in time
            self._refuse(503, "unavailable", f"the zone did not answer: {type(exc).__name__}")
            return
        record(self, "broadcast", zone=zone, sessions=reached, text=text)
        self.send_json(200, {"status": "sent", "zone": zone, "sessions": reached, "node_id": self.node.node_id})


def operator_routes(given: dict[str, Any]) -> list[tuple]:
    """The routes of this module, for :func:`transport.app.make_app` (``given``: the node)."""
    return [
        (r"/admin/sessions/([^/]+)/kick", KickHandler, given),
        (r"/admin/broadcast", BroadcastHandler, given),
    ]
