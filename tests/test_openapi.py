"""docs/openapi.json, the HTTP API description (issue 14): it names every route of
transport/app.py (and nothing that is not one), the node serves it, and schemathesis, run against
a live node with the admin token, finds no failure (every check it has, a bounded number of
examples per operation)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from nodes import make_settings
from wsclient import login

from transport.app import make_app
from transport.auth import issue_dev_token
from transport.http_console import OPENAPI_PATH

REPO = Path(__file__).resolve().parent.parent
CONFIG = Path(__file__).resolve().parent / "schemathesis.toml"
# Routes whose pattern is not one path template: the document's paths for them.
SPECIAL = {"/{}": {"/js/{}", "/css/{}"}}  # the web client's static files (js/, css/, img/, fonts/)
# Not fuzzed: the drain stops the node; the fault hook is absent unless debug.fault_hooks is on;
# /ws is the game's WebSocket (protocol v1 has its own schema and fuzz test).
NOT_FUZZED = ("drainNode", "crashCharacter", "gameSocket")
ADMIN_TOKEN = "openapi-admin-token"
_GROUP = re.compile(r"\((?:[^()]|\([^()]*\))*\)")


def _template(route_pattern: str) -> str:
    """``/api/characters/([^/]+)$`` → ``/api/characters/{}``; ``/debug/?$`` → ``/debug``."""
    p = route_pattern.removesuffix("$").removesuffix("/?")
    p = _GROUP.sub("{}", p).replace("\\.", ".")
    return p.rstrip("/") or "/"


def _doc_template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path).rstrip("/") or "/"


def _every_route() -> list[str]:
    """The patterns of every route the application can have (dev mode, fault hooks on)."""
    settings = make_settings("postgresql://u@127.0.0.1/none", "redis://127.0.0.1:1/0", "x:", Path("."),
                             debug={"fault_hooks": True})
    app = make_app(SimpleNamespace(settings=settings))
    return [rule.matcher.regex.pattern for rule in app.wildcard_router.rules]


def test_every_route_is_in_the_document_and_every_path_is_a_route() -> None:
    doc = json.loads(OPENAPI_PATH.read_text("utf-8"))
    documented = {_doc_template(p) for p in doc["paths"]}
    covered: set[str] = set()
    missing = []
    for pattern in _every_route():
        wanted = SPECIAL.get(_template(pattern), {_template(pattern)})
        if not wanted <= documented:
            missing.append(f"{pattern} (as {sorted(wanted - documented)})")
        covered |= wanted
    assert not missing, f"routes missing from docs/openapi.json: {missing}"
    assert documented <= covered, f"docs/openapi.json describes no route: {sorted(documented - covered)}"
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_the_route_check_can_fail() -> None:
    """A route the document lacks is reported (the comparison above is not vacuous)."""
    assert _template(r"/admin/new-thing/([^/]+)$") not in {_doc_template(p) for p in json.loads(
        OPENAPI_PATH.read_text("utf-8"))["paths"]}


def test_the_node_serves_the_document(start_server: Any) -> None:
    import urllib.request

    server = start_server(admin_token=ADMIN_TOKEN)
    req = urllib.request.Request(server.url + "/debug/openapi.json",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        assert json.loads(resp.read()) == json.loads(OPENAPI_PATH.read_text("utf-8"))


def _st() -> str:
    found = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    if not found:
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    return found


def _live_ids(server: Any) -> tuple[str, str, Any]:
    """A logged-in player's (character_id, session_id) and its client, so the run reaches the
    200 answers of the profile read and the kick, not only their 404s."""
    async def play() -> Any:
        return await login(server.ws_url, issue_dev_token(server.settings, "openapi-player"))

    client = asyncio.run(play())
    return client.welcome["character"]["character_id"], client.welcome["session_id"], client


def test_schemathesis_finds_no_failure(start_server: Any, tmp_path: Path) -> None:
    server = start_server(admin_token=ADMIN_TOKEN)
    character_id, session_id, _client = _live_ids(server)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.read_text("utf-8") + f"""
[[operations]]
include-operation-id = "characterProfile"
parameters = {{ character_id = "{character_id}" }}

[[operations]]
include-operation-id = "kickSession"
parameters = {{ session_id = "{session_id}" }}
""", encoding="utf-8")
    cmd = [_st(), "--no-color", "--config-file", str(config), "run", str(OPENAPI_PATH), "--url", server.url,
           "-H", f"Authorization: Bearer {ADMIN_TOKEN}", "--max-examples", "20",
           "--phases", "examples,coverage,fuzzing", "--workers", "2", "--request-timeout", "10",
           "--seed", os.environ.get("TILEHALL_SCHEMATHESIS_SEED", "20261202")]
    for op in NOT_FUZZED:
        cmd += ["--exclude-operation-id", op]
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=150, cwd=REPO,
                          env=os.environ.copy())
    tail = "\n".join(done.stdout.splitlines()[-25:])
    print(f"\n[schemathesis] {time.monotonic() - started:.1f} s\n{tail}")
    assert done.returncode == 0, done.stdout[-12000:] + done.stderr[-2000:]
    assert "Tested: " in done.stdout and " passed" in done.stdout
