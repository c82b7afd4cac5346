"""A real OpenID provider for the sign-in tests: tests/oidc/idp.mjs (panva's oidc-provider) run
by Node.js, its dependencies installed with ``npm ci`` from the committed lock file when absent."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

IDP_DIR = Path(__file__).resolve().parent / "oidc"
START_TIMEOUT_S = 30.0
NPM_CI_TIMEOUT_S = 600.0
MIN_NODE_MAJOR = 20


def node_missing() -> str | None:
    """Why the provider cannot run here (no ``node`` or ``npm``, or a Node.js before 20), or None."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (the sign-in tests run oidc-provider on Node.js 20+)"
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    major = version.lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < MIN_NODE_MAJOR:
        return f"Node.js {version or '?'} is too old for oidc-provider (needs {MIN_NODE_MAJOR}+)"
    return None


def ensure_installed() -> None:
    """``npm ci`` in tests/oidc when node_modules is missing or older than the lock file."""
    lock = IDP_DIR / "package-lock.json"
    stamp = IDP_DIR / "node_modules" / ".package-lock.json"  # npm writes it on every install
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=IDP_DIR, check=True, timeout=NPM_CI_TIMEOUT_S,
    )


class IdentityProvider:
    """One oidc-provider process on a free loopback port (stopped with :meth:`stop`)."""

    def __init__(self, *, ttl_s: int = 30, user: str = "alice", password: str = "wonderland",
                 name: str = "Alice", client_id: str = "tilehall-web", access_audience: str | None = None) -> None:
        """``access_audience``: access tokens become JWTs for it (else opaque, ID tokens only)."""
        self.user, self.password, self.name, self.client_id = user, password, name, client_id
        self.log: list[str] = []
        extra = ["--access-audience", access_audience] if access_audience else []
        self.proc = subprocess.Popen(
            ["node", "idp.mjs", "--port", "0", "--ttl", str(ttl_s), "--user", user,
             "--password", password, "--name", name, "--client-id", client_id, *extra],
            cwd=IDP_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "NODE_ENV": "test"},
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(lines,), daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=START_TIMEOUT_S)
            except queue.Empty:
                self.stop()
                raise RuntimeError("the test IdP did not start:\n" + "\n".join(self.log)) from None
            if line.startswith("{"):
                self.issuer: str = json.loads(line)["issuer"]
                return
            if line == "":  # the process ended
                raise RuntimeError("the test IdP exited:\n" + "\n".join(self.log))

    def _read(self, lines: queue.Queue[str]) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.log.append(raw.rstrip())
            lines.put(raw.strip())
        lines.put("")

    def _admin(self, path: str, **params: Any) -> dict[str, Any]:
        query = urllib.parse.urlencode(params, doseq=True)
        req = urllib.request.Request(f"{self.issuer}{path}?{query}", method="POST" if path != "/_admin/keys" else "GET")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    @property
    def jwks_url(self) -> str:
        """Where the provider publishes its signing keys."""
        return self.issuer + "/jwks"

    def allow_redirect(self, uri: str) -> None:
        """Register ``uri`` as the client's redirect and post-logout redirect URI."""
        self._admin("/_admin/redirect", uri=[uri])

    def rotate_key(self, keep_old: bool = True) -> dict[str, Any]:
        """A new signing key, first in the published set: ``{"signing": kid, "published": [...]}``."""
        return self._admin("/_admin/rotate", keep_old="1" if keep_old else "0")

    def keys(self) -> dict[str, Any]:
        """``{"signing": kid, "published": [kid, ...]}``."""
        return self._admin("/_admin/keys")

    def stop(self) -> None:
        """Terminate the process (and wait for it)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
