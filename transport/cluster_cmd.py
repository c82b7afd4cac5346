"""``tilehall cluster``: N ``tilehall serve`` nodes behind a real HAProxy, in one command.

PostgreSQL and Redis are the configured ones (``TILEHALL_DATABASE_URL`` / ``TILEHALL_REDIS_URL``)
or, when none is given, the embedded ones under ``var/``, started once and shared by every node.
The schema is migrated once, then each node runs as a child process on a free port (its log in
``var/cluster/<node>.log``) and HAProxy (Debian's ``haproxy``) listens on ``--port`` with the
configuration rendered from ``config/haproxy.cfg.tmpl`` into ``var/cluster/haproxy.cfg``. A
node that exits unexpectedly is restarted. Ctrl-C or SIGTERM stops HAProxy, sends SIGTERM to
every node (each drains: its players are moved with close 1012), then stops the embedded
servers.

The pieces (:func:`render_haproxy_config`, :class:`NodeProcess`, :class:`HAProxyProcess`) are
also what the balancer tests start.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from string import Template

import config
from config.listen_guard import remote_dev_refusal
from config.settings import Settings

log = logging.getLogger("tilehall.cluster")

TEMPLATE = Path(config.__file__).resolve().parent / "haproxy.cfg.tmpl"
NODE_STOP_TIMEOUT_S = 60.0  # a drain flushes and parks every session; then SIGKILL


class ClusterError(Exception):
    """The cluster cannot start (HAProxy missing, a node that never becomes ready)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def find_haproxy() -> str:
    """The ``haproxy`` executable, or :class:`ClusterError` saying how to install it."""
    path = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None)
    if path is None:
        raise ClusterError("haproxy is not installed (Debian/Ubuntu: apt-get install haproxy)")
    return path


def render_haproxy_config(
    servers: list[tuple[str, int]], port: int, stats_port: int, bind_host: str = "127.0.0.1"
) -> str:
    """``config/haproxy.cfg.tmpl`` for ``servers`` (name, port on 127.0.0.1), the frontend on
    ``bind_host:port`` and the stats page on ``bind_host:stats_port``."""
    lines = "\n".join(f"    server {name} 127.0.0.1:{p}" for name, p in servers)
    return Template(TEMPLATE.read_text()).substitute(
        bind_host=bind_host, port=port, stats_port=stats_port, servers=lines)


