"""The seeded fault schedule and its execution against a :class:`~bench.nemesis.cluster.Cluster`
and its players."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from bench.nemesis.records import Fault

KINDS = ("tcp_drop", "reload", "twin_login", "twin_first_login", "kill_node", "pg_terminate",
         "lock_row", "redis_outage", "crash_actor")
LOCK_S = 20.0
QUIET_S = 20.0  # the last seconds of a run carry no new fault (recovery is checked there)


def schedule(seed: int, duration: float, players: int, nodes: int, kinds: list[str]) -> list[Fault]:
    """A fault every ~5 s from t=5 s to ``duration - QUIET_S`` (at least one), every kind at
    least once when there is room, in random order; the same seed gives the same schedule."""
    rng = random.Random(seed)
    last = max(6.0, duration - QUIET_S)
    count = max(1, int((last - 5.0) / 5.0))
    picks = list(kinds)
    rng.shuffle(picks)
    picks = picks[:count] + [rng.choice(kinds) for _ in range(count - len(picks))]
    times = sorted(rng.uniform(5.0, last) for _ in picks)
    faults = []
    for i, (t, kind) in enumerate(zip(times, picks, strict=True)):
        target, params = f"p{rng.randrange(players)}", {}
        if kind == "tcp_drop":
            params["then"] = rng.choice(("resume", "hello"))
            params["gap_ms"] = rng.choice((0, 1, 2, 3, 5, 8, 13, 21))
        elif kind == "reload":
            params["delay_s"] = round(rng.uniform(0.0, 20.0), 1)
            params["gap_ms"] = rng.choice((0, 1, 2, 3, 5, 8, 13, 21))
        elif kind in ("twin_login", "twin_first_login"):
            params["nodes"] = "two" if nodes > 1 and rng.random() < 0.5 else "one"
            if kind == "twin_first_login":
                target = f"fresh{i}"
        elif kind == "kill_node":
            target, params["down_s"] = f"node{rng.randrange(nodes)}", round(rng.uniform(2.0, 5.0), 1)
        elif kind == "pg_terminate":
            target = "db"
        elif kind == "lock_row":
            params["hold_s"] = LOCK_S
        elif kind == "redis_outage":
            target, params["down_s"] = "redis", round(rng.uniform(3.0, 8.0), 1)
        faults.append(Fault(round(t, 1), kind, target, params))
    return faults


class FaultRunner:
    """Runs each fault at its time; records when its effect ended and what happened."""

    def __init__(self, cluster: Any, players: dict[str, Any], clock: Any) -> None:
        self.cluster = cluster
        self.players = players
        self.clock = clock
        self._busy: dict[str, asyncio.Lock] = {}  # one outage of a process at a time

    async def run(self, faults: list[Fault]) -> None:
        """Start every fault at its time (they may overlap); return when all are over."""
        tasks = []
        for fault in faults:
            delay = fault.t - self.clock.now()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self._one(fault)))
        await asyncio.gather(*tasks)

    async def _one(self, f: Fault) -> None:
        try:
            await getattr(self, "_" + f.kind)(f)
        except Exception as exc:  # noqa: BLE001 - a fault that failed to inject is reported
            f.note = (f.note + f" failed to inject: {exc!r}").strip()
        if f.end is None:
            f.end = self.clock.now()

    def _other(self, node: int) -> int:
        return (node + 1) % len(self.cluster.nodes)

    async def _tcp_drop(self, f: Fault) -> None:
        p = self.players[f.target]
        await p.burst(f.params["gap_ms"] / 1000)
        p.drop(resume=f.params["then"] == "resume")

    async def _reload(self, f: Fault) -> None:
        p = self.players[f.target]
        await p.burst(f.params["gap_ms"] / 1000)
        p.reload(f.params["delay_s"])
        f.end = self.clock.now() + f.params["delay_s"]

    async def _twin_login(self, f: Fault) -> None:
        from bench.nemesis.players import ghost_login

        p = self.players[f.target]
        node = self._other(p.node) if f.params["nodes"] == "two" else p.node
        p.reload(0.0)
        seen = await ghost_login(self.cluster.nodes[node].ws_url, p.token, 2.0, self.clock)
        f.note = f"ghost on node{node} saw: {', '.join(seen)}"

    async def _twin_first_login(self, f: Fault) -> None:
        from bench.nemesis.players import ghost_login

        token = self.cluster.token(f"nemesis-{f.target}")
        nodes = [0, self._other(0)] if f.params["nodes"] == "two" else [0, 0]
        seen = await asyncio.gather(*(
            ghost_login(self.cluster.nodes[n].ws_url, token, 2.0, self.clock) for n in nodes))
        f.note = "; ".join(f"node{n}: {', '.join(s)}" for n, s in zip(nodes, seen, strict=True))

    async def _kill_node(self, f: Fault) -> None:
        node = self.cluster.nodes[int(f.target.removeprefix("node"))]
        async with self._busy.setdefault(f.target, asyncio.Lock()):
            await node.kill()
            await asyncio.sleep(f.params["down_s"])
            await node.start()

    async def _pg_terminate(self, f: Fault) -> None:
        n = await asyncio.to_thread(self.cluster.terminate_backends)
        f.note = f"{n} backends terminated"

    async def _lock_row(self, f: Fault) -> None:
        p = self.players[f.target]
        if p.log.character_id is None:
            f.note = "no character yet"
            return
        f.params["character"] = p.log.character_id
        await asyncio.to_thread(self.cluster.lock_row, p.log.character_id, f.params["hold_s"])

    async def _redis_outage(self, f: Fault) -> None:
        async with self._busy.setdefault(f.target, asyncio.Lock()):
            await asyncio.to_thread(self.cluster.redis.stop)
            await asyncio.sleep(f.params["down_s"])
            await asyncio.to_thread(self.cluster.redis.start)

    async def _crash_actor(self, f: Fault) -> None:
        p = self.players[f.target]
        if p.log.character_id is None:
            f.note = "no character yet"
            return
        status = await asyncio.to_thread(
            self.cluster.nodes[p.node].post, "/debug/faults/crash", {"character_id": p.log.character_id})
        f.note = f"hook answered {status}"
