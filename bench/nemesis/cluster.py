"""The processes of one nemesis run: a fresh database, the run's own ``redis-server`` (so it
can be stopped and started), and 1 or 2 ``tilehall serve`` nodes that can be SIGKILLed and
restarted on the same port. Everything is torn down by :meth:`Cluster.close`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg

from bench.loadgen import ROOT, ServerProcess, _free_port, _with_dbname
from storage.postgres import admin
from transport.cluster_cmd import http_status

MAP = "arena"
NEMESIS_APP = "tilehall-nemesis"  # application_name of our own connections


class RedisServer:
    """A ``redis-server`` of our own on a fixed port, no persistence."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Its URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait until it answers PING."""
        import redis

        self.stop()  # never two of ours on the port

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(self.url, socket_timeout=0.5).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """SIGKILL it (an outage, not a shutdown) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class Node:
    """One ``tilehall serve`` process on a fixed port; ``start`` again after a kill."""

    def __init__(self, index: int, env: dict[str, str], logdir: Path) -> None:
        self.index = index
        self.env = env
        self.port = int(env["TILEHALL_SERVER__PORT"])
        self.logdir = logdir
        self.starts = 0
        self.server: ServerProcess | None = None
        self.down = True

    @property
    def ws_url(self) -> str:
        """Its WebSocket URL."""
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        """Its HTTP base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start the process and wait until it serves."""
        self.starts += 1
        self.server = ServerProcess(
            self.env, self.logdir / f"node{self.index}-{self.starts}.log", ["-m", "transport.cli", "serve"])
        await self.server.start()
        self.down = False

    async def kill(self) -> None:
        """SIGKILL (no graceful shutdown)."""
        self.down = True
        if self.server is not None and self.server.proc is not None and self.server.proc.poll() is None:
            self.server.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(self.server.proc.wait)
            self.server.log.close()

    async def stop(self) -> None:
        """Graceful stop (SIGTERM, SIGKILL after 30 s)."""
        self.down = True
        if self.server is not None:
            await self.server.stop()

    def post(self, path: str, body: dict, timeout: float = 2.0) -> int:
        """POST JSON (blocking); the HTTP status, 0 when unreachable."""
        req = urllib.request.Request(self.http_url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        return http_status(req, timeout)

    def readyz(self, timeout: float = 2.0) -> int:
        """GET /readyz (blocking); the status, 0 when unreachable."""
        return http_status(self.http_url + "/readyz", timeout)


class Cluster:
    """The run's database, Redis and nodes."""

    def __init__(self, admin_url: str, nodes: int, workdir: Path) -> None:
        from config.settings import load_settings

        self.settings = load_settings()
        self.admin_url = admin_url
        self.db_name = f"tilehall_nemesis_{uuid.uuid4().hex[:10]}"
        self.db_url = _with_dbname(admin_url, self.db_name)
        self.workdir = workdir
        self.redis = RedisServer(_free_port(), workdir)
        self.nodes = [Node(i, self._env(i), workdir) for i in range(nodes)]
        self.db_created = False
        self._locks: list[threading.Event] = []

    def _env(self, index: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "TILEHALL_MODE": "dev",
            "TILEHALL_DATABASE_URL": self.db_url,
            "TILEHALL_REDIS_URL": self.redis.url,
            "TILEHALL_VAR_DIR": str(self.workdir / f"var{index}"),
            "TILEHALL_SERVER__HOST": "127.0.0.1",
            "TILEHALL_SERVER__PORT": str(_free_port()),
            "TILEHALL_GAME__MAP": MAP,
            "TILEHALL_LOGGING__LEVEL": os.environ.get("NEMESIS_LOG_LEVEL", "WARNING"),
            "TILEHALL_DEBUG__FAULT_HOOKS": "true",
            "TILEHALL_AUTH__DEV_SECRET": self.settings.auth.dev_secret,
            "TILEHALL_AUTH__DEV_ISSUER": self.settings.auth.dev_issuer,
            # every simulated player logs in from 127.0.0.1 (through HAProxy, too)
            "TILEHALL_AUTH__LOGIN_RATE_PER_MINUTE": "600000",
            "TILEHALL_AUTH__LOGIN_BURST": "100000",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        })
        return env

    async def start(self) -> None:
        """Database (created and migrated), Redis, then every node."""
        from storage.postgres import migrate

        def create() -> None:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                admin.create_database(conn, self.db_name)
            self.db_created = True
            migrate.migrate(self.db_url)

        await asyncio.to_thread(create)
        await asyncio.to_thread(self.redis.start)
        await asyncio.gather(*(n.start() for n in self.nodes))

    def token(self, user: str) -> str:
        """A dev JWT for ``user`` (valid for the run)."""
        from transport.auth import issue_dev_token

        return issue_dev_token(self.settings, user, ttl_s=6 * 3600)

    # ------------------------------------------------------------ faults on the processes

    def terminate_backends(self) -> int:
        """``pg_terminate_backend`` of the servers' connections to the run's database (not
        ours: a row lock held by the nemesis stays)."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            return admin.terminate_backends(conn, self.db_name, NEMESIS_APP)

    def lock_row(self, character_id: str, hold_s: float) -> None:
        """Hold ``SELECT ... FOR UPDATE`` on the character's row for ``hold_s`` (blocking; the
        lock ends early when the run is torn down)."""
        done = threading.Event()
        self._locks.append(done)
        with psycopg.connect(self.db_url, application_name=NEMESIS_APP) as conn:
            admin.lock_character_row(conn, character_id)
            done.wait(hold_s)
            conn.rollback()

    def fetch(self) -> dict:
        """What the checker needs from the database: the rows and the action log."""
        with psycopg.connect(self.db_url) as conn:
            chars, events = admin.characters_and_log(conn)
        return {
            "characters": [
                {"character_id": c[0], "user_id": c[1], "x": c[2], "y": c[3], "health": c[4],
                 "max_health": c[5], "inventory": [i["item_id"] for i in (c[6] or {}).get("items", [])],
                 "last_action_seq": c[7]} for c in chars],
            "events": [
                {"action_id": e[0], "user_id": e[1], "character_id": e[2], "seq": e[3],
                 "action_type": e[4], "payload": e[5]} for e in events],
        }

    async def close(self) -> None:
        """Stop every node and Redis, release held locks, drop the database."""
        for done in self._locks:
            done.set()
        for n in self.nodes:
            try:
                await n.stop()
            except Exception:  # noqa: BLE001 - teardown goes on
                await n.kill()
        self.redis.stop()
        if self.db_created:
            def drop() -> None:
                with psycopg.connect(self.admin_url, autocommit=True) as conn:
                    admin.drop_database(conn, self.db_name)
            await asyncio.to_thread(drop)

    def remove_workdir(self) -> None:
        """Delete logs and scratch files."""
        shutil.rmtree(self.workdir, ignore_errors=True)
