"""Where the server's GIL time goes: a summary of a ``py-spy record --gil -f raw`` profile.

    py-spy record -p PID -d 12 -r 200 -f raw -o profile.txt --gil
    python -m bench.profile profile.txt

Each sample is put in one *place* (the first matching rule, top of the stack first: the actor
handler that runs, Tornado's WebSocket read or write path, the IOLoop's other work) and counted
in every *ingredient* its stack contains (JSON, pydantic, Pykka message passing, ...), so the
places add up to 100 % and the ingredients cut across them.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

__all__ = ["summarize", "main"]

_HANDLER = re.compile(r"(\w+)\.(on_[A-Z]\w+)")
# (place, substring of a frame), checked from the innermost frame outwards after the handler.
_PLACES = [
    ("Tornado WebSocket read path", "_receive_frame"),
    ("frame writes", "write_frames"),
    ("frame writes", "SocketConnection._flush"),
    ("frame writes", "write_message"),
    ("Tornado HTTP/IOStream", "iostream.py"),
    ("profile cache writer", "profile_cache"),
    ("zone relay", "zone_relay"),
]
_INGREDIENTS = [
    ("JSON encode/decode", ("json/", "orjson", "msgspec")),
    ("pydantic", ("pydantic",)),
    ("actor message passing (Pykka, runtime, futures)", ("pykka/", "actors/runtime/")),
    ("rules", ("actors/rules/",)),
    ("psycopg", ("psycopg",)),
    ("asyncio/IOLoop machinery", ("asyncio/", "tornado/ioloop.py")),
]


def _place(frames: list[str]) -> str:
    for frame in reversed(frames):
        m = _HANDLER.search(frame)
        if m:
            return f"{m.group(1)}.{m.group(2)}"
    for place, needle in _PLACES:
        if any(needle in f for f in frames):
            return place
    if any("Dispatcher._work" in f for f in frames):
        return "runtime (between turns)"
    if any("run_forever" in f or "_run_once" in f for f in frames):
        return "IOLoop (other callbacks)"
    return "other threads"


def summarize(text: str) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    """(samples, by place, by actor class, by ingredient) of a raw py-spy profile."""
    places: Counter[str] = Counter()
    actors: Counter[str] = Counter()
    ingredients: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        place = _place(frames)
        places[place] += n
        actors[place.split(".")[0] if _HANDLER.fullmatch(place) else place] += n
        for name, needles in _INGREDIENTS:
            if any(needle in f for f in frames for needle in needles):
                ingredients[name] += n
    return total, places, actors, ingredients


def main(argv: list[str] | None = None) -> int:
    """Print the summary tables (markdown) of the profile file given."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.profile PROFILE.txt (py-spy record -f raw --gil)", file=sys.stderr)
        return 2
    total, places, actors, ingredients = summarize(Path(args[0]).read_text())
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    for title, counter, limit in (("by actor / place", actors, 12), ("by handler", places, 15),
                                  ("ingredients (overlap)", ingredients, 10)):
        print(f"\n| {title} | share |\n|---|---|")
        for name, n in counter.most_common(limit):
            print(f"| {name} | {n / total:.0%} |")
    print(f"\n{total} GIL samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
