"""``tilehall bench``: load the real server over real WebSockets and measure it against two bounds.

Each run:

1. (re)creates the bench database (``tilehall_bench`` on the configured PostgreSQL server),
   migrates it and places the players' characters on the arena map: active players on
   separate 2x2 squares spread over the north of the map, idle ones in a band in the south
   (out of the active players' view), so the fan-out is what the map density gives;
2. starts ``python -m transport.cli serve`` in a separate process (TILEHALL_* env: the bench
   database, map ``arena``, rate limits raised) and samples its RSS, threads and CPU (psutil);
3. logs in ``--idle`` heartbeating players, then ``--players`` active ones, which walk and chat
   in a closed loop (``--window`` unacked actions) or, with ``--rate``, an open loop; after
   ``--warmup`` seconds it measures for ``--duration`` seconds, printing a progress line
   every second;
4. reads the mean StorageActor batch size from the database (rows per distinct
   ``persisted_at``: one commit stamps all its rows with one timestamp) and checks that the
   acked actions are there;
5. measures the bounds with the same client: a bare Tornado WebSocket echo server (separate
   process, same frames, same players and window) and a bare batched COPY of the same rows
   into the same PostgreSQL (one transaction per batch of the measured mean batch size, and
   of ``storage.max_batch``).

Results: a human summary on stdout, the whole report as JSON with ``--output FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg

from bench.client import Player, Stats, heartbeat, login_all, percentile

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "tilehall_bench"
MAP = "arena"
ACTIVE_ROWS = (2, 178)  # active players' squares: y in [2, 178)
IDLE_ROWS = (194, 254)  # idle players: y in [194, 254), beyond view_radius 12 of any active one


# ==================================================================== command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The bench options (see bench/README.md)."""
    p = argparse.ArgumentParser(prog="tilehall bench", description=__doc__.split("\n")[0])
    p.add_argument("--players", type=int, default=200, help="active players (default 200)")
    p.add_argument("--window", type=int, default=4, help="closed loop: unacked actions per player (default 4)")
    p.add_argument("--rate", type=float, default=0.0,
                   help="open loop: actions per second per player (0: closed loop, the default)")
    p.add_argument("--rate-of-saturation", type=float, default=0.0, metavar="F",
                   help="open loop at F x the closed-loop saturation (W=--window, no idle players) "
                        "measured on a fresh server just before, in the same run (e.g. 0.5)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per run (default 20)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring (default 3)")
    p.add_argument("--idle", type=int, default=0, help="extra idle players that only heartbeat")
    p.add_argument("--runs", type=int, default=1, help="repeat the whole run; medians are reported")
    p.add_argument("--nodes", type=int, default=1,
                   help="server processes sharing the database and Redis; players spread round-robin")
    p.add_argument("--workers", type=int, default=1,
                   help="one server started as `serve --workers N` (one port, SO_REUSEPORT); its CPU is "
                   "summed over the supervisor and the workers (default 1: a plain serve)")
    p.add_argument("--runtime", choices=["pooled", "threading"], default="pooled", help="actor runtime")
    p.add_argument("--plain-frames", action="store_true",
                   help="players ask for no protocol features (no events frames, no event in the ack)")
    p.add_argument("--pool-workers", type=int, default=None, help="runtime.pool_workers (default: settings)")
    p.add_argument("--bounds", choices=["both", "echo", "insert", "none"], default="both",
                   help="which bounds to measure after each run (default both)")
    p.add_argument("--bound-duration", type=float, default=8.0, help="seconds per bound (default 8)")
    p.add_argument("--database-url", help="PostgreSQL server to create the bench database on "
                   "(default: TILEHALL_DATABASE_URL / settings; none: embedded)")
    p.add_argument("--redis-url", help="Redis (default: TILEHALL_REDIS_URL / settings; none: embedded)")
    p.add_argument("--database-name", default=BENCH_DB,
                   help=f"the bench database, dropped and recreated each run (default {BENCH_DB})")
    p.add_argument("--server-args", default="-m transport.cli serve",
                   help="what follows the python executable to start the server (experiments, "
                   "profilers); default: %(default)s")
    p.add_argument("--server-root", type=Path, default=ROOT,
                   help="run the server from this checkout (bench.ab: another revision); default this one")
    p.add_argument("--output", help="write the JSON report here")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    if (args.players < 0 or args.idle < 0 or args.window < 1 or args.duration <= 0 or args.runs < 1
            or args.nodes < 1 or args.workers < 1):
        p.error("players/idle must be >= 0, window >= 1, duration > 0, runs >= 1, nodes/workers >= 1")
    if args.workers > 1 and args.nodes > 1:
        p.error("--workers and --nodes > 1 are two ways of running several processes: pick one")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every run completed, 1 otherwise."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _raise_fd_limit()
    bench = Bench(args, list(sys.argv[1:] if argv is None else argv))
    report: dict[str, Any] = {"ok": False}
    try:
        report = bench.run()
    finally:
        bench.close(keep_logs=not report["ok"])
    print(format_summary(report))
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"report written to {args.output}")
    return 0 if report["ok"] else 1


