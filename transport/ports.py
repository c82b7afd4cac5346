"""What the HTTP and WebSocket handlers need of the node, as a Protocol: the handlers receive
the node through Tornado's ``initialize(node=...)`` and never import :mod:`transport.node`
(which imports the application), so the handler modules and the node form no import circle."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from config.settings import Settings
from transport.auth import TokenVerifier
from transport.liveness import LivenessWheel
from transport.login_limit import LoginGate
from transport.metrics import Metrics
from transport.sessions import SessionDirectory


class NodePort(Protocol):
    """The node as its handlers see it (all on the IOLoop thread unless said otherwise)."""

    settings: Settings
    node_id: str
    metrics: Metrics
    verifier: TokenVerifier
    login_gate: LoginGate  # the login rate limit per client address
    stopping: bool
    draining: bool  # drain() began: no new session here
    stop_requested: asyncio.Event  # the process should exit (after POST /admin/drain)
    directory: SessionDirectory | None
    broken: list[str]  # shared parts that died: no new session can start
    console: Any  # transport.console_summary.NodeConsole: the node's summary for the console
    zone: Any  # the ZoneActor's ref (None before start)
    world: Any  # actors.world_map.WorldMap: the zone's map
    liveness: LivenessWheel  # the sockets' deadlines (hello, idle, token expiry)

    def register_socket(self, socket: Any) -> bool:
        """Count an open socket; False when the server is at its connection cap."""

    def unregister_socket(self, socket: Any) -> None:
        """Forget a closed socket."""

    def read_profile(self, character_id: str) -> Any:
        """Read-through lookup of a public profile (blocking: call from an executor)."""

    async def drain(self) -> int:
        """Move every session to another node (park it, close 1012); how many were parked."""

    def readiness_problems(self) -> list[str]:
        """Reasons this node cannot serve players now (blocking: call from an executor)."""
