"""Browser fixtures: a headless Chromium driven by Playwright, and the web client served as files.

Chromium is the system's (Debian's ``chromium``); Playwright never downloads a browser here.
Without Chromium or Playwright the browser tests are skipped with the reason, unless ``CI`` is
set: then they fail, so a CI image that lost its browser cannot pass silently.
Set ``TILEHALL_CHROMIUM`` to use another Chromium binary.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WEBCLIENT = REPO / "webclient"
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1280, "height": 800}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run in CI: {reason}")
    pytest.skip(reason)


def _chromium_path() -> str | None:
    return (
        os.environ.get("TILEHALL_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium per test module (each test opens its own contexts).

    Not per session: Playwright's sync API keeps an asyncio loop running on the main thread
    while it is open, and every later test that calls ``asyncio.run`` would fail."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright; no browser download needed)")
    path = _chromium_path()
    if not path:
        _unavailable("no Chromium found (install Debian's chromium or set TILEHALL_CHROMIUM)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def new_page(browser):
    """Factory: a page in a fresh browser context (its own storage: another player)."""
    contexts = []

    def make():
        ctx = browser.new_context(viewport=VIEWPORT)
        contexts.append(ctx)
        page = ctx.new_page()
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        return page

    yield make
    for ctx in contexts:
        ctx.close()


class _ClientFiles(http.server.SimpleHTTPRequestHandler):
    """webclient/ as files, index placeholders filled in, plus an empty page for module tests."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/blank.html":
            return self._send(b"<!doctype html><title>module test</title>", "text/html")
        if self.path in ("/", "/index.html"):
            html = (WEBCLIENT / "index.html").read_text("utf-8")
            html = html.replace("__TILEHALL_VERSION__", "0.0.0-test").replace("__TILEHALL_MODE__", "dev")
            return self._send(html.encode(), "text/html")
        return super().do_GET()

    def _send(self, body: bytes, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def client_files() -> Iterator[str]:
    """Base URL of a plain HTTP server with the web client's files (no game server)."""
    handler = functools.partial(_ClientFiles, directory=str(WEBCLIENT))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def screenshot():
    """Save a page's screenshot under docs/screenshots/ (committed; the README shows main.png)."""

    def save(page, name: str) -> Path:
        assert re.fullmatch(r"[a-z0-9-]+", name)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path))
        return path

    return save
