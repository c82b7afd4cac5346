"""The operators' console: the page at ``/debug/`` (static ES modules from
``webclient/console/``, no build step), this node's summary (``/debug/summary``), every node's
(``/debug/cluster``), the API description (``/debug/openapi.json``) and the sign-in that lets a
browser carry the admin token.

Every handler here derives from :class:`ConsoleHandler`, an :class:`~transport.http_ops.AdminHandler`
whose guard (the admin bearer token, or loopback) applies unchanged; the only addition is that a
browser, which cannot send an ``Authorization`` header on a page load, may present the same
token in the console's cookie (set by ``POST /debug/sign-in``). A POST authenticated by that
cookie must also carry ``X-Tilehall-Console: 1`` (a header a cross-site form cannot send), and
the cookie is ``SameSite=Strict`` and ``HttpOnly``.
"""

from __future__ import annotations

import hmac
import json
import urllib.parse
from pathlib import Path
from typing import Any

import redis
from tornado.escape import xhtml_escape
from tornado.ioloop import IOLoop

from transport.http_ops import AdminHandler, _NodeHandler
from transport.ports import NodePort

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "webclient" / "console"
OPENAPI_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
ADMIN_COOKIE = "tilehall_admin"
CONSOLE_HEADER = "X-Tilehall-Console"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".json": "application/json"}


class ConsoleHandler(AdminHandler):
    """:class:`AdminHandler` that also reads the admin token from the console's cookie."""

    def prepare(self) -> None:
        """Bridge the cookie to the bearer header, then apply the admin guard as is."""
        by_cookie = False
        token = self.get_cookie(ADMIN_COOKIE)
        if token and "Authorization" not in self.request.headers:
            self.request.headers["Authorization"] = "Bearer " + urllib.parse.unquote(token)
            by_cookie = True
        if by_cookie and self.request.method != "GET" and self.request.headers.get(CONSOLE_HEADER) != "1":
            self._refuse(403, "forbidden", f"send {CONSOLE_HEADER}: 1 with a cookie-authenticated POST")
            return
        super().prepare()

    def send_json(self, status: int, body: Any) -> None:
        """Finish with ``body`` as JSON."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body, default=str, separators=(",", ":")))


class ConsolePageHandler(ConsoleHandler):
    """``GET /debug/``: the console page; without the admin token, its sign-in form (HTML)."""

    def initialize(self, node: NodePort, files: dict[str, bytes]) -> None:
        self.node = node
        self.files = files

    def get(self) -> None:
        """The page (its modules come from ``/debug/console/``)."""
        self.set_header("Content-Type", _TYPES[".html"])
        self.finish(self.files["index.html"])

    def _refuse(self, status: int, code: str, message: str) -> None:
        if status != 401 or not self._wants_html():
            return super()._refuse(status, code, message)
        self.set_status(401)
        self.set_header("Content-Type", _TYPES[".html"])
        self.finish(_SIGN_IN.format(message=xhtml_escape(message)))


class ConsoleFileHandler(ConsoleHandler):
    """``GET /debug/console/<file>``: the console's modules and style, read once at start."""

    def initialize(self, node: NodePort, files: dict[str, bytes]) -> None:
        self.node = node
        self.files = files

    def get(self, name: str) -> None:
        """One file of ``webclient/console/``; 404 for any other name."""
        body = self.files.get(name)
        if body is None:
            self._refuse(404, "not_found", f"no console file {name}")
            return
        self.set_header("Content-Type", _TYPES[Path(name).suffix])
        self.finish(body)


class SignInHandler(_NodeHandler):
    """``POST /debug/sign-in`` (form field ``token``): the right admin token sets the console's
    cookie and goes to ``/debug/``; a wrong one gets 401. The way in, so not itself guarded."""

    def post(self) -> None:
        """Check the token (constant time), set the cookie, redirect; 429 past the login rate
        limit of the client's address (guessing the token costs what guessing a login does)."""
        self.set_header("Cache-Control", "no-store")
        if (refused := self.node.login_gate.refuse_http(self, "sign-ins")) is not None:
            self.set_header("Content-Type", _TYPES[".html"])
            self.finish(_SIGN_IN.format(message=refused))
            return
        given = self.get_body_argument("token", "").strip()
        token = self.node.settings.admin_token
        if not token or not hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8")):
            self.set_status(401)
            self.set_header("Content-Type", _TYPES[".html"])
            self.finish(_SIGN_IN.format(message="that is not this node's admin token"))
            return
        self.set_cookie(ADMIN_COOKIE, urllib.parse.quote(given, safe=""), path="/", httponly=True,
                        samesite="Strict", secure=self.request.protocol == "https")
        self.redirect("/debug/", status=303)


class SummaryHandler(ConsoleHandler):
    """``GET /debug/summary``: this node's summary (what it publishes to the cluster)."""

    def get(self) -> None:
        """The summary, computed now from what actors and metrics publish."""
        self.send_json(200, self.node.console.summary())


class ClusterHandler(ConsoleHandler):
    """``GET /debug/cluster``: every node's published summary (Redis, off the IOLoop); 503 with
    this node's own summary when Redis cannot be read."""

    async def get(self) -> None:
        """``{"node_id": this node, "nodes": [summary, ...]}``."""
        console = self.node.console
        try:
            nodes = await IOLoop.current().run_in_executor(None, console.cluster)
        except redis.RedisError as exc:
            self.send_json(503, {"node_id": self.node.node_id, "nodes": [console.summary()],
                                 "error": "unavailable", "message": f"Redis: {type(exc).__name__}"})
            return
        self.send_json(200, {"node_id": self.node.node_id, "nodes": nodes})


class OpenApiHandler(ConsoleHandler):
    """``GET /debug/openapi.json``: the OpenAPI document of every HTTP endpoint."""

    def initialize(self, node: NodePort, document: bytes) -> None:
        self.node = node
        self.document = document

    def get(self) -> None:
        """The document (docs/openapi.json, read once at start)."""
        self.set_header("Content-Type", _TYPES[".json"])
        self.finish(self.document)


def _console_files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(CONSOLE_DIR.iterdir()) if p.suffix in _TYPES}


def console_routes(given: dict[str, Any]) -> list[tuple]:
    """The routes of this module, for :func:`transport.app.make_app` (``given``: the node)."""
    files = {**given, "files": _console_files()}
    document = {**given, "document": OPENAPI_PATH.read_bytes()}
    return [
        (r"/debug/?", ConsolePageHandler, files),
        (r"/debug/console/([^/]*)", ConsoleFileHandler, files),
        (r"/debug/sign-in", SignInHandler, given),
        (r"/debug/summary", SummaryHandler, given),
        (r"/debug/cluster", ClusterHandler, given),
        (r"/debug/openapi\.json", OpenApiHandler, document),
    ]


_SIGN_IN = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>tilehall console: sign in</title><style>body{{font:15px system-ui,sans-serif;margin:3em auto;
max-width:28em}}input{{font:inherit;width:100%;margin:.5em 0}}</style></head><body>
<h1>tilehall console</h1><p>{message}.</p>
<form method="post" action="/debug/sign-in"><label>Admin token
<input name="token" type="password" autocomplete="current-password" required autofocus></label>
<button type="submit">Sign in</button></form></body></html>"""
