"""The web client's sign-in configuration: ``GET /auth/config``.

Only public values from ``settings.auth`` (the issuer, the client id, scopes, which token the
client sends and the audience the server checks), so the page carries no URL and no secret.
The OpenID Connect flow itself runs in the browser (``webclient/js/oidc.js``).
"""

from __future__ import annotations

from typing import Any

import tornado.web

from config.settings import Settings


def client_auth_config(settings: Settings) -> dict[str, Any]:
    """The JSON the client reads at start: ``oidc`` is ``None`` when no client is configured."""
    auth = settings.auth
    oidc: dict[str, Any] | None = None
    if auth.client_id and auth.issuer:
        oidc = {
            "issuer": auth.issuer,
            "client_id": auth.client_id,
            "scopes": list(auth.scopes),
            "token": auth.client_token,
            "audience": auth.audience,
            "auth_params": dict(auth.client_auth_params),
        }
    return {"mode": settings.mode, "dev_login": settings.mode == "dev", "oidc": oidc}


class AuthConfigHandler(tornado.web.RequestHandler):
    """``GET /auth/config`` → ``{mode, dev_login, oidc: {issuer, client_id, scopes, token,
    audience, auth_params} | null}`` (rendered once when the routes are built)."""

    def initialize(self, config: dict[str, Any]) -> None:
        self.config = config

    def get(self) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.finish(self.config)


def auth_routes(settings: Settings) -> list[tuple]:
    """The sign-in configuration route."""
    return [(r"/auth/config", AuthConfigHandler, {"config": client_auth_config(settings)})]
