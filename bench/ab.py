"""A/B runs of two server revisions in the same hour: ``python -m bench.ab BEFORE [AFTER]``.

Each revision's server runs from a detached git worktree of it (``AFTER`` defaults to this
checkout as it is, uncommitted changes included); the load generator, the database seed and the
bounds are this checkout's for both, so only the server differs. The rounds interleave the two
(A B, B A, A B, ...) so a machine that speeds up or slows down over the hour moves both alike,
and the summary prints each side's medians and the after ÷ before ratios.

    python -m bench.ab 8d23bb9 --rounds 3 -- --players 200 --window 4 --duration 15 --warmup 5

Arguments after ``--`` go to every ``tilehall bench`` run (``--runs 1`` and ``--server-root``
are added); ``--before-args`` / ``--after-args`` add arguments to one side only (e.g. a runtime
the old revision does not know).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.loadgen import ROOT

__all__ = ["main"]

# (label, report path, format) of the figures compared; path into a run's JSON report.
FIGURES: list[tuple[str, tuple[str, ...], str]] = [
    ("acked/s", ("acked_per_s",), "{:,.0f}"),
    ("p99 ms", ("p99_ms",), "{:.1f}"),
    ("server CPU-s per 1,000 acked", ("cpu_s_per_1000",), "{:.3f}"),
    ("path cost (× echo)", ("ratios", "path_cost"), "{:.2f}"),
    ("vs echo", ("ratios", "vs_echo"), "{:.1%}"),
    ("fan-out", ("fan_out",), "{:.2f}"),
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``BEFORE [AFTER] [options] -- bench args``."""
    if "--" in argv:
        cut = argv.index("--")
        argv, bench_args = argv[:cut], argv[cut + 1:]
    else:
        bench_args = []
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("before", help="the revision before (any git revision)")
    p.add_argument("after", nargs="?", help="the revision after (default: this checkout as it is)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--before-args", default="", help="extra bench arguments for the before side")
    p.add_argument("--after-args", default="", help="extra bench arguments for the after side")
    p.add_argument("--output", help="write both sides' reports and the summary here (JSON)")
    args = p.parse_args(argv)
    args.bench_args = bench_args
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the rounds; 0 when every run completed."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tmp = Path(tempfile.mkdtemp(prefix="tilehall-ab-"))
    worktrees: list[Path] = []
    try:
        sides = {"before": _checkout(args.before, tmp / "before", worktrees)}
        sides["after"] = _checkout(args.after, tmp / "after", worktrees) if args.after else ROOT
        extra = {"before": shlex.split(args.before_args), "after": shlex.split(args.after_args)}
        runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        ok = True
        for r in range(args.rounds):
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            for side in order:
                out = tmp / f"{side}-{r + 1}.json"
                cmd = [sys.executable, "-m", "transport.cli", "bench", *args.bench_args, "--runs", "1", "--quiet",
                       "--server-root", str(sides[side]), "--output", str(out), *extra[side]]
                print(f"=== round {r + 1}/{args.rounds}: {side} ({_revision(sides[side])})", flush=True)
                done = subprocess.run(cmd, cwd=ROOT)
                if done.returncode != 0 or not out.exists():
                    ok = False
                    print(f"    {side} run failed (exit {done.returncode})", flush=True)
                    continue
                report = json.loads(out.read_text())
                runs[side] += [run for run in report["runs"] if "error" not in run]
        summary = summarize(runs)
        print(format_summary(summary, {s: _revision(p) for s, p in sides.items()}, args))
        if args.output:
            Path(args.output).write_text(json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n")
        return 0 if ok else 1
    finally:
        for wt in worktrees:
            subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=ROOT,
                           capture_output=True)


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Each side's median of each figure, and after ÷ before."""
    out: dict[str, Any] = {}
    for label, path, _ in FIGURES:
        med = {side: _median([_get(run, path) for run in side_runs]) for side, side_runs in runs.items()}
        ratio = med["after"] / med["before"] if med["before"] and med["after"] is not None else None
        out[label] = {**med, "after_over_before": round(ratio, 3) if ratio is not None else None}
    out["runs"] = {side: len(side_runs) for side, side_runs in runs.items()}
    return out


def format_summary(summary: dict[str, Any], revisions: dict[str, str], args: argparse.Namespace) -> str:
    """The table printed at the end."""
    lines = ["", f"A/B, {args.rounds} interleaved rounds, bench {shlex.join(args.bench_args)}",
             f"  before {revisions['before']} ({summary['runs']['before']} runs)   "
             f"after {revisions['after']} ({summary['runs']['after']} runs)   medians:"]
    for label, _, fmt in FIGURES:
        row = summary[label]
        cells = [fmt.format(row[s]) if row[s] is not None else "n/a" for s in ("before", "after")]
        ratio = f"{row['after_over_before']:.2f}×" if row["after_over_before"] is not None else "n/a"
        lines.append(f"  {label:30s} {cells[0]:>10s} → {cells[1]:>10s}   after/before {ratio}")
    return "\n".join(lines)


def _checkout(revision: str, where: Path, worktrees: list[Path]) -> Path:
    subprocess.run(["git", "worktree", "add", "--detach", str(where), revision], cwd=ROOT, check=True,
                   capture_output=True)
    worktrees.append(where)
    return where


def _revision(root: Path) -> str:
    from bench.loadgen import _git_revision

    return _git_revision(root)


def _get(run: dict[str, Any], path: tuple[str, ...]) -> float | None:
    v: Any = run
    for k in path:
        v = v.get(k) if isinstance(v, dict) else None
    return v if isinstance(v, (int, float)) and v == v else None


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return round(statistics.median(got), 4) if got else None


if __name__ == "__main__":
    sys.exit(main())