def http_status(url: str | urllib.request.Request, timeout: float = 1.0) -> int:
    """GET ``url`` (or send the request): its HTTP status, 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


class NodeProcess:
    """One ``tilehall serve`` child on a fixed port (the same port after a restart, so the
    balancer's configuration stays valid)."""

    def __init__(self, name: str, port: int, env: dict[str, str], log_path: Path,
                 config: str | None = None) -> None:
        self.name = name
        self.port = port
        self.env = {**env, "TILEHALL_SERVER__HOST": "127.0.0.1", "TILEHALL_SERVER__PORT": str(port)}
        self.log_path = log_path
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.started_at = 0.0

    @property
    def url(self) -> str:
        """The node's own HTTP base URL (not through the balancer)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process (its own session: a terminal's Ctrl-C reaches only the supervisor,
        which then stops the nodes in order)."""
        argv = [sys.executable, "-m", "transport.cli"]
        if self.config:
            argv += ["--config", self.config]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([*argv, "serve"], env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        """The process is running."""
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until ``/readyz`` answers 200; :class:`ClusterError` if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ClusterError(f"{self.name} exited (see {self.log_path})")
            if http_status(self.url + "/readyz") == 200:
                return
            time.sleep(0.1)
        raise ClusterError(f"{self.name} not ready within {timeout:g} s (see {self.log_path})")

    def signal(self, sig: int) -> None:
        """Send ``sig`` if the process runs."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the exit; its code (None when it did not exit in time)."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = NODE_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (the node drains), SIGKILL after ``timeout``; the exit code."""
        self.signal(signal.SIGTERM)
        code = self.wait(timeout)
        if code is None and self.alive():
            self.signal(signal.SIGKILL)
            code = self.wait(10)
        return code


class HAProxyProcess:
    """HAProxy in the foreground on a rendered configuration file."""

    def __init__(self, config_path: Path, log_path: Path | None = None) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Check the configuration, then run ``haproxy -db -f`` (notices on stderr or the log)."""
        exe = find_haproxy()
        check = subprocess.run([exe, "-c", "-q", "-f", str(self.config_path)],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise ClusterError(f"haproxy refused {self.config_path}: {check.stderr.strip()}")
        out = open(self.log_path, "ab") if self.log_path else None
        try:
            self.proc = subprocess.Popen([exe, "-db", "-f", str(self.config_path)], stdout=out,
                                         stderr=subprocess.STDOUT if out else None,
                                         start_new_session=True)
        finally:
            if out is not None:
                out.close()

    def alive(self) -> bool:
        """HAProxy runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Hard stop (SIGTERM: open tunnels are cut) and wait."""
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def node_env(database_url: str, redis_url: str, var_dir: Path, dev_secret: str | None = None) -> dict[str, str]:
    """The environment of a node: this one's, with the shared URLs, its own var directory, the
    install's dev secret (so a ``tilehall token`` works on every node) and HAProxy's address
    as a trusted proxy."""
    env = {**os.environ, "TILEHALL_DATABASE_URL": database_url, "TILEHALL_REDIS_URL": redis_url,
           "TILEHALL_VAR_DIR": str(var_dir)}
    if dev_secret is not None:
        env["TILEHALL_AUTH__DEV_SECRET"] = dev_secret
    # HAProxy on this host adds X-Forwarded-For: each player is rate-limited as themself.
    env.setdefault("TILEHALL_SERVER__TRUSTED_PROXIES", '["127.0.0.1", "::1"]')
    return env


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``cluster`` subcommand's options."""
    p = sub.add_parser("cluster", help="N nodes behind HAProxy, with the embedded databases if none are set")
    p.add_argument("--nodes", type=int, default=2, help="how many tilehall serve processes (default 2)")
    p.add_argument("--port", type=int, default=8888, help="HAProxy's port (default 8888)")
    p.add_argument("--host", default="127.0.0.1", help="HAProxy's address (default 127.0.0.1)")
    p.add_argument("--allow-remote-dev", action="store_true",
                   help="let a dev-mode cluster listen on a non-loopback address (anyone reaching it can log in as anyone)")
    p.set_defaults(func=cmd_cluster)


def cmd_cluster(settings: Settings, args: argparse.Namespace) -> int:
    """Run the cluster until Ctrl-C or SIGTERM; 1 when it cannot start."""
    from storage.embedded import start_missing
    from storage.postgres import migrate

    if args.nodes < 1:
        print("tilehall cluster: --nodes must be at least 1", file=sys.stderr)
        return 2
    exposed = settings.server.model_copy(
        update={"host": args.host, "allow_remote_dev": args.allow_remote_dev or settings.server.allow_remote_dev})
    if refusal := remote_dev_refusal(settings.model_copy(update={"server": exposed})):
        print(f"tilehall cluster: {refusal}", file=sys.stderr)  # HAProxy would expose the nodes
        return 2
    try:
        find_haproxy()
    except ClusterError as exc:
        print(f"tilehall cluster: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    var = Path(settings.var_dir)
    workdir = var / "cluster"
    services = start_missing(settings.database_url, settings.redis_url, var)
    nodes: list[NodeProcess] = []
    haproxy: HAProxyProcess | None = None
    try:
        assert services.database_url and services.redis_url
        applied = migrate.migrate(services.database_url)
        if applied:
            print("applied: " + ", ".join(applied), flush=True)
        for i in range(1, args.nodes + 1):
            env = node_env(services.database_url, services.redis_url, workdir / f"node{i}", settings.auth.dev_secret)
            nodes.append(NodeProcess(f"node{i}", free_port(), env, workdir / f"node{i}.log", args.config))
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        stats_port = free_port(args.host)
        cfg = workdir / "haproxy.cfg"
        cfg.write_text(render_haproxy_config([(n.name, n.port) for n in nodes], args.port,
                                             stats_port, args.host))
        haproxy = HAProxyProcess(cfg)
        haproxy.start()
        print(f"tilehall cluster is running: open http://{args.host}:{args.port}", flush=True)
        for node in nodes:
            print(f"  {node.name}: {node.url} (log {node.log_path})", flush=True)
        print(f"  HAProxy: config {cfg}, stats http://{args.host}:{stats_port}/stats", flush=True)
        _supervise(nodes, haproxy, stop)
        return 0 if stop.is_set() else 1
    except ClusterError as exc:
        print(f"tilehall cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        print("tilehall cluster: stopping HAProxy, draining the nodes", file=sys.stderr, flush=True)
        if haproxy is not None:
            haproxy.stop()
        for node in nodes:
            node.signal(signal.SIGTERM)  # all drain at once
        for node in nodes:
            node.stop()
        services.stop()


def _supervise(nodes: list[NodeProcess], haproxy: HAProxyProcess, stop: threading.Event) -> None:
    """Until ``stop``: restart a node that exited (after 1 s, doubling up to 30 s while it keeps
    dying within 10 s of its start); return if HAProxy itself exits."""
    backoff = {n.name: 1.0 for n in nodes}
    due: dict[str, float] = {}
    while not stop.wait(0.2):
        if not haproxy.alive():
            print("tilehall cluster: HAProxy exited; stopping", file=sys.stderr, flush=True)
            return
        now = time.monotonic()
        for node in nodes:
            if node.alive():
                if now - node.started_at > 10:
                    backoff[node.name] = 1.0
                continue
            if node.name not in due:
                code = node.proc.returncode if node.proc else None
                due[node.name] = now + backoff[node.name]
                print(f"tilehall cluster: {node.name} exited ({code}); restarting in "
                      f"{backoff[node.name]:g} s", file=sys.stderr, flush=True)
                backoff[node.name] = min(30.0, backoff[node.name] * 2)
            elif now >= due[node.name]:
                del due[node.name]
                node.start()
