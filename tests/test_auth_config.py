"""The web client's sign-in configuration: GET /auth/config and the auth.client_* settings."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from pydantic import ValidationError

from config.settings import Settings
from transport.http_auth import client_auth_config

ISSUER = "https://idp.example"
PRODUCTION = {
    "database_url": "postgresql://u@localhost:5432/tilehall",
    "redis_url": "redis://localhost:6379/0",
    "admin_token": "admin-secret",
}


def _settings(mode: str = "production", **auth: Any) -> Settings:
    auth = {"jwks_url": ISSUER + "/jwks", **auth} if mode == "production" else auth
    return Settings(mode=mode, auth=auth, **(PRODUCTION if mode == "production" else {}))


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def test_dev_server_offers_dev_login_and_no_provider(live_server):
    status, body = get_json(live_server.url + "/auth/config")
    assert status == 200
    assert body == {"mode": "dev", "dev_login": True, "oidc": None}


def test_configured_client_is_served_without_any_secret(start_server):
    server = start_server(auth={
        "issuer": ISSUER, "client_id": "tilehall-web", "audience": "tilehall-web",
        "scopes": ["openid", "profile", "offline_access"], "client_auth_params": {"prompt": "consent"},
    })
    status, body = get_json(server.url + "/auth/config")
    assert status == 200
    assert body["oidc"] == {
        "issuer": ISSUER,
        "client_id": "tilehall-web",
        "scopes": ["openid", "profile", "offline_access"],
        "token": "id",
        "audience": "tilehall-web",
        "auth_params": {"prompt": "consent"},
    }
    text = json.dumps(body)
    assert server.settings.auth.dev_secret not in text
    # The page itself names no IdP: it learns the issuer from this endpoint only.
    with urllib.request.urlopen(server.url + "/", timeout=10) as resp:
        assert ISSUER not in resp.read().decode()


def test_access_token_mode_serves_the_checked_audience():
    cfg = client_auth_config(_settings(
        issuer=ISSUER, client_id="web", client_token="access", audience="https://game.example/api",
        client_auth_params={"audience": "https://game.example/api"},
    ))
    assert cfg["mode"] == "production" and cfg["dev_login"] is False
    assert cfg["oidc"]["token"] == "access"
    assert cfg["oidc"]["audience"] == "https://game.example/api"


@pytest.mark.parametrize(
    ("auth", "mode", "message"),
    [
        ({"client_id": "web"}, "dev", "auth.client_id needs auth.issuer"),
        ({"client_id": "web", "issuer": ISSUER, "scopes": ["profile"]}, "dev", 'must include "openid"'),
        ({"client_id": "web", "issuer": ISSUER, "audience": "api"}, "dev", "auth.audience must be auth.client_id"),
        ({"client_id": "web", "issuer": ISSUER}, "production", "auth.audience with auth.client_id"),
        ({"client_id": "web", "issuer": ISSUER, "client_token": "refresh"}, "dev", "client_token"),
    ],
)
def test_unusable_client_settings_are_refused(auth, mode, message):
    with pytest.raises(ValidationError, match=message):
        _settings(mode, **auth)
