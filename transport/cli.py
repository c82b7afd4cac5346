"""The ``tilehall`` command: serve, drain, token, db, retention, bench.

Exit codes: 0 success, 1 the operation failed, 2 bad settings or usage (one line, no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable

from config.settings import Settings, SettingsError, load_settings

log = logging.getLogger("tilehall")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = _parser()
    argv, bench_args = _split_bench(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(argv)
    if bench_args is not None:
        args.bench_args = bench_args
    try:
        settings = _with_listen_address(load_settings(args.config), args)
    except SettingsError as exc:
        print(f"tilehall: {exc}", file=sys.stderr)
        return 2
    from transport.logs import configure_logging

    configure_logging(settings)
    try:
        return args.func(settings, args)
    except KeyboardInterrupt:
        return 130
    except _UsageError as exc:
        print(f"tilehall: {exc}", file=sys.stderr)
        return 2
    except _OPERATIONAL_ERRORS as exc:
        # What an operator can act on (database down, archive unwritable), in one line.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"tilehall {args.command}: failed: {first}", file=sys.stderr)
        return 1


class _UsageError(Exception):
    pass


def _operational_errors() -> tuple[type[BaseException], ...]:
    import psycopg
    import psycopg_pool

    from storage.postgres.db import UnsafeDurability
    from storage.postgres.retention import RetentionError

    return (psycopg.Error, psycopg_pool.PoolTimeout, OSError, RetentionError, UnsafeDurability)


_OPERATIONAL_ERRORS = _operational_errors()


def _split_bench(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``tilehall [--config F] bench ARGS...``: ARGS go to the benchmark untouched (argparse's
    REMAINDER refuses a first argument that looks like an option, such as ``--players``)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] == "--config" else 1
    if i < len(argv) and argv[i] == "bench":
        return argv[: i + 1], argv[i + 1:]
    return argv, None


def _with_listen_address(settings: Settings, args: argparse.Namespace) -> Settings:
    """``serve --host/--port/--workers/--allow-remote-dev`` over every other source of settings."""
    update = {k: v for k in ("host", "port", "workers") if (v := getattr(args, k, None)) is not None}
    if getattr(args, "allow_remote_dev", False):
        update["allow_remote_dev"] = True
    if not update:
        return settings
    if not 0 <= update.get("port", 0) <= 65535:
        raise SettingsError(f"invalid settings: --port {update['port']} is not a TCP port")
    return settings.model_copy(update={"server": settings.server.model_copy(update=update)})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tilehall", description="tilehall multiplayer tile-world server")
    p.add_argument("--config", help="a TOML settings file (over config/default.toml)")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--allow-remote-dev", action="store_true",
                       help="let dev mode listen on a non-loopback address (anyone reaching it can log in as anyone)")
    serve.add_argument("--workers", type=_worker_count, metavar="N|auto",
                       help="worker processes sharing the port (SO_REUSEPORT), supervised; auto: one per CPU")
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    serve.add_argument("--worker-ops-port", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="print a dev-mode JWT for USER")
    token.add_argument("user")
    token.add_argument("--name", help="display name (default: USER)")
    token.add_argument("--ttl", type=int, help="lifetime in seconds")
    token.set_defaults(func=cmd_token)

    dbp = sub.add_parser("db", help="schema migrations")
    dbp.add_argument("action", choices=["migrate", "status"])
    dbp.set_defaults(func=cmd_db)

    ret = sub.add_parser("retention", help="archive and drop action_event partitions past retention")
    ret.add_argument("action", choices=["run"])
    ret.add_argument("--dry-run", action="store_true", help="say what would be archived, change nothing")
    ret.set_defaults(func=cmd_retention)

    drain = sub.add_parser("drain", help="move a node's players to the other nodes, then stop it")
    drain.add_argument("--url", default="http://127.0.0.1:8888", help="the node (default: %(default)s)")
    drain.add_argument("--admin-token", help="the node's admin token (default: the settings' admin_token)")
    drain.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the drain")
    drain.set_defaults(func=cmd_drain)

    bench = sub.add_parser("bench", help="run the load benchmark (see bench/README.md)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)
    nemesis = sub.add_parser("nemesis", prefix_chars="+", add_help=False,
                             help="fault-injection run with a checker (see docs/nemesis.md)")
    nemesis.add_argument("nemesis_args", nargs="*")
    nemesis.set_defaults(func=cmd_nemesis)
    from transport.cluster_cmd import add_parser as add_cluster_parser

    add_cluster_parser(sub)
    return p


def _worker_count(text: str) -> int | str:
    """``--workers``: a count from 1 to 1024, or ``auto``."""
    if text == "auto":
        return text
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError("must be a count from 1 to 1024, or auto")
    return int(text)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Run the server until SIGTERM (drain, then stop), Ctrl-C (stop) or ``POST /admin/drain``
    (which drained already), then shut down gracefully. With ``server.workers`` above 1: the
    supervisor of that many worker processes (:mod:`transport.workers`)."""
    from config.listen_guard import remote_dev_refusal
    from transport.node import Node
    from transport.worker_role import WorkerRole

    if refusal := remote_dev_refusal(settings):
        raise _UsageError(refusal)
    role = None
    if getattr(args, "worker_index", None) is not None:
        role = WorkerRole(args.worker_index, args.worker_ops_port or 0)
    elif settings.server.worker_count() > 1:
        from transport.workers import serve_workers

        return serve_workers(settings, args.config)

    async def run() -> None:
        node = Node(settings, role)
        interrupted, terminated = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
        loop.add_signal_handler(signal.SIGTERM, terminated.set)
        try:
            await node.start()
            if role is None:
                print(f"tilehall is running: open {node.url}", flush=True)
            else:
                log.info("worker %s is running: node %s, own port %d", role.name, node.node_id, role.ops_port)
            waits = [asyncio.ensure_future(e.wait()) for e in (interrupted, terminated, node.stop_requested)]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            if terminated.is_set():  # SIGTERM: move the players to another node first
                log.info("SIGTERM: draining")
                await node.drain()
            log.info("shutting down")
        finally:
            await node.stop()

    asyncio.run(run())
    return 0


