"""``tilehall nemesis``: the command line, the run, and the report."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench.nemesis.checker import Violation, check
from bench.nemesis.faults import KINDS, FaultRunner, schedule
from bench.nemesis.records import PlayerLog, Sample

DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/postgres"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The nemesis options (see docs/nemesis.md)."""
    p = argparse.ArgumentParser(prog="tilehall nemesis", description="Seeded fault injection against real server processes, then a checker.")
    p.add_argument("--seed", type=int, default=None, help="fault schedule seed (default: a fresh one, printed)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of play (default 60; more if faults run late)")
    p.add_argument("--players", type=int, default=6, help="players (default 6)")
    p.add_argument("--nodes", type=int, choices=(1, 2), default=1, help="server processes (default 1)")
    p.add_argument("--faults", default=",".join(KINDS),
                   help=f"comma-separated fault kinds (default all: {','.join(KINDS)})")
    p.add_argument("--database-url", default=os.environ.get("TILEHALL_TEST_DATABASE_URL", DEFAULT_DB),
                   help="PostgreSQL server to create the run's database on "
                   "(default: TILEHALL_TEST_DATABASE_URL or %(default)s)")
    p.add_argument("--keep-logs", action="store_true", help="keep the server logs (also kept on violations)")
    args = p.parse_args(argv)
    kinds = [k.strip() for k in args.faults.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        p.error(f"unknown fault kinds {unknown}; choose from {', '.join(KINDS)}")
    if args.players < 1 or args.duration < 10:
        p.error("players must be >= 1 and duration >= 10")
    args.kinds = kinds
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 2**31)
    return args


def run(argv: list[str] | None = None) -> int:
    """Parse, run, print the report; 1 on any violation (or a run that broke), 0 otherwise."""
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    report = asyncio.run(nemesis(args))
    print(format_report(report), flush=True)
    return 0 if report["ok"] else 1


async def nemesis(args: argparse.Namespace) -> dict[str, Any]:
    """One run: start the cluster, play with faults, stop, check. The report as a dict."""
    from bench.nemesis.cluster import Cluster
    from bench.nemesis.players import Clock, Player

    faults = schedule(args.seed, args.duration, args.players, args.nodes, args.kinds)
    _say(f"nemesis seed {args.seed}: {args.players} players, {args.nodes} node(s), {args.duration:g} s, "
         f"faults {','.join(args.kinds)}")
    _say("schedule:")
    for f in faults:
        _say("  " + f.describe())
    workdir = Path(tempfile.mkdtemp(prefix="tilehall-nemesis-"))
    cluster = Cluster(args.database_url, args.nodes, workdir)
    report: dict[str, Any] = {"seed": args.seed, "args": args, "faults": faults, "ok": False,
                              "violations": [], "error": None, "logs": str(workdir)}
    players: list[Player] = []
    try:
        await cluster.start()
        _say(f"cluster up: database {cluster.db_name}, redis :{cluster.redis.port}, nodes "
             + ", ".join(f":{n.port}" for n in cluster.nodes))
        clock = Clock()
        urls = [n.ws_url for n in cluster.nodes]
        players = [Player(f"p{i}", f"nemesis-p{i}-{args.seed}", cluster.token(f"nemesis-p{i}-{args.seed}"),
                          i % args.nodes, urls, clock, args.seed * 1000 + i) for i in range(args.players)]
        for f in faults:  # fresh users of twin first logins are unique to the run too
            if f.kind == "twin_first_login":
                f.target = f"{f.target}-{args.seed}"
        stop = asyncio.Event()
        samples: list[Sample] = []
        loops = [asyncio.create_task(p.run(stop)) for p in players]
        poller = asyncio.create_task(_poll_ready(cluster, clock, samples, stop))
        await FaultRunner(cluster, {p.log.name: p for p in players}, clock).run(faults)
        t_clear = max([f.end or f.t for f in faults] + [0.0])
        _say(f"t={clock.now():.1f}s: every fault injected; the last is over at t={t_clear:.1f}s")
        end_at = max(args.duration, t_clear + 12.0)
        while clock.now() < end_at:
            await asyncio.sleep(0.25)
        for p in players:
            p.sending = False
        for _ in range(40):  # in-flight answers land
            if not any(p.pending and p.active for p in players):
                break
            await asyncio.sleep(0.25)
        end = clock.now()
        stop.set()
        await asyncio.gather(*loops, poller)
        for p in players:
            p.finish()
            p.drop()
        db = await asyncio.to_thread(cluster.fetch)
        locked = [(f.params["character"], f.t, f.end or f.t) for f in faults
                  if f.kind == "lock_row" and "character" in f.params]
        violations = check([p.log for p in players], faults, samples, db, t_clear=t_clear, end=end, locked=locked)
        report["server_crashes"] = _actor_crashes(workdir)
        report.update(ok=not violations, violations=violations, players=[p.log for p in players],
                      samples=samples, db=db, t_clear=t_clear, end=end)
    except BaseException as exc:  # noqa: BLE001 - Ctrl-C or a broken run: tear down, report
        report["error"] = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
            report["error"] = "interrupted"
    finally:
        for p in players:
            if p.conn is not None:
                p.conn.close()
        await cluster.close()
        if report["ok"] and not args.keep_logs:
            cluster.remove_workdir()
    return report


