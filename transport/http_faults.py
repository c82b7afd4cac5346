"""Test-only fault hooks (``debug.fault_hooks``): ``POST /debug/faults/crash`` makes one
character's actor raise in its next handler, so a fault-injection run (``tilehall nemesis``) can
crash an actor of a real server process. The route does not exist unless the setting is on."""

from __future__ import annotations

import json
from typing import Any

import tornado.web
from pykka import ActorRegistry

from actors.base import live_actors, tell_if_alive
from actors.messages import FailNow
from transport.http_ops import AdminHandler


class CrashHandler(AdminHandler):
    """``POST /debug/faults/crash`` with ``{"character_id": ...}``: 200 when that character's
    actor was told to fail, 404 when no live actor plays it."""

    def post(self) -> None:
        try:
            character_id = json.loads(self.request.body or b"{}")["character_id"]
        except (ValueError, KeyError, TypeError):
            return self._refuse(400, "bad_request", 'send {"character_id": "..."}')
        self.set_header("Content-Type", "application/json")
        for snap in live_actors():
            if snap.get("class") == "CharacterActor" and snap.get("entity_id") == character_id:
                ref = ActorRegistry.get_by_urn(snap["urn"])
                if ref is not None and tell_if_alive(ref, FailNow()):
                    return self.finish('{"crashed":true}')
        self._refuse(404, "not_found", "no live actor plays that character")


def fault_routes(settings: Any, given: dict[str, Any]) -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    """The fault hooks' routes (``given``: the node): none unless ``debug.fault_hooks`` is on."""
    return [(r"/debug/faults/crash", CrashHandler, given)] if settings.debug.fault_hooks else []
