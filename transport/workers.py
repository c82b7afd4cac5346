"""``tilehall serve --workers N``: every core of a host, one command.

One Python process is held near one core by its GIL, so a host runs N worker processes that
form a cluster on the shared PostgreSQL and Redis (DESIGN section 8: leases, zone events over
pub/sub, resume on any node). This supervisor:

- reserves ``server.host:server.port`` (bound with ``SO_REUSEPORT``, never listening, so it
  takes no connection; it only fixes the port when 0 was asked and keeps it for restarts);
- starts the embedded PostgreSQL and Redis once when no URLs are configured, and migrates once;
- starts worker *i* as ``tilehall serve --worker-index i``: it listens on the shared port with
  ``SO_REUSEPORT`` (the kernel spreads new connections over the workers) and alone on its own
  ops port (``server.worker_ops_port + i - 1``, default ``server.port + i``), its node id is
  ``<host>-w<i>-<random>``;
- prints ``tilehall is running`` once every worker's ``/readyz`` (on its own port) says 200;
- restarts a worker that exits (after 1 s, doubling up to 30 s while it keeps dying within
  10 s of its start), logged with the running count of restarts;
- forwards SIGTERM (each worker drains: its players are parked and closed with 1012, so they
  resume elsewhere or on the restarted host) or SIGINT (each stops) and exits when all have:
  0 when every worker exited cleanly.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from config.settings import ServerSettings, Settings
from transport.cluster_cmd import http_status
from transport.worker_role import WorkerRole

log = logging.getLogger("tilehall.workers")

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0  # a drain flushes and parks every session; then SIGKILL
FIRST_BACKOFF_S, MAX_BACKOFF_S, STABLE_AFTER_S = 1.0, 30.0, 10.0


class WorkersError(Exception):
    """The workers cannot start (port in use, a worker that never becomes ready)."""


def ops_ports(server: ServerSettings, port: int, count: int) -> list[int]:
    """Each worker's own port, in order: ``worker_ops_port + i - 1``, or ``port + i`` when 0."""
    base = server.worker_ops_port or port + 1
    return [base + i for i in range(count)]


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with ``SO_REUSEPORT`` and not listening: it takes no
    connection (only listening sockets do), fixes the port when ``port`` is 0, and keeps it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host or "0.0.0.0", port))
    except OSError as exc:
        sock.close()
        raise WorkersError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def check_free(host: str, ports: list[int]) -> None:
    """:class:`WorkersError` naming the first worker ops port something already listens on."""
    for i, port in enumerate(ports, 1):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Tornado binds it
            try:
                s.bind((host or "0.0.0.0", port))
            except OSError as exc:
                raise WorkersError(
                    f"port {port} (worker w{i}'s own port) is not free: {exc.strerror or exc};"
                    " set server.worker_ops_port to a free range") from exc


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the worker gets SIGTERM (and drains) if the supervisor dies without stopping it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class WorkerProcess:
    """One ``tilehall serve --worker-index i`` child (same role, ports and name after a restart;
    a new node id each start)."""

    def __init__(self, role: WorkerRole, host: str, env: dict[str, str], config: str | None) -> None:
        self.role = role
        self.host = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)
        self.env = env
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.started_at = 0.0
        self.ready = False
        self.backoff_s = FIRST_BACKOFF_S
        self.restart_due: float | None = None

    @property
    def ops_url(self) -> str:
        """The worker's own HTTP base URL (its ops port)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.role.ops_port}"

    def start(self) -> None:
        """Start the process in a session of its own (a terminal's Ctrl-C reaches only the
        supervisor, which forwards it); output goes where the supervisor's goes."""
        argv = [sys.executable, "-m", "transport.cli"]
        if self.config:
            argv += ["--config", self.config]
        argv += ["serve", "--worker-index", str(self.role.index), "--worker-ops-port", str(self.role.ops_port)]
        self.proc = subprocess.Popen(argv, env=self.env, start_new_session=True,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        self.starts += 1
        self.started_at = time.monotonic()
        self.ready = False
        log.info("worker %s started (pid %d, start %d)", self.role.name, self.proc.pid, self.starts,
                 extra={"worker": self.role.name, "pid": self.proc.pid})

    def alive(self) -> bool:
        """The process runs."""
        return self.proc is not None and self.proc.poll() is None

    def poll_ready(self) -> bool:
        """True once its ``/readyz`` answered 200 (asked until then)."""
        if not self.ready and self.alive():
            self.ready = http_status(self.ops_url + "/readyz", timeout=1.0) == 200
        return self.ready

    def signal(self, sig: int) -> None:
        """Send ``sig`` if the process runs."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """The exit code, SIGKILL after ``timeout`` (None if never started)."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("worker %s did not exit within %g s; SIGKILL", self.role.name, timeout)
            self.proc.kill()
            self.proc.wait(10)
            return self.proc.returncode if self.proc.returncode != 0 else -signal.SIGKILL


class Supervisor:
    """The workers of one host and the loop that keeps them running."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        self.workers = workers
        self.restarts = 0
        self.stop_signal: int | None = None
        self.stopped = threading.Event()

    def request_stop(self, sig: int) -> None:
        """A signal handler: remember the first SIGTERM/SIGINT; the loop forwards it."""
        if self.stop_signal is None:
            self.stop_signal = sig
        self.stopped.set()

    def start_all(self, timeout: float = READY_TIMEOUT_S) -> bool:
        """Start every worker and wait until each is ready; False if a stop signal came first."""
        for w in self.workers:
            w.start()
        deadline = time.monotonic() + timeout
        while not all(w.poll_ready() for w in self.workers):
            if self.stopped.wait(0.1):
                return False
            for w in self.workers:
                if not w.alive():
                    code = w.proc.returncode if w.proc else None
                    raise WorkersError(f"worker {w.role.name} exited ({code}) before it was ready")
            if time.monotonic() > deadline:
                slow = [w.role.name for w in self.workers if not w.ready]
                raise WorkersError(f"workers {', '.join(slow)} not ready within {timeout:g} s")
        return True

    def supervise(self) -> None:
        """Until a stop signal: restart a worker that exited, with backoff."""
        while not self.stopped.wait(0.2):
            now = time.monotonic()
            for w in self.workers:
                if w.alive():
                    if not w.ready and w.poll_ready() and w.starts > 1:
                        log.info("worker %s ready again", w.role.name, extra={"worker": w.role.name})
                    if now - w.started_at > STABLE_AFTER_S:
                        w.backoff_s = FIRST_BACKOFF_S
                    continue
                if w.restart_due is None:
                    self.restarts += 1
                    w.restart_due = now + w.backoff_s
                    code = w.proc.returncode if w.proc else None
                    log.warning("worker %s exited (%s); restarting in %g s (restart %d of this supervisor)",
                                w.role.name, code, w.backoff_s, self.restarts,
                                extra={"worker": w.role.name, "exit_code": code, "restarts": self.restarts})
                    w.backoff_s = min(MAX_BACKOFF_S, w.backoff_s * 2)
                elif now >= w.restart_due:
                    w.restart_due = None
                    w.start()

    def stop_all(self, sig: int, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Forward ``sig`` to every worker at once, wait for each; True when all exited 0."""
        for w in self.workers:
            w.signal(sig)
        codes = {w.role.name: w.wait(timeout) for w in self.workers}
        log.info("workers stopped: %s; %d restarts", codes, self.restarts)
        return all(c in (0, None) for c in codes.values())


def serve_workers(settings: Settings, config_path: str | None) -> int:
    """Run ``server.workers`` worker processes on one port until SIGTERM or SIGINT."""
    from storage.embedded import start_missing
    from storage.postgres import migrate

    s = settings.server
    count = s.worker_count()
    try:
        reserved = reserve_port(s.host, s.port)
    except WorkersError as exc:
        print(f"tilehall serve: {exc}", file=sys.stderr)
        return 1
    port = reserved.getsockname()[1]
    roles = [WorkerRole(i, p) for i, p in enumerate(ops_ports(s, port, count), 1)]
    supervisor = Supervisor([])
    services = None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:  # from here on a signal stops the start too, and nothing is left behind
        signal.signal(sig, lambda sig, _frame: supervisor.request_stop(sig))
    try:
        check_free(s.host, [r.ops_port for r in roles])
        services = start_missing(settings.database_url, settings.redis_url, Path(settings.var_dir))
        assert services.database_url and services.redis_url
        applied = migrate.migrate(services.database_url)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        env = {**os.environ, "TILEHALL_DATABASE_URL": services.database_url,
               "TILEHALL_REDIS_URL": services.redis_url, "TILEHALL_SERVER__HOST": s.host,
               "TILEHALL_SERVER__PORT": str(port), "TILEHALL_SERVER__WORKERS": "1"}
        supervisor.workers = [WorkerProcess(r, s.host, env, config_path) for r in roles]
        if not supervisor.stopped.is_set() and supervisor.start_all():
            shown = "127.0.0.1" if s.host in ("", "0.0.0.0", "::") else s.host
            print(f"tilehall is running: open http://{shown}:{port}/ ({count} workers; own ports "
                  f"{roles[0].ops_port}-{roles[-1].ops_port})", flush=True)
            supervisor.supervise()
        log.info("%s: stopping %d workers", signal.Signals(supervisor.stop_signal or signal.SIGTERM).name, count)
        clean = supervisor.stop_all(supervisor.stop_signal or signal.SIGTERM)
        supervisor.workers = []
        return 0 if clean else 1
    except WorkersError as exc:
        print(f"tilehall serve: {exc}", file=sys.stderr)
        return 1
    finally:
        if supervisor.workers:  # an error: no worker outlives the supervisor
            supervisor.stop_all(signal.SIGTERM)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if services is not None:
            services.stop()
        reserved.close()