def _raise_fd_limit() -> None:
    """Thousands of sockets: lift the soft file limit to the hard one (the server inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


# ==================================================================== the benchmark


class Bench:
    """One ``tilehall bench`` invocation: servers, runs, bounds, report."""

    def __init__(self, args: argparse.Namespace, argv: list[str]) -> None:
        from config.settings import load_settings
        from storage.embedded import start_missing

        self.args = args
        self.argv = argv
        self.settings = load_settings()
        self.tmp = Path(tempfile.mkdtemp(prefix="tilehall-bench-"))
        db_url = args.database_url or self.settings.database_url
        redis_url = args.redis_url or self.settings.redis_url
        self.services = start_missing(db_url, redis_url, self.tmp / "embedded")
        self.admin_url = self.services.database_url
        self.redis_url = self.services.redis_url
        self.db_url = _with_dbname(self.admin_url, args.database_name)

    def close(self, keep_logs: bool = False) -> None:
        """Stop embedded servers, if any were started; remove the temporary directory (kept,
        with the server logs, when ``keep_logs``)."""
        import shutil

        self.services.stop()
        if keep_logs:
            _say(f"server logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self) -> dict[str, Any]:
        """Every run, then the medians."""
        args = self.args
        runs = []
        ok = True
        for i in range(args.runs):
            _say(f"=== run {i + 1}/{args.runs}: {_describe_load(args)}, runtime {args.runtime}")
            try:
                runs.append(self.run_once(i))
            except Exception as exc:
                ok = False
                _say(f"run {i + 1} failed: {exc!r}")
                runs.append({"run": i + 1, "error": repr(exc)})
        good = [r for r in runs if "error" not in r]
        return {
            "ok": ok and bool(good),
            "command": "tilehall bench " + shlex.join(self.argv),
            "params": {k: v for k, v in vars(args).items() if k not in ("database_url", "redis_url")},
            "machine": self.machine(),
            "runs": runs,
            "median": _medians(good),
        }

    def run_once(self, index: int) -> dict[str, Any]:
        """One run; with ``--rate-of-saturation`` a closed-loop probe first sets its rate."""
        base = self.args
        if not base.rate_of_saturation:
            return asyncio.run(self.one_run(index))
        try:
            self.args = argparse.Namespace(**{**vars(base), "rate": 0.0, "idle": 0, "bounds": "none"})
            _say(f"    saturation probe: closed loop W={base.window}, {base.players} players")
            probe = asyncio.run(self.one_run(index))
            rate = base.rate_of_saturation * probe["acked_per_s"] / base.players
            _say(f"    open loop at {base.rate_of_saturation:g} x {probe['acked_per_s']:,.0f}/s:"
                 f" {rate:.2f} actions/s per player")
            self.args = argparse.Namespace(**{**vars(base), "rate": rate})
            result = asyncio.run(self.one_run(index))
        finally:
            self.args = base
        result["saturation"] = {
            "fraction": base.rate_of_saturation, "rate_per_player": round(rate, 3),
            **{k: probe[k] for k in ("acked_per_s", "p50_ms", "p99_ms", "server_cpu_mean", "cpu_s_per_1000")},
        }
        return result

    def machine(self) -> dict[str, Any]:
        """nproc, CPU model, memory, PostgreSQL version and durability settings."""
        from storage.postgres.admin import server_settings

        cpu = "unknown"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        pg: dict[str, str] = {}
        try:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                pg.update(server_settings(
                    conn, ("server_version", "synchronous_commit", "fsync", "wal_sync_method")))
        except psycopg.Error as exc:
            pg["error"] = str(exc)
        return {
            "nproc": os.cpu_count(),
            "cpu_model": cpu,
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "postgresql": pg,
            "kernel": platform.release(),
            "loadavg": [round(v, 2) for v in os.getloadavg()],
            "git": _git_revision(self.args.server_root),
        }

    # ---------------------------------------------------------------- one run

    async def one_run(self, index: int) -> dict[str, Any]:
        """Seed, serve, load, measure, bounds."""
        args = self.args
        characters = await asyncio.to_thread(self.prepare_database, index)
        active, idle = characters[: args.players], characters[args.players:]
        prefix = f"tilehall-bench:{uuid.uuid4().hex[:8]}:"
        workers = ["--workers", str(args.workers)] if args.workers > 1 else []
        servers = [
            ServerProcess(self.server_env(prefix), self.tmp / f"server-{index + 1}-{n + 1}.log",
                          shlex.split(args.server_args) + workers, cwd=args.server_root)
            for n in range(args.nodes)
        ]
        result: dict[str, Any] = {"run": index + 1, "nodes": args.nodes, "workers": args.workers}
        try:
            ports = [await server.start() for server in servers]
            urls = [f"ws://127.0.0.1:{port}/ws" for port in ports]
            checkpoints = await asyncio.to_thread(self.checkpoints)
            load = await run_load(urls, self.tokens(active), self.tokens(idle), args,
                                  [pid for server in servers for pid in server.pids()], label="server",
                                  quiet=args.quiet)
            result.update(load)
            result["pg_checkpoints_during_run"] = await asyncio.to_thread(self.checkpoints) - checkpoints
            result["storage"] = await asyncio.to_thread(
                self.storage_stats, load["window_start"], load["window_end"])
        finally:
            exits = [await server.stop() for server in servers]
            result["server_exit"] = next((code for code in exits if code != 0), 0)  # the first failure
            self._clean_redis(prefix)
        if args.bounds in ("both", "echo"):
            result["echo"] = await self.echo_bound(active)
        if args.bounds in ("both", "insert"):
            batch = max(1, round(result["storage"].get("mean_batch") or 1))
            result["insert"] = await asyncio.to_thread(self.insert_bound, active, batch)
            result["insert_max_batch"] = await asyncio.to_thread(
                self.insert_bound, active, self.settings.storage.max_batch)
        result["cpu_s_per_1000"] = cpu_s_per_1000(result)
        result["ratios"] = _ratios(result)
        _say(_run_line(result))
        return result

    def server_env(self, prefix: str) -> dict[str, str]:
        """The TILEHALL_* environment of the server process."""
        args = self.args
        env = dict(os.environ)
        env.update({
            "TILEHALL_MODE": "dev",
            "TILEHALL_DATABASE_URL": self.db_url,
            "TILEHALL_REDIS_URL": self.redis_url,
            "TILEHALL_REDIS__KEY_PREFIX": prefix,
            "TILEHALL_VAR_DIR": str(self.tmp / "var"),
            "TILEHALL_SERVER__HOST": "127.0.0.1",
            "TILEHALL_SERVER__PORT": str(_free_port()),
            "TILEHALL_SERVER__MAX_CONNECTIONS": str(max(10000, args.players + args.idle + 100)),
            "TILEHALL_GAME__MAP": MAP,
            "TILEHALL_GAME__MOVES_PER_SECOND": "256",
            "TILEHALL_GAME__CHATS_PER_SECOND": "256",
            "TILEHALL_SESSION__MAX_FRAMES_PER_SECOND": "10000",
            "TILEHALL_LOGGING__LEVEL": "WARNING",
            "TILEHALL_RUNTIME__KIND": args.runtime,
            "TILEHALL_AUTH__DEV_SECRET": self.settings.auth.dev_secret,
            "TILEHALL_AUTH__DEV_ISSUER": self.settings.auth.dev_issuer,
        })
        if _server_knows(args.server_root, "login_rate_per_minute"):  # an older revision (bench.ab) refuses it
            # every simulated player logs in from 127.0.0.1 (through HAProxy, too)
            env["TILEHALL_AUTH__LOGIN_RATE_PER_MINUTE"] = "600000"
            env["TILEHALL_AUTH__LOGIN_BURST"] = "100000"
        if args.pool_workers:
            env["TILEHALL_RUNTIME__POOL_WORKERS"] = str(args.pool_workers)
        if args.workers > 1:
            env["TILEHALL_SERVER__WORKER_OPS_PORT"] = str(_free_ports(args.workers))
        env["PYTHONPATH"] = str(args.server_root) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def tokens(self, characters: list[tuple[str, str]]) -> list[str]:
        """A dev token per (user_id, character_id)."""
        from transport.auth import issue_dev_token

        return [issue_dev_token(self.settings, user, ttl_s=6 * 3600) for user, _ in characters]

    # ---------------------------------------------------------------- database

    def prepare_database(self, index: int) -> list[tuple[str, str]]:
        """A fresh migrated bench database with every character placed; [(user_id, character_id)]."""
        from storage.postgres import migrate
        from storage.postgres.admin import recreate_database
        from storage.postgres.characters import seed_characters

        args = self.args
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            recreate_database(conn, self.args.database_name)
        migrate.migrate(self.db_url)
        positions = place_players(args.players, args.idle, seed=index)
        rows = []
        out = []
        for i, (x, y) in enumerate(positions):
            user = f"bench-{i}" if i < args.players else f"bench-idle-{i - args.players}"
            cid = str(uuid.uuid4())
            rows.append((cid, user, user[:32], x, y, 100, 100, '{"max_health": 100}'))
            out.append((user, cid))
        with psycopg.connect(self.db_url) as conn:
            seed_characters(conn, rows)
        return out

    def checkpoints(self) -> int:
        """PostgreSQL checkpoints so far (others' CREATE/DROP DATABASE force them: noise)."""
        from storage.postgres.admin import checkpoint_count

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            return checkpoint_count(conn)

    def storage_stats(self, start: float, end: float) -> dict[str, Any]:
        """Rows committed in the window, commits (distinct persisted_at) and the mean batch."""
        t0 = dt.datetime.fromtimestamp(start, dt.UTC)
        t1 = dt.datetime.fromtimestamp(end, dt.UTC)
        from storage.postgres.actions import commit_stats

        with psycopg.connect(self.db_url) as conn:
            rows, commits, actions = commit_stats(conn, t0, t1)
        return {
            "rows": rows,
            "action_rows": actions,
            "commits": commits,
            "mean_batch": round(rows / commits, 2) if commits else None,
            "commits_per_s": round(commits / (end - start), 1),
        }

    def insert_bound(self, characters: list[tuple[str, str]], batch: int) -> dict[str, Any]:
        """Bare batched COPY of action_event rows like the run's: rows/s, one commit per batch."""
        from storage.postgres.actions import EventRow, commit_batch

        duration = self.args.bound_duration
        chars = characters or [("bench-0", str(uuid.uuid4()))]
        # action_seq refuses a (character, seq) twice: every call continues the last one's seqs.
        seq = self._bound_seq = getattr(self, "_bound_seq", 10**9)
        rows = 0
        commits = 0
        with psycopg.connect(self.db_url) as conn:
            started = time.perf_counter()
            deadline = started + duration
            while time.perf_counter() < deadline:
                events = []
                for _ in range(batch):
                    seq += 1
                    user, cid = chars[seq % len(chars)]
                    if seq % 4 == 0:
                        kind, payload = "chat", f'{{"text": "hello from bench player {seq % 1000}"}}'
                    else:
                        kind, payload = "move", '{"x": 10, "y": 11, "dx": 1, "dy": 0}'
                    events.append(EventRow(str(uuid.uuid4()), user, cid, seq, kind, payload))
                commit_batch(conn, events, [], dt.datetime.now(dt.UTC))
                self._bound_seq = seq
                rows += batch
                commits += 1
            elapsed = time.perf_counter() - started
        result = {"batch": batch, "rows_per_s": round(rows / elapsed, 1),
                  "commits_per_s": round(commits / elapsed, 1)}
        _say(f"    bare COPY, batch {batch}: {result['rows_per_s']:,.0f} rows/s "
             f"({result['commits_per_s']:,.0f} commits/s)")
        return result

    def _clean_redis(self, prefix: str) -> None:
        try:
            import redis

            client = redis.Redis.from_url(self.redis_url)
            for key in client.scan_iter(match=prefix + "*", count=1000):
                client.delete(key)
            client.close()
        except Exception as exc:  # noqa: BLE001 - cleanup only
            _say(f"    (redis cleanup skipped: {exc})")

    # ---------------------------------------------------------------- the echo bound

    async def echo_bound(self, active: list[tuple[str, str]]) -> dict[str, Any]:
        """The same players, frames and window against a bare Tornado echo server."""
        args = self.args
        with open(self.tmp / "echo.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.echo_server", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
            )
        try:
            line = await asyncio.to_thread(proc.stdout.readline)
            if not line.startswith("ready"):
                raise RuntimeError(f"echo server did not start: {line!r}")
            port = int(line.split()[1])
            sub = argparse.Namespace(**{**vars(args), "duration": args.bound_duration, "idle": 0})
            load = await run_load([f"ws://127.0.0.1:{port}/ws"], self.tokens(active), [], sub, [proc.pid],
                                  label="echo", quiet=args.quiet, echo=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        keep = ("acked_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "server_cpu_mean", "client_cpu_mean",
                "machine_cpu_mean")
        return {**{k: load[k] for k in keep}, "cpu_s_per_1000": cpu_s_per_1000(load)}


# ==================================================================== the server process


class ServerProcess:
    """``python -m transport.cli serve`` in its own process, output in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path, argv: list[str], cwd: Path = ROOT) -> None:
        self.env = env
        self.cwd = cwd
        self.argv = argv
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        """The server's process and its children (``serve --workers``: the workers)."""
        try:
            return [self.pid] + [c.pid for c in psutil.Process(self.pid).children(recursive=True)]
        except psutil.Error:
            return [self.pid]

    async def start(self, timeout: float = 60.0) -> int:
        """Start and wait for 'tilehall is running'; returns the port."""
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, *self.argv], cwd=self.cwd, env=self.env,
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if "tilehall is running" in text:
                return int(self.env["TILEHALL_SERVER__PORT"])
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{text[-2000:]}")
            await asyncio.sleep(0.1)
        raise RuntimeError("server did not start within 60 s")

    async def stop(self) -> int | None:
        """SIGTERM (graceful shutdown), SIGKILL after 30 s; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        self.log.close()
        return self.proc.returncode


# ==================================================================== the load


async def run_load(
    urls: list[str],
    active_tokens: list[str],
    idle_tokens: list[str],
    args: argparse.Namespace,
    server_pids: list[int],
    *,
    label: str,
    quiet: bool = False,
    echo: bool = False,
) -> dict[str, Any]:
    """Log everyone in, load for warmup + duration, and measure; returns the load's numbers."""
    stats = Stats()
    sampler = Sampler([psutil.Process(pid) for pid in server_pids], psutil.Process())
    features = [] if getattr(args, "plain_frames", False) else None  # None: the client's FEATURES
    idle = [Player(i, t, stats, echo=echo, features=features) for i, t in enumerate(idle_tokens)]
    active = [Player(i, t, stats, window=args.window, echo=echo, features=features)
              for i, t in enumerate(active_tokens)]
    tasks: list[asyncio.Task] = []
    t_login = time.monotonic()
    failures: list[str] = []
    progress = asyncio.create_task(_login_progress(stats, idle + active, quiet, label))
    # Heartbeats at the server's default interval (5 s; welcome says it), from the first login on.
    tasks.append(asyncio.create_task(heartbeat(idle + active, stats, 5.0)))
    if idle:
        failures += await login_all(idle, urls)
    failures += await login_all(active, urls)
    progress.cancel()
    login_s = time.monotonic() - t_login
    if failures:
        _say(f"    {len(failures)} logins failed, first: {failures[0]}")
    settle_s = await _settle(stats, sampler, quiet, label)
    after_login = sampler.snapshot()
    live = [p for p in active if p.conn is not None and p.conn.protocol is not None]
    if args.rate > 0:
        tasks += [asyncio.create_task(p.run_open_loop(args.rate)) for p in live]
    else:
        for p in live:
            p.start_closed_loop()
    start = time.monotonic()
    await asyncio.sleep(args.warmup)
    stats.measuring = True
    sampler.reset()
    window_start = time.time()
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < args.duration:
        await asyncio.sleep(min(1.0, args.duration - elapsed))
        sampler.sample()
        acks, lat = stats.take_second()
        if not quiet:
            _say(f"  [{label} {time.monotonic() - start:5.1f}s] {acks:6d} acks/s  "
                 f"p50 {_ms(percentile(lat, 50)):6.1f}  p99 {_ms(percentile(lat, 99)):6.1f} ms  "
                 f"in flight {sum(len(p.sent_at) for p in live):5d}  rejects {sum(stats.rejects.values())}  "
                 f"| srv cpu {sampler.last_cpu:5.0f}% rss {sampler.last_rss / 2**20:6.0f} MiB "
                 f"thr {sampler.last_threads:3d} | client cpu {sampler.last_client_cpu:4.0f}%")
    measured = time.monotonic() - t0
    window_end = time.time()
    stats.measuring = False
    stats.running = False
    in_flight_at_end = sum(len(p.sent_at) for p in live)
    await asyncio.sleep(0.5)  # let in-flight answers land (not counted)
    for t in tasks:
        t.cancel()
    for p in idle + active:
        p.close()
    await asyncio.sleep(0.2)
    lat = stats.latencies
    acked = stats.acked
    return {
        "players": len(active),
        "connected_players": len(live),
        "idle": len(idle),
        "login_failures": len(failures),
        "login_s": round(login_s, 1),
        "settle_s": round(settle_s, 1),
        "measured_s": round(measured, 2),
        "window_start": window_start,
        "window_end": window_end,
        "acked": acked,
        "acked_per_s": round(acked / measured, 1),
        "p50_ms": round(_ms(percentile(lat, 50)), 2),
        "p95_ms": round(_ms(percentile(lat, 95)), 2),
        "p99_ms": round(_ms(percentile(lat, 99)), 2),
        "max_ms": round(_ms(max(lat)) if lat else float("nan"), 2),
        "rejects": dict(stats.rejects),
        "reject_total": sum(stats.rejects.values()),
        "errors": dict(stats.errors),
        "resumes": dict(stats.resumes),  # players resumed after a server close (a drain: 1012)
        "resume_failures": stats.resume_failures,
        "longest_unable_s": round(stats.longest_unable_s, 3),
        "events_received": stats.events,
        "fan_out": round(stats.events / acked, 2) if acked else None,
        "frames_per_action": round(stats.frames / acked, 2) if acked else None,  # frames out of the server
        "in_flight_at_end": in_flight_at_end,
        "server_rss_mib_after_login": round(after_login["rss"] / 2**20, 1),
        "server_threads_after_login": after_login["threads"],
        "server_rss_mib_peak": round(sampler.rss_peak / 2**20, 1),
        "server_threads_max": sampler.threads_max,
        "server_cpu_mean": round(sampler.cpu_mean(), 1),
        # Efficiency: acked actions per second of server CPU (the CPU summed over its processes).
        "acked_per_server_cpu_s": round(acked / measured / (sampler.cpu_mean() / 100), 1)
        if sampler.cpu_mean() > 0 else None,
        "client_cpu_mean": round(sampler.client_cpu_mean(), 1),
        "machine_cpu_mean": round(sampler.system_cpu_mean(), 1),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }


async def _settle(stats: Stats, sampler: Sampler, quiet: bool, label: str, limit: float = 180.0) -> float:
    """Wait until the logins' own traffic (login events to the players nearby) has drained:
    no event frame for a whole second. Returns the seconds waited."""
    t0 = time.monotonic()
    last = -1
    while time.monotonic() - t0 < limit:
        sampler.sample()
        if stats.events_total == last:
            break
        last = stats.events_total
        if not quiet and time.monotonic() - t0 > 0.5:
            _say(f"  [{label} settling {time.monotonic() - t0:5.1f}s] {last} login events received "
                 f"| srv cpu {sampler.last_cpu:5.0f}% rss {sampler.last_rss / 2**20:6.0f} MiB "
                 f"thr {sampler.last_threads:3d}")
        await asyncio.sleep(1.0)
    return time.monotonic() - t0


async def _login_progress(stats: Stats, players: list[Player], quiet: bool, label: str) -> None:
    t0 = time.monotonic()
    while not quiet:
        await asyncio.sleep(1.0)
        done = sum(1 for p in players if p._welcome is not None and p._welcome.done())
        _say(f"  [{label} login {time.monotonic() - t0:5.1f}s] {done}/{len(players)} logged in")


class Sampler:
    """CPU, RSS and threads of the server processes (summed over the nodes) and the client's
    CPU, once per second."""

    def __init__(self, servers: list[psutil.Process], client: psutil.Process) -> None:
        self.servers = servers
        self.client = client
        self.reset()
        self.rss_peak = 0
        self.threads_max = 0
        self.last_cpu = self.last_client_cpu = 0.0
        self.last_rss = self.last_threads = 0

    def reset(self) -> None:
        """Start averaging CPU from now."""
        self.cpus: list[float] = []
        self.client_cpus: list[float] = []
        self.system_cpus: list[float] = []
        try:
            for server in self.servers:
                server.cpu_percent(None)
            self.client.cpu_percent(None)
            psutil.cpu_percent(None)
        except psutil.Error:
            pass

    def sample(self) -> None:
        """One sample."""
        cpu = 0.0
        rss = threads = 0
        try:
            for server in self.servers:
                with server.oneshot():
                    cpu += server.cpu_percent(None)
                    rss += server.memory_info().rss
                    threads += server.num_threads()
            self.last_client_cpu = self.client.cpu_percent(None)
        except psutil.Error:
            return
        self.last_cpu, self.last_rss, self.last_threads = cpu, rss, threads
        self.system_cpus.append(psutil.cpu_percent(None))
        self.cpus.append(self.last_cpu)
        self.client_cpus.append(self.last_client_cpu)
        self.rss_peak = max(self.rss_peak, self.last_rss)
        self.threads_max = max(self.threads_max, self.last_threads)

    def snapshot(self) -> dict[str, int]:
        """The last RSS and thread count."""
        return {"rss": self.last_rss, "threads": self.last_threads}

    def cpu_mean(self) -> float:
        """Mean server CPU (%) since reset."""
        return statistics.fmean(self.cpus) if self.cpus else float("nan")

    def system_cpu_mean(self) -> float:
        """Mean CPU of the whole machine (% of all cores) since reset: others' load shows here."""
        return statistics.fmean(self.system_cpus) if self.system_cpus else float("nan")

    def client_cpu_mean(self) -> float:
        """Mean client CPU (%) since reset."""
        return statistics.fmean(self.client_cpus) if self.client_cpus else float("nan")


# ==================================================================== placement


def place_players(active: int, idle: int, seed: int = 0) -> list[tuple[int, int]]:
    """Positions on the arena: active players on distinct free 2x2 squares (their walk) in the
    north, spread uniformly at random; idle ones on distinct tiles in the southern band."""
    from actors.world_map import load_map

    world = load_map(MAP)
    rng = random.Random(seed)
    squares = [
        (x, y)
        for y in range(ACTIVE_ROWS[0], ACTIVE_ROWS[1] - 1, 2)
        for x in range(2, world.width - 3, 2)
        if all(world.is_walkable(x + dx, y + dy) for dx in (0, 1) for dy in (0, 1))
    ]
    tiles = [
        (x, y)
        for y in range(IDLE_ROWS[0], min(IDLE_ROWS[1], world.height - 1))
        for x in range(1, world.width - 1)
        if world.is_walkable(x, y)
    ]
    if active > len(squares) or idle > len(tiles):
        raise ValueError(f"the arena fits {len(squares)} active and {len(tiles)} idle players")
    return rng.sample(squares, active) + rng.sample(tiles, idle)


# ==================================================================== report


def cpu_s_per_1000(load: dict[str, Any]) -> float | None:
    """Server CPU-seconds per 1,000 acked actions (or echoed frames): the work per action,
    the figure least moved by a noisy neighbour."""
    cpu, rate = load.get("server_cpu_mean"), load.get("acked_per_s")
    if not cpu or not rate or cpu != cpu:
        return None
    return round(cpu / 100.0 / rate * 1000.0, 4)


def _ratios(r: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.get("echo", {}).get("acked_per_s"):
        out["vs_echo"] = round(r["acked_per_s"] / r["echo"]["acked_per_s"], 3)
        path, echo = cpu_s_per_1000(r), cpu_s_per_1000(r["echo"])
        if path and echo:
            # Path cost: CPU per acked action over the echo server's CPU per echoed frame.
            out["path_cost"] = round(path / echo, 2)
    if r.get("insert", {}).get("rows_per_s"):
        out["vs_insert"] = round(r["acked_per_s"] / r["insert"]["rows_per_s"], 3)
    if r.get("insert_max_batch", {}).get("rows_per_s"):
        out["vs_insert_max_batch"] = round(r["acked_per_s"] / r["insert_max_batch"]["rows_per_s"], 3)
    return out


_MEDIAN_KEYS = [
    ("acked_per_s",), ("p50_ms",), ("p95_ms",), ("p99_ms",), ("max_ms",), ("reject_total",),
    ("fan_out",), ("frames_per_action",), ("storage", "mean_batch"), ("storage", "commits_per_s"),
    ("server_rss_mib_peak",), ("server_threads_max",), ("server_rss_mib_after_login",),
    ("server_cpu_mean",), ("acked_per_server_cpu_s",), ("client_cpu_mean",), ("machine_cpu_mean",), ("login_s",),
    ("echo", "acked_per_s"), ("echo", "p50_ms"), ("echo", "p99_ms"),
    ("insert", "batch"), ("insert", "rows_per_s"), ("insert_max_batch", "rows_per_s"),
    ("cpu_s_per_1000",), ("echo", "cpu_s_per_1000"), ("ratios", "path_cost"),
    ("saturation", "acked_per_s"), ("saturation", "rate_per_player"), ("saturation", "p99_ms"),
    ("ratios", "vs_echo"), ("ratios", "vs_insert"), ("ratios", "vs_insert_max_batch"),
]


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in _MEDIAN_KEYS:
        values = []
        for r in runs:
            v: Any = r
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None
            if isinstance(v, (int, float)) and v == v:
                values.append(v)
        if values:
            out[".".join(path)] = round(statistics.median(values), 3)
    return out


def format_summary(report: dict[str, Any]) -> str:
    """The human summary: per-run lines and the medians."""
    m = report["median"]
    mach = report["machine"]
    lines = [
        "",
        f"tilehall bench — {report['command']}",
        f"machine: {mach['nproc']} cpus, {mach['cpu_model']}, PostgreSQL "
        f"{mach['postgresql'].get('server_version', '?')} (synchronous_commit "
        f"{mach['postgresql'].get('synchronous_commit', '?')})",
    ]
    for r in report["runs"]:
        lines.append(_run_line(r))
    if m:
        lines += [
            f"median of {len([r for r in report['runs'] if 'error' not in r])} runs:",
            f"  durable acked actions/s {m.get('acked_per_s', float('nan')):,.0f}   "
            f"ack latency p50 {m.get('p50_ms', float('nan')):.1f} / p95 {m.get('p95_ms', float('nan')):.1f}"
            f" / p99 {m.get('p99_ms', float('nan')):.1f} ms",
            f"  fan-out {m.get('fan_out', float('nan')):.2f} events/action in "
            f"{m.get('frames_per_action', float('nan')):.2f} frames/action   mean batch "
            f"{m.get('storage.mean_batch', float('nan')):.1f} rows/commit   rejects {m.get('reject_total', 0):.0f}",
            f"  efficiency {m.get('acked_per_server_cpu_s', float('nan')):,.0f} acked actions per server "
            f"CPU-second ({report['runs'][0].get('workers', 1)} worker(s))",
            f"  server ({report['runs'][0].get('nodes', 1)} node process(es), summed): RSS peak "
            f"{m.get('server_rss_mib_peak', float('nan')):.0f} MiB, threads max "
            f"{m.get('server_threads_max', float('nan')):.0f}, CPU {m.get('server_cpu_mean', float('nan')):.0f}%;"
            f" client CPU {m.get('client_cpu_mean', float('nan')):.0f}%; whole machine"
            f" {m.get('machine_cpu_mean', float('nan')):.0f}% of {mach['nproc']} cpus",
        ]
        if "saturation.acked_per_s" in m:
            lines.append(f"  closed-loop saturation {m['saturation.acked_per_s']:,.0f}/s (p99 "
                         f"{m.get('saturation.p99_ms', 0):.1f} ms) → open loop at "
                         f"{m.get('saturation.rate_per_player', 0):.2f}/s per player")
        if "echo.acked_per_s" in m:
            lines.append(f"  bare echo {m['echo.acked_per_s']:,.0f} frames/s (p99 {m.get('echo.p99_ms', 0):.1f} ms)"
                         f" → ratio {m.get('ratios.vs_echo', float('nan')):.1%}")
            lines.append(f"  server CPU-s per 1,000 acked {m.get('cpu_s_per_1000', float('nan')):.3f}, echo per"
                         f" 1,000 frames {m.get('echo.cpu_s_per_1000', float('nan')):.3f}"
                         f" → path cost {m.get('ratios.path_cost', float('nan')):.2f}×")
        if "insert.rows_per_s" in m:
            lines.append(f"  bare COPY {m['insert.rows_per_s']:,.0f} rows/s at batch {m.get('insert.batch', 0):.0f}"
                         f" → ratio {m.get('ratios.vs_insert', float('nan')):.1%};  at max batch "
                         f"{m.get('insert_max_batch.rows_per_s', float('nan')):,.0f} rows/s → "
                         f"{m.get('ratios.vs_insert_max_batch', float('nan')):.1%}")
    return "\n".join(lines)


def _run_line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"run {r['run']}: FAILED {r['error']}"
    s = r.get("storage", {})
    line = (f"run {r['run']}: {r['acked_per_s']:,.0f} acked/s, p50 {r['p50_ms']:.1f} p95 {r['p95_ms']:.1f} "
            f"p99 {r['p99_ms']:.1f} ms, rejects {r['rejects'] or 0}, fan-out {r['fan_out']} "
            f"in {r.get('frames_per_action')} frames, "
            f"batch {s.get('mean_batch')}, server {r['server_rss_mib_peak']:.0f} MiB "
            f"{r['server_threads_max']} threads {r['server_cpu_mean']:.0f}% cpu "
            f"({r.get('acked_per_server_cpu_s') or float('nan'):,.0f} acked/cpu-s), machine "
            f"{r['machine_cpu_mean']:.0f}% busy, {r.get('pg_checkpoints_during_run', '?')} checkpoints")
    if "echo" in r:
        line += f"; echo {r['echo']['acked_per_s']:,.0f}/s"
    if "insert" in r:
        line += f"; COPY {r['insert']['rows_per_s']:,.0f} rows/s"
    if r.get("ratios"):
        line += "; ratios " + ", ".join(
            f"{k} {v:.2f}×" if k == "path_cost" else f"{k} {v:.1%}" for k, v in r["ratios"].items())
    return line


# ==================================================================== helpers


def _describe_load(args: argparse.Namespace) -> str:
    loop = f"open loop {args.rate:g}/s each" if args.rate > 0 else f"closed loop W={args.window}"
    if args.rate_of_saturation:
        loop = f"open loop at {args.rate_of_saturation:g} x closed-loop (W={args.window}) saturation"
    idle = f" + {args.idle} idle" if args.idle else ""
    return f"{args.players} players, {loop}{idle}, {args.duration:g} s"


def _git_revision(root: Path = ROOT) -> str:
    """The commit the server code came from (``+dirty`` when the tree has changes)."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "") if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _server_knows(root: Path, setting: str) -> bool:
    """Whether the server checkout at ``root`` has ``setting`` (its settings refuse unknown
    ones, so an A/B run against an older revision must not pass newer ones)."""
    try:
        return f" {setting}:" in (root / "config" / "settings.py").read_text(encoding="utf-8")
    except OSError:
        return True


def _with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_ports(n: int) -> int:
    """A port p with p .. p + n - 1 all free now (``serve --workers``: each worker's own port),
    below the ephemeral range, so no outgoing connection takes one before the workers bind."""
    range_file = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(range_file.read_text().split()[0]) if range_file.exists() else 32768
    for _ in range(200):
        base = random.randrange(max(1024, low - 12000), low - n)
        try:
            for port in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {n} consecutive free ports")


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _say(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
