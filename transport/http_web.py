"""The web client's HTTP side: the page (stamped with build version and mode), its static
files, the Tiled maps, and the dev-mode login endpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import tornado.web

from actors.vocabulary import ErrorCode
from actors.world_map import MAPS_DIR
from config.version import SERVER_VERSION
from transport.auth import AuthError, issue_dev_token
from transport.ports import NodePort

WEBCLIENT_DIR = Path(__file__).resolve().parent.parent / "webclient"


class IndexHandler(tornado.web.RequestHandler):
    """``/``: index.html with ``__TILEHALL_VERSION__`` and ``__TILEHALL_MODE__`` filled in
    (rendered once when the routes are built: no file read on the IOLoop per request)."""

    def initialize(self, html: str) -> None:
        self.html = html

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(self.html)


class MapHandler(tornado.web.StaticFileHandler):
    """``/maps/<id>.tmj``: the Tiled JSON maps the client draws."""

    def get_content_type(self) -> str:
        return "application/json"


class DevLoginHandler(tornado.web.RequestHandler):
    """``POST /auth/dev-login`` ``{"name": "alice"}`` → a dev token (registered in dev mode only);
    429 with ``Retry-After`` past the login rate limit of the client's address."""

    def initialize(self, node: NodePort) -> None:
        self.node = node

    def post(self) -> None:
        node = self.node
        if (refused := node.login_gate.refuse_http(self)) is not None:
            self.finish({"error": ErrorCode.RATE_LIMITED.value, "message": refused})
            return
        try:
            body = json.loads(self.request.body or b"{}")
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str) or not name.strip():
                raise ValueError("send JSON {\"name\": \"your name\"}")
            user = name.strip()
            token = issue_dev_token(node.settings, user, name=user)
        except (ValueError, AuthError) as exc:
            self.set_status(400)
            self.finish({"error": "bad_request", "message": str(exc)[:200]})
            return
        ttl = node.settings.auth.dev_token_ttl_s
        self.finish({"token": token, "user_id": user, "expires_at": int(time.time()) + ttl})


def web_routes(mode: str, given: dict[str, Any]) -> list[tuple]:
    """Routes of the web client (the dev login only in dev mode; ``given``: the node)."""
    html = (WEBCLIENT_DIR / "index.html").read_text(encoding="utf-8")
    page = {"html": html.replace("__TILEHALL_VERSION__", SERVER_VERSION).replace("__TILEHALL_MODE__", mode)}
    routes: list[tuple] = [
        (r"/", IndexHandler, page),
        (r"/index\.html", IndexHandler, page),
        (r"/maps/([A-Za-z0-9_-]+\.tmj)", MapHandler, {"path": str(MAPS_DIR)}),
    ]
    if mode == "dev":
        routes.append((r"/auth/dev-login", DevLoginHandler, given))
    routes.append((r"/((?:js|css|img|fonts)/.*)", tornado.web.StaticFileHandler, {"path": str(WEBCLIENT_DIR)}))
    return routes
