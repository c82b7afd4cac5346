"""Production mode is safe to expose (issue 13): the per-install dev secret, dev mode kept on
loopback, /debug and /admin behind the admin token (a proxied request is never local), the
login rate limit, the plain-HTTP connection cap and ``server.shutdown_grace_s``."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from nodes import LiveServer, make_settings
from test_sessions import closed_with, new_user, run
from waiting import wait_until
from wsclient import WSClient, login

from config.dev_secret import dev_secret_path, load_or_create_dev_secret
from config.listen_guard import remote_dev_refusal
from config.settings import AuthSettings, Settings, SettingsError, load_settings
from config.version import SERVER_VERSION
from transport.auth import TokenVerifier, issue_dev_token
from transport.cluster_cmd import node_env
from transport.login_limit import LoginRateLimiter, address_key
from transport.peers import client_address, trusted_networks

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "admin-token-for-the-test-0123456789"


def _cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TILEHALL_")}
    return subprocess.run([sys.executable, "-m", "transport.cli", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def request(url: str, method: str = "GET", headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one HTTP request; HTTP errors are answers too."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# ---------------------------------------------------------------- the dev secret


def test_dev_secret_is_per_install_private_and_stable(tmp_path: Path) -> None:
    assert AuthSettings().dev_secret is None  # no secret in the source
    one = Settings(mode="dev", var_dir=tmp_path / "one").auth.dev_secret
    path = dev_secret_path(tmp_path / "one")
    assert one and len(one) >= 32 and path.read_text().strip() == one
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings(mode="dev", var_dir=tmp_path / "one").auth.dev_secret == one  # read back
    assert Settings(mode="dev", var_dir=tmp_path / "two").auth.dev_secret != one  # another install
    # Tokens of one install are refused by another.
    token = issue_dev_token(Settings(mode="dev", var_dir=tmp_path / "one"), "alice")
    assert TokenVerifier(Settings(mode="dev", var_dir=tmp_path / "one")).verify(token).user_id == "alice"
    with pytest.raises(Exception, match="signature"):
        TokenVerifier(Settings(mode="dev", var_dir=tmp_path / "two")).verify(token)


def test_explicit_dev_secret_wins_and_production_writes_none(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("TILEHALL_AUTH__DEV_SECRET", "x" * 40)
    assert load_settings(var_dir=tmp_path / "var").auth.dev_secret == "x" * 40
    assert not dev_secret_path(tmp_path / "var").exists()
    monkeypatch.setenv("TILEHALL_AUTH__DEV_SECRET", "short")
    with pytest.raises(SettingsError, match="dev_secret"):
        load_settings(var_dir=tmp_path / "var")
    monkeypatch.delenv("TILEHALL_AUTH__DEV_SECRET")
    prod = Settings(mode="production", var_dir=tmp_path / "prod", database_url="postgresql://u@h/db",
                    redis_url="redis://h:6379/0", admin_token=ADMIN, auth={"jwks_url": "https://idp/jwks"})
    assert prod.auth.dev_secret is None and not dev_secret_path(tmp_path / "prod").exists()


def test_dev_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create_dev_secret(tmp_path)
    dev_secret_path(tmp_path).chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        load_settings(var_dir=tmp_path)


def test_processes_starting_together_share_one_secret(tmp_path: Path) -> None:
    code = f"from config.dev_secret import load_or_create_dev_secret as f; print(f({str(tmp_path)!r}))"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for _ in range(6)]
    secrets = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(secrets) == 1 and secrets == {dev_secret_path(tmp_path).read_text().strip()}
    assert [p.name for p in tmp_path.iterdir()] == ["dev-secret"]  # no file left aside


def test_token_command_signs_with_the_install_secret(tmp_path: Path) -> None:
    var = tmp_path / "var"
    done = _cli("token", "alice", env={"TILEHALL_VAR_DIR": str(var)})
    assert done.returncode == 0, done.stderr
    settings = Settings(mode="dev", var_dir=var)
    assert TokenVerifier(settings).verify(done.stdout.strip()).user_id == "alice"


def test_cluster_nodes_get_the_install_secret(tmp_path: Path) -> None:
    secret = Settings(mode="dev", var_dir=tmp_path).auth.dev_secret
    env = node_env("postgresql://u@h/db", "redis://h:6379/0", tmp_path / "cluster" / "node1", secret)
    assert env["TILEHALL_AUTH__DEV_SECRET"] == secret
    assert Settings(mode="dev", var_dir=tmp_path, server={"trusted_proxies": json.loads(
        env["TILEHALL_SERVER__TRUSTED_PROXIES"])}).server.trusted_proxies == ["127.0.0.1", "::1"]


# ---------------------------------------------------------------- dev mode stays on loopback


def test_remote_dev_refusal_rule(tmp_path: Path) -> None:
    def refusal(host: str, **server: Any) -> str | None:
        return remote_dev_refusal(Settings(mode="dev", var_dir=tmp_path, server={"host": host, **server}))

    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert refusal(host) is None, host
    for host in ("0.0.0.0", "", "::", "10.1.2.3", "192.0.2.7"):
        assert "--allow-remote-dev" in (refusal(host) or ""), host
    assert refusal("0.0.0.0", allow_remote_dev=True) is None
    prod = Settings(mode="production", database_url="postgresql://u@h/db", redis_url="redis://h:6379/0",
                    admin_token=ADMIN, auth={"jwks_url": "https://idp/jwks"}, server={"host": "0.0.0.0"})
    assert remote_dev_refusal(prod) is None


def test_serve_refuses_a_foreign_address_in_dev_mode(tmp_path: Path) -> None:
    env = {"TILEHALL_VAR_DIR": str(tmp_path / "var")}
    done = _cli("serve", "--host", "0.0.0.0", "--port", "0", env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "loopback only" in done.stderr and "--allow-remote-dev" in done.stderr
    assert "Traceback" not in done.stderr
    done = _cli("serve", "--port", "0", env={**env, "TILEHALL_SERVER__HOST": "0.0.0.0"})
    assert done.returncode == 2 and "loopback only" in done.stderr, done.stderr


def test_cluster_refuses_a_foreign_address_in_dev_mode(tmp_path: Path) -> None:
    done = _cli("cluster", "--host", "0.0.0.0", env={"TILEHALL_VAR_DIR": str(tmp_path / "var")})
    assert done.returncode == 2 and "loopback only" in done.stderr, (done.stdout, done.stderr)
    assert not (tmp_path / "var" / "cluster").exists()  # refused before anything started


def test_serve_accepts_a_foreign_address_when_told(database_url: str, redis_url: str, redis_prefix: str,
                                                   tmp_path: Path) -> None:
    from test_durability import ServerProcess, server_env

    env = {**server_env(database_url, redis_url, redis_prefix, tmp_path), "TILEHALL_SERVER__HOST": "0.0.0.0",
           "TILEHALL_SERVER__ALLOW_REMOTE_DEV": "true"}
    server = ServerProcess(env, ROOT)
    try:
        server.wait_url()
        assert request(server.url + "healthz")[0] == 200
    finally:
        server.reap()


def test_node_refuses_a_foreign_address_in_dev_mode(settings: Settings) -> None:
    from transport.node import Node

    foreign = settings.model_copy(update={"server": settings.server.model_copy(update={"host": "0.0.0.0"})})
    with pytest.raises(SettingsError, match="loopback only"):
        asyncio.run(Node(foreign).start())  # refused before anything starts


# ---------------------------------------------------------------- /debug and /admin


PROXY_HEADERS = [{"X-Forwarded-For": "127.0.0.1"}, {"X-Forwarded-For": "203.0.113.9"},
                 {"Forwarded": "for=127.0.0.1"}, {"X-Real-IP": "127.0.0.1"}]


def test_proxied_request_to_debug_without_token_is_refused(start_server: Callable[..., LiveServer]) -> None:
    server = start_server()  # dev mode, no admin token, on loopback
    assert request(server.url + "/debug/actors")[0] == 200  # a direct loopback client
    for headers in PROXY_HEADERS:
        status, _, body = request(server.url + "/debug/actors", headers=headers)
        assert status == 403 and "proxy" in json.loads(body)["message"], (headers, body)
        status, _, body = request(server.url + "/admin/drain", "POST", headers, b"")
        assert status == 403, (headers, body)
    assert not server.node.draining  # the refused drains did nothing


def _production(start_server: Callable[..., LiveServer]) -> LiveServer:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return start_server(mode="production", admin_token=ADMIN, auth={"public_key_pem": pem})


def test_production_on_loopback_needs_the_admin_token(start_server: Callable[..., LiveServer]) -> None:
    server = _production(start_server)
    assert request(server.url + "/debug/actors")[0] == 401
    assert request(server.url + "/debug/actors", headers={"Authorization": "Bearer wrong"})[0] == 401
    good = {"Authorization": f"Bearer {ADMIN}"}
    assert request(server.url + "/debug/actors", headers=good)[0] == 200
    assert request(server.url + "/debug/actors", headers={**good, "X-Forwarded-For": "203.0.113.9"})[0] == 200
    assert request(server.url + "/admin/drain", "POST", body=b"")[0] == 401
    assert not server.node.draining
    assert request(server.url + "/auth/dev-login", "POST", body=b'{"name":"x"}')[0] == 404  # dev only


# ---------------------------------------------------------------- the login rate limit


def test_token_bucket_per_address() -> None:
    now = [0.0]
    limiter = LoginRateLimiter(per_minute=60, burst=3, clock=lambda: now[0])
    assert [limiter.allow("198.51.100.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.allow("198.51.100.1") == pytest.approx(1.0)  # one login a second
    assert limiter.allow("198.51.100.2") == 0.0  # another address has its own bucket
    now[0] = 1.0
    assert limiter.allow("198.51.100.1") == 0.0 and limiter.allow("198.51.100.1") > 0
    # One IPv6 host owns a /64: its addresses share a bucket.
    assert address_key("2001:db8:1:2::5") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("::ffff:198.51.100.1") == "198.51.100.1"


def test_limiter_table_stays_bounded(monkeypatch: Any) -> None:
    import transport.login_limit as login_limit

    monkeypatch.setattr(login_limit, "MAX_ADDRESSES", 10)
    now = [0.0]
    limiter = LoginRateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    for i in range(25):  # a flood of new addresses, nothing refilled
        assert limiter.allow(f"198.51.100.{i}") == 0.0
        assert len(limiter._buckets) <= 10
    assert "198.51.100.24" in limiter._buckets  # the newest stay
    now[0] = 5.0  # all refilled: forgotten at the next scan, whatever their age
    limiter.allow("203.0.113.1")
    limiter.allow("203.0.113.2")
    assert sorted(limiter._buckets) == ["203.0.113.1", "203.0.113.2"]


def test_client_address_behind_trusted_proxies() -> None:
    from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

    def addr(peer: str, trusted: list[str], **headers: str) -> str:
        req = HTTPServerRequest(start_line=RequestStartLine("GET", "/", "HTTP/1.1"), headers=HTTPHeaders(
            {"Host": "t", **{k.replace("_", "-"): v for k, v in headers.items()}}))
        req.remote_ip = peer
        return client_address(req, trusted_networks(trusted))

    assert addr("203.0.113.1", [], X_Forwarded_For="198.51.100.7") == "203.0.113.1"  # not trusted: ignored
    assert addr("127.0.0.1", ["127.0.0.1"], X_Forwarded_For="198.51.100.7") == "198.51.100.7"
    # The client can prepend anything: the nearest untrusted hop counts.
    assert addr("127.0.0.1", ["127.0.0.0/8", "10.0.0.0/8"],
                X_Forwarded_For="1.2.3.4, 198.51.100.7, 10.0.0.2") == "198.51.100.7"
    assert addr("127.0.0.1", ["127.0.0.1"], X_Real_IP="198.51.100.8") == "198.51.100.8"
    assert addr("127.0.0.1", ["127.0.0.1"]) == "127.0.0.1"


def test_hello_logins_are_rate_limited(start_server: Callable[..., LiveServer]) -> None:
    server = start_server(auth={"login_rate_per_minute": 1, "login_burst": 2})

    async def scenario() -> tuple[int | None, dict[str, Any]]:
        for _ in range(2):
            c = await login(server.ws_url, issue_dev_token(server.settings, new_user()))
            c.close()
        third = await WSClient.connect(server.ws_url)
        await third.send({"type": "hello", "protocol_version": SERVER_VERSION,
                          "token": issue_dev_token(server.settings, new_user())})
        return await closed_with(third)

    code, error = run(scenario())
    assert (code, error["code"]) == (4029, "rate_limited"), error
    assert "try again in" in error["message"]


def test_dev_login_is_rate_limited_with_retry_after(start_server: Callable[..., LiveServer]) -> None:
    server = start_server(auth={"login_rate_per_minute": 1, "login_burst": 2},
                          server={"trusted_proxies": ["127.0.0.1"]})

    def dev_login(**headers: str) -> tuple[int, dict[str, str], bytes]:
        return request(server.url + "/auth/dev-login", "POST", headers, b'{"name":"alice"}')

    assert [dev_login()[0] for _ in range(2)] == [200, 200]
    status, headers, body = dev_login()
    assert status == 429 and int(headers["Retry-After"]) >= 1, (status, headers)
    assert json.loads(body)["error"] == "rate_limited"
    # Behind the trusted proxy each forwarded client has its own bucket; a spoofed header
    # cannot escape its own.
    spoof = {"X-Forwarded-For": "198.51.100.7"}
    assert [dev_login(**spoof)[0] for _ in range(3)] == [200, 200, 429]
    assert dev_login(**{"X-Forwarded-For": "198.51.100.8"})[0] == 200


def test_console_sign_in_is_rate_limited(start_server: Callable[..., LiveServer]) -> None:
    """Guessing the admin token at the console's sign-in costs what guessing a login does."""
    server = start_server(admin_token="s3cret-token", auth={"login_rate_per_minute": 1, "login_burst": 2})

    def sign_in(token: str) -> tuple[int, dict[str, str], bytes]:
        return request(server.url + "/debug/sign-in", "POST",
                       {"Content-Type": "application/x-www-form-urlencoded"}, f"token={token}".encode())

    assert [sign_in("wrong")[0] for _ in range(2)] == [401, 401]
    status, headers, body = sign_in("s3cret-token")  # even the right token waits its turn
    assert status == 429 and int(headers["Retry-After"]) >= 1, (status, headers)
    assert b"too many sign-ins" in body


