"""The operators' HTTP endpoints: ``/metrics``, ``/debug/actors``, ``/debug/actors/{urn}`` and the
public profile API ``GET /api/characters/{id}``.

None of them waits for an actor: the debug pages read the actors' lock-free snapshots
(:func:`actors.base.live_actors`, :meth:`describe`), and the profile API runs its Redis and
PostgreSQL calls in an executor, never on the IOLoop thread.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import time
import uuid
from typing import Any

import tornado.web
from prometheus_client.exposition import choose_encoder
from tornado.escape import url_escape, xhtml_escape
from tornado.ioloop import IOLoop

from actors.base import live_actors, published_detail
from transport.console_summary import looks_stuck
from transport.peers import is_direct_local, is_loopback
from transport.ports import NodePort

__all__ = ["is_loopback", "prefers_html", "ops_routes"]

_COLUMNS = ("class", "urn", "entity_id", "status", "inbox_depth", "messages_handled",
            "last_message_age_s", "started_at")


def _iso(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


def prefers_html(accept: str | None) -> bool:
    """True when the Accept header ranks ``text/html`` above ``application/json`` (ties: JSON).

    Each type takes the q of its most specific matching range (``type/sub`` over ``type/*``
    over ``*/*``), as RFC 9110 says.
    """
    ranges: list[tuple[str, float]] = []
    for part in (accept or "").split(","):
        media, *params = [f.strip() for f in part.split(";")]
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        ranges.append((media.lower(), q))

    def quality(wanted: str) -> float:
        generic = wanted.split("/")[0] + "/*"
        best = (-1, 0.0)
        for media, q in ranges:
            rank = {wanted: 2, generic: 1, "*/*": 0}.get(media, -1)
            if rank > best[0]:
                best = (rank, q)
        return best[1]

    return quality("text/html") > quality("application/json")


class _NodeHandler(tornado.web.RequestHandler):
    """A handler given the node by the route table (``initialize(node=...)``)."""

    def initialize(self, node: NodePort) -> None:
        self.node = node


class MetricsHandler(_NodeHandler):
    """``GET /metrics``: the node's registry in the exposition format the scraper asks for."""

    def get(self) -> None:
        encoder, content_type = choose_encoder(self.request.headers.get("Accept", ""))
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(encoder(self.node.metrics.registry))


class AdminHandler(_NodeHandler):
    """Base of ``/debug/*`` and ``/admin/*``: the admin bearer token, always when one is
    configured; without one, only a dev-mode server answers, and only a direct loopback peer
    (a request a proxy forwarded, even from loopback, is not local: :mod:`transport.peers`)."""

    def prepare(self) -> None:
        settings = self.node.settings
        token = settings.admin_token
        self.set_header("Cache-Control", "no-store")
        if token:
            header = self.request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode("utf-8"), token.encode("utf-8")
            ):
                self.set_header("WWW-Authenticate", 'Bearer realm="tilehall-debug"')
                self._refuse(401, "unauthorized", "send Authorization: Bearer <admin token>")
        elif settings.mode != "dev":
            self._refuse(403, "forbidden", "no admin token is configured: set admin_token (TILEHALL_ADMIN_TOKEN)")
        elif not is_direct_local(self.request):
            self._refuse(403, "forbidden", "no admin token is configured: in dev mode this is served only to"
                         " a direct loopback client, never through a proxy")

    def _refuse(self, status: int, code: str, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(_json({"error": code, "message": message}))

    def _wants_html(self) -> bool:
        fmt = self.get_query_argument("format", None)
        if fmt in ("html", "json"):
            return fmt == "html"
        return prefers_html(self.request.headers.get("Accept"))


def _row(snap: dict[str, Any], now: float) -> dict[str, Any]:
    last = snap.get("last_message_at")
    row = dict(snap)
    row["last_message_age_s"] = None if last is None else round(max(0.0, now - last), 3)
    row["stuck"] = looks_stuck(snap, now)
    row["last_message_at"] = _iso(last)
    row["started_at"] = _iso(snap.get("started_at"))
    return row


class DebugActorsHandler(AdminHandler):
    """``GET /debug/actors[?class=SessionActor]``: every live actor (JSON, or an HTML table when
    the client prefers text/html)."""

    def get(self) -> None:
        now = time.time()
        wanted = self.get_query_argument("class", None)
        rows = [_row(s, now) for s in live_actors() if wanted is None or s["class"] == wanted]
        rows.sort(key=lambda r: (r["class"], r["started_at"] or "", r["urn"]))
        by_class: dict[str, int] = {}
        for r in rows:
            by_class[r["class"]] = by_class.get(r["class"], 0) + 1
        node = self.node
        if self._wants_html():
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(_html_table(node.node_id, rows, by_class))
            return
        self.set_header("Content-Type", "application/json")
        self.finish(_json({"node_id": node.node_id, "generated_at": _iso(now), "count": len(rows),
                           "by_class": by_class, "actors": rows}))


class DebugActorHandler(AdminHandler):
    """``GET /debug/actors/{urn}``: one actor's snapshot plus its ``describe()``; 404 unknown."""

    def get(self, urn: str) -> None:
        published = published_detail(urn)
        if published is None:
            self._refuse(404, "not_found", f"no live actor {urn}")
            return
        row = _row(published, time.time())
        if self._wants_html():
            self.set_header("Content-Type", "text/html; charset=utf-8")
            items = "".join(
                f"<tr><th>{xhtml_escape(str(k))}</th><td>{xhtml_escape(_json(v))}</td></tr>"
                for k, v in {**{k: v for k, v in row.items() if k != "detail"},
                             **(row.get("detail") or {})}.items()
            )
            self.finish(_page(f"{row['class']} {row['urn']}", f"<table>{items}</table>"
                              '<p><a href="/debug/actors">all actors</a></p>'))
            return
        self.set_header("Content-Type", "application/json")
        self.finish(_json(row))


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\">"
        f"<title>{xhtml_escape(title)}</title><style>"
        "body{font:14px system-ui,sans-serif;margin:1em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}th{background:#f4f4f4}"
        f"</style></head><body><h1>{xhtml_escape(title)}</h1>{body}</body></html>"
    )


