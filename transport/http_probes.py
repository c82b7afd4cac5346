"""``/healthz`` and ``/readyz``: process liveness and dependency readiness."""

from __future__ import annotations

import json

import tornado.web
from tornado.ioloop import IOLoop


class HealthHandler(tornado.web.RequestHandler):
    """200 while the process runs and its IOLoop answers."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish('{"status":"ok"}')


class ReadyHandler(tornado.web.RequestHandler):
    """200 when PostgreSQL and Redis answer and migrations are applied; else 503 with reasons."""

    async def get(self) -> None:
        node = self.application.settings["node"]
        # The probes block on sockets (bounded by short timeouts): never on the IOLoop thread.
        problems = await IOLoop.current().run_in_executor(None, node.readiness_problems)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        if problems:
            self.set_status(503)
        self.finish(json.dumps({"status": "unready" if problems else "ready", "problems": problems}))