# ---------------------------------------------------------------- the plain HTTP cap


def _http_get(sock: socket.socket) -> bytes:
    """One keep-alive GET /healthz on ``sock``; the answer's bytes (headers and body)."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    return _read_answer(sock)


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length and (chunk := sock.recv(4096)):
        body += chunk
    return head + b"\r\n\r\n" + body


def test_plain_http_connections_are_capped(start_server: Callable[..., LiveServer]) -> None:
    server = start_server(server={"max_http_connections": 2})
    port = server.node.port
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    try:
        for s in held:  # both are served, and stay open (keep-alive)
            assert _http_get(s).startswith(b"HTTP/1.1 200"), "a connection under the cap"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as third:
            answer = _read_answer(third)
            assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer, answer
            assert third.recv(1) == b""  # and closed
        assert server.node.http_server.refused >= 1
        held.pop().close()  # one leaves: a new connection is served again

        def served() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                return _http_get(s).startswith(b"HTTP/1.1 200")

        wait_until(served, 10, "a connection served once one closed")
    finally:
        for s in held:
            s.close()


def test_websockets_do_not_count_against_the_http_cap(start_server: Callable[..., LiveServer]) -> None:
    server = start_server(server={"max_http_connections": 1})

    async def scenario() -> None:
        sockets = [await WSClient.connect(server.ws_url) for _ in range(3)]  # each upgrade detaches
        try:
            status, _, _ = await asyncio.to_thread(request, server.url + "/healthz")
            assert status == 200
        finally:
            for c in sockets:
                c.close()

    run(scenario())


# ---------------------------------------------------------------- server.shutdown_grace_s


def _stalled_stop(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, grace: float,
                  release_after: float | None) -> tuple[float, int | None, bool]:
    """A player with a move whose commit is blocked (action_event locked), then the node's stop:
    (seconds from the stop to the player's close, the close code, whether the move was acked)."""
    slow = {"lock_timeout_s": 30, "statement_timeout_s": 30, "commit_timeout_s": 30}
    settings = make_settings(database_url, redis_url, redis_prefix, tmp_path, storage=slow,
                             server={"shutdown_grace_s": grace})
    server = LiveServer(settings)
    lock = psycopg.connect(database_url)
    stopper: threading.Thread | None = None
    try:
        async def scenario() -> tuple[float, int | None, bool]:
            nonlocal stopper
            c = await login(server.ws_url, issue_dev_token(settings, new_user()))
            await c.ping()
            lock.execute("LOCK TABLE action_event IN ACCESS EXCLUSIVE MODE")
            seq = await c.move(1, 0)
            await asyncio.sleep(0.3)  # the move reaches the storage actor, which waits for the lock
            assert seq not in c.answers, "the move committed through the lock"
            started = time.monotonic()
            stopper = threading.Thread(target=server.stop, name="stop")
            stopper.start()
            if release_after is not None:
                asyncio.get_running_loop().call_later(release_after, lock.rollback)
            code, _ = await c.wait_closed(60)
            closed = time.monotonic() - started
            lock.rollback()  # let the storage actor finish, so the node can stop
            return closed, code, any(f.get("type") == "ack" and f.get("seq") == seq for f in c.history)

        return run(scenario(), timeout=90)
    finally:
        lock.rollback()
        lock.close()
        if stopper is not None:
            stopper.join(60)
        else:
            server.stop()


def test_shutdown_grace_bounds_the_wait_for_storage(database_url: str, redis_url: str, redis_prefix: str,
                                                    tmp_path: Path) -> None:
    """A commit that cannot finish holds the shutdown for shutdown_grace_s, not longer."""
    closed, code, acked = _stalled_stop(database_url, redis_url, redis_prefix, tmp_path, grace=1.0,
                                        release_after=None)
    assert code == 1001 and not acked
    assert 0.9 <= closed < 4.0, f"closed {closed:.2f} s after the stop began, with a 1 s grace"


def test_shutdown_grace_lets_a_late_commit_be_acked(database_url: str, redis_url: str, redis_prefix: str,
                                                    tmp_path: Path) -> None:
    """Within the grace, a commit that finishes late is still acked before the socket closes."""
    closed, code, acked = _stalled_stop(database_url, redis_url, redis_prefix, tmp_path, grace=20.0,
                                        release_after=1.5)
    assert code == 1001 and acked
    assert 1.4 <= closed < 15.0, closed