def _html_table(node_id: str, rows: list[dict[str, Any]], by_class: dict[str, int]) -> str:
    summary = ", ".join(f"{xhtml_escape(k)}: {v}" for k, v in sorted(by_class.items()))
    head = "".join(f"<th>{c}</th>" for c in _COLUMNS)
    body = []
    for r in rows:
        cells = []
        for c in _COLUMNS:
            text = xhtml_escape("" if r.get(c) is None else str(r[c]))
            if c == "urn":
                text = f'<a href="/debug/actors/{url_escape(r["urn"], plus=False)}">{text}</a>'
            cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return _page(f"tilehall actors on {node_id}",
                 f"<p>{len(rows)} live actors ({summary})</p>"
                 f"<table><tr>{head}</tr>{''.join(body)}</table>")


class CharacterHandler(_NodeHandler):
    """``GET /api/characters/{id}``: a character's public profile (character_id, display_name,
    x, y, health, max_health) through the Redis cache; 404 for an unknown id.

    The ``X-Tilehall-Source`` header says where it came from: ``cache`` (a fresh entry) or
    ``source`` (the live actor or PostgreSQL).
    """

    async def get(self, character_id: str) -> None:
        self.set_header("Cache-Control", "no-store")
        try:
            character_id = str(uuid.UUID(character_id))
        except ValueError:
            self._send(404, {"error": "not_found", "message": "no such character"})
            return
        try:
            result = await IOLoop.current().run_in_executor(None, self.node.read_profile, character_id)
        except Exception as exc:  # PostgreSQL down on a miss: say so, do not hang or crash
            self._send(503, {"error": "unavailable", "message": f"profiles are unavailable: {type(exc).__name__}"})
            return
        if result.view is None:
            self._send(404, {"error": "not_found", "message": "no such character"})
            return
        self.set_header("X-Tilehall-Source", result.origin)
        self._send(200, result.view)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(_json(body))


def ops_routes(given: dict[str, Any]) -> list[tuple]:
    """The routes of this module, for :func:`transport.app.make_app` (``given``: the node)."""
    return [
        (r"/metrics", MetricsHandler, given),
        (r"/debug/actors/?", DebugActorsHandler, given),
        (r"/debug/actors/([^/]+)", DebugActorHandler, given),
        (r"/api/characters/([^/]+)", CharacterHandler, given),
    ]