def cmd_drain(settings: Settings, args: argparse.Namespace) -> int:
    """``POST <url>/admin/drain`` and print the node's answer; 1 when it refused or failed."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(args.url.rstrip("/") + "/admin/drain", data=b"", method="POST")
    token = args.admin_token or settings.admin_token
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            print(response.read().decode("utf-8", "replace"), flush=True)
            return 0
    except urllib.error.HTTPError as exc:
        print(f"tilehall drain: {exc.code} {exc.read().decode('utf-8', 'replace')}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(f"tilehall drain: {args.url} not reachable: {exc}", file=sys.stderr)
    return 1


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    """Print a dev-mode token (dev mode only)."""
    from transport.auth import issue_dev_token

    if settings.mode != "dev":
        raise _UsageError("tokens are issued only in dev mode; production tokens come from your IdP")
    print(issue_dev_token(settings, args.user, name=args.name, ttl_s=args.ttl))
    return 0


def _with_database(settings: Settings, fn: Callable[[str], int]) -> int:
    """Run ``fn(database_url)``, starting the embedded PostgreSQL when none is configured."""
    from pathlib import Path

    from storage.embedded import start_missing

    services = start_missing(settings.database_url, None, Path(settings.var_dir), with_redis=False)
    try:
        return fn(services.database_url)
    finally:
        services.stop()


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    """``db migrate`` applies pending migrations; ``db status`` lists them."""
    from storage.postgres import migrate

    def run(url: str) -> int:
        if args.action == "migrate":
            done = migrate.migrate(url)
            print("applied: " + ", ".join(done) if done else "schema is up to date")
            return 0
        st = migrate.status(url)
        for v in st.applied:
            print(f"applied  {v}")
        for v in st.pending:
            print(f"pending  {v}")
        return 0 if st.up_to_date else 1

    return _with_database(settings, run)


def cmd_retention(settings: Settings, args: argparse.Namespace) -> int:
    """Archive and drop every daily partition older than the retention period."""
    from storage.postgres import retention

    def run(url: str) -> int:
        report = retention.run_retention(url, settings, dry_run=args.dry_run)
        print(report.summary())
        return 0

    return _with_database(settings, run)


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    """Delegate to the benchmark driver, the installed ``bench`` package."""
    # Imported here: the driver is heavy and needs the test extra (psutil); other commands don't.
    from bench.loadgen import main as bench_main

    return bench_main(args.bench_args)


def cmd_nemesis(settings: Settings, args: argparse.Namespace) -> int:
    """Delegate to the fault-injection run in bench/nemesis (its options follow ``nemesis``)."""
    from bench.nemesis import main as nemesis_main

    return nemesis_main(args.nemesis_args)


if __name__ == "__main__":
    sys.exit(main())
