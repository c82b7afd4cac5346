"""In-process tilehall servers for tests: settings on the run's database, and a Node on its own
IOLoop thread, as in production. The fixtures in conftest.py build on these."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from config.settings import Settings


def make_settings(database_url: str, redis_url: str, prefix: str, tmp_path: Path, **over: Any) -> Settings:
    """Settings for a test server; ``over`` merges into the groups (``session={...}``) or replaces
    top-level settings (``redis_url=...``)."""
    top: dict[str, Any] = {"mode": "dev", "database_url": database_url, "redis_url": redis_url}
    top["var_dir"] = str(tmp_path / "var")
    groups: dict[str, Any] = {
        "server": {"port": 0},
        "redis": {"key_prefix": prefix},
        "retention": {"archive_dir": str(tmp_path / "archive")},
        # Every test client logs in from 127.0.0.1: the login rate limit has its own tests.
        "auth": {"login_rate_per_minute": 600_000, "login_burst": 100_000},
    }
    for key, value in over.items():
        if isinstance(value, dict):
            groups.setdefault(key, {}).update(value)
        else:
            top[key] = value
    return Settings(**top, **groups)


class LiveServer:
    """A tilehall Node running on its own IOLoop thread, as in production."""

    def __init__(self, settings: Settings) -> None:
        from transport.node import Node

        self.settings = settings
        self.node = Node(settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="live-server", daemon=True)
        self._thread.start()
        self.call(self.node.start(), timeout=60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.node.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.node.port}/ws"

    def call(self, coro_or_fn: Any, timeout: float = 30) -> Any:
        """Run a coroutine (or a plain callable) on the server's IOLoop and return its result."""
        if asyncio.iscoroutine(coro_or_fn):
            return asyncio.run_coroutine_threadsafe(coro_or_fn, self.loop).result(timeout)

        async def wrap() -> Any:
            return coro_or_fn()

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def drop_all_sockets(self) -> int:
        """Close every player WebSocket abruptly (no logout), as a network drop would."""
        return self.call(self.node.drop_all_sockets)

    def stop(self) -> None:
        try:
            self.call(self.node.stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


def readyz(server: Any) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of the server's GET /readyz."""
    try:
        with urllib.request.urlopen(server.url + "/readyz", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
