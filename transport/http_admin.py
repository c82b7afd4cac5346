"""``POST /admin/drain``: move every player to another node, then stop this process.

Guarded like ``/debug/*`` (:class:`transport.http_ops.AdminHandler`: the admin bearer token
whenever one is configured; without one, only in dev mode and only to a direct loopback client;
through the console's :class:`~transport.http_console.ConsoleHandler` so the console's drain
button can call it), logged and counted as an operator action. The answer comes once the node has drained (every
session parked and closed with 1012); then the node is asked to stop (``tilehall serve`` exits;
the operator, or ``tilehall cluster``, starts it again).
"""

from __future__ import annotations

import json
from typing import Any

from transport.http_console import ConsoleHandler
from transport.http_operator import record


class DrainHandler(ConsoleHandler):
    """Drain this node, answer how many sessions moved, then request the process's stop."""

    async def post(self) -> None:
        """Drain (bounded by the node), then 200 ``{"status": "drained", "parked": n}``."""
        record(self, "drain")
        parked = await self.node.drain()
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": "drained", "node_id": self.node.node_id, "parked": parked}))
        self.node.stop_requested.set()


def admin_routes(given: dict[str, Any]) -> list[tuple]:
    """The routes of this module, for :func:`transport.app.make_app` (``given``: the node)."""
    return [(r"/admin/drain", DrainHandler, given)]
