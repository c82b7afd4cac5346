"""``tilehall nemesis``: real server processes on real PostgreSQL and Redis, seeded players,
a seeded schedule of faults, and a checker of what the database holds against what the
players saw. See docs/nemesis.md."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the nemesis (argv: its options); 1 on any violation, 0 otherwise."""
    from bench.nemesis.cli import run

    return run(argv)