async def _poll_ready(cluster: Any, clock: Any, samples: list[Sample], stop: asyncio.Event) -> None:
    """``/readyz`` of every node, every 0.5 s (status 0 while a node is down)."""
    while not stop.is_set():
        for n in cluster.nodes:
            if n.down:
                continue
            t = clock.now()
            status = await asyncio.to_thread(n.readyz, 1.5)
            if not n.down:
                samples.append(Sample(t, n.index, status))
        await asyncio.sleep(0.5)


def _actor_crashes(workdir: Path) -> Counter[str]:
    """Unhandled exceptions per actor class in the nodes' logs (a shared actor among them
    breaks DESIGN rule 8 even when no check above notices)."""
    found: Counter[str] = Counter()
    for log in sorted(workdir.glob("node*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if "Unhandled exception in " in line:
                found["unhandled exception in " + line.split("Unhandled exception in ", 1)[1].split(" ")[0]] += 1
    return found


def format_report(r: dict[str, Any]) -> str:
    """The human report: seed, faults, actions by outcome, readiness, violations."""
    a = r["args"]
    lines = ["", f"tilehall nemesis — seed {r['seed']} ({a.players} players, {a.nodes} node(s), "
             f"{a.duration:g} s); rerun: tilehall nemesis --seed {r['seed']} --duration {a.duration:g} "
             f"--players {a.players} --nodes {a.nodes} --faults {','.join(a.kinds)}"]
    lines.append("faults injected:")
    for f in r["faults"]:
        end = f" → over at {f.end:.1f}s" if f.end is not None else ""
        lines.append(f"  {f.describe()}{end}{(' — ' + f.note) if f.note else ''}")
    if r.get("error"):
        lines.append(f"RUN BROKEN: {r['error']} (server logs in {r['logs']})")
        return "\n".join(lines)
    players: list[PlayerLog] = r["players"]
    sent = sum(1 for p in players for tx in p.transmissions if tx.first)
    resent = sum(1 for p in players for tx in p.transmissions if not tx.first)
    acks = sum(1 for p in players for x in p.answers if x.kind == "ack")
    rejects = Counter(x.code for p in players for x in p.answers if x.kind == "reject")
    frames = Counter()
    for p in players:
        frames.update({k: v for k, v in p.frames.items() if k.split()[0] in ("close", "kicked", "error", "resync_required")})
    lines.append(f"actions: {sent} sent ({resent} resends), {acks} acks, {sum(rejects.values())} rejects"
                 + (" by code: " + ", ".join(f"{k} {v}" for k, v in rejects.most_common()) if rejects else ""))
    lines.append("frames: " + ", ".join(f"{k} {v}" for k, v in sorted(frames.items())))
    lines.append(f"database: {len(r['db']['characters'])} character rows, {len(r['db']['events'])} action_event rows")
    ready = Counter((s.node, s.status) for s in r["samples"])
    lines.append("/readyz samples: " + ", ".join(f"node{n} {st}: {c}" for (n, st), c in sorted(ready.items())))
    lines.append("players (acks, rejects, seconds unable to act): " + ", ".join(
        f"{p.name} {sum(x.kind == 'ack' for x in p.answers)}/{sum(x.kind == 'reject' for x in p.answers)}"
        f"/{p.down_s():.0f}s" for p in players))
    crashes = r.get("server_crashes") or {}
    lines.append("server logs: " + (", ".join(f"{k} {n}" for k, n in sorted(crashes.items()))
                                    if crashes else "no unhandled actor exception"))
    v: list[Violation] = r["violations"]
    counts = Counter(x.check for x in v)
    lines.append("")
    lines.append("violations: " + (", ".join(f"{k} {n}" for k, n in counts.most_common()) if v else "none"))
    for x in v:
        lines.append("  " + x.describe())
    lines.append(f"RESULT: {'PASS' if r['ok'] else 'FAIL'} (seed {r['seed']})"
                 + ("" if r["ok"] else f"; server logs in {r['logs']}"))
    return "\n".join(lines)


def _say(text: str) -> None:
    print(text, flush=True)

