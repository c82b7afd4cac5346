"""The Redis profile cache: write-through after commits, read-through for
``GET /api/characters/{id}``, the staleness window (by an injected clock, no sleeps), the hit
ratio, and a server that keeps serving when Redis is down."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import redis
from psycopg.types.json import Jsonb
from waiting import poll
from wsclient import WSClient, login

from storage.postgres.characters import PUBLIC_FIELDS
from storage.redis.profile_cache import ProfileCache
from transport.auth import issue_dev_token
from transport.metrics import Metrics

DEAD_REDIS = "redis://127.0.0.1:1/0"


class FakeClock:
    """A settable clock (epoch seconds) for the staleness window."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def get_json(url: str) -> tuple[int, str | None, dict[str, Any]]:
    """(status, X-Tilehall-Source, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers.get("X-Tilehall-Source"), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-Tilehall-Source"), json.loads(exc.read())




def view(character_id: str, x: int, **extra: Any) -> dict[str, Any]:
    return {"character_id": character_id, "display_name": "Cached", "x": x, "y": 3, "health": 90,
            "max_health": 100, **extra}


@pytest.fixture
def client(redis_url: str) -> Any:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def cache_prefix(redis_prefix: str) -> str:
    return f"{redis_prefix}{uuid.uuid4().hex[:6]}:"


def test_staleness_window_by_the_injected_clock(client: Any, cache_prefix: str) -> None:
    clock, metrics = FakeClock(), Metrics()
    cache = ProfileCache(client, cache_prefix, staleness_ms=100, clock=clock, metrics=metrics)
    cid = str(uuid.uuid4())
    calls: list[str] = []

    def source(character_id: str) -> dict[str, Any]:
        calls.append(character_id)
        return view(character_id, x=7, user_id="secret", inventory=[{"kind": "potion"}])

    assert cache.put_many([view(cid, x=1)])
    start = clock.now
    clock.now = start + 0.099  # 99 ms old: served from the cache, the source is not asked
    got = cache.read(cid, source)
    assert (got.origin, got.view["x"], calls) == ("cache", 1, [])
    clock.now = start + 0.100  # exactly the window: still fresh
    assert cache.read(cid, source).origin == "cache"
    clock.now = start + 0.101  # 101 ms old: refreshed from the source of truth
    got = cache.read(cid, source)
    assert (got.origin, got.view["x"], calls) == ("source", 7, [cid])
    assert set(got.view) == set(PUBLIC_FIELDS)  # never user_id, inventory or stats
    # ... and the cache was refilled, stamped now, with public fields only.
    stored = json.loads(client.get(cache.key(cid)))
    assert stored["cached_at"] == pytest.approx(start + 0.101) and stored["view"]["x"] == 7
    assert set(stored["view"]) == set(PUBLIC_FIELDS)
    assert cache.read(cid, source).origin == "cache"
    assert 0 < client.ttl(cache.key(cid)) <= 3600
    # 3 hits, 1 miss.
    assert metrics.cache_hit_ratio._value.get() == pytest.approx(0.75)
    assert metrics.cache_lookups.labels("hit")._value.get() == 3
    assert metrics.cache_lookups.labels("miss")._value.get() == 1


def test_unknown_character_is_not_cached(client: Any, cache_prefix: str) -> None:
    cache = ProfileCache(client, cache_prefix, clock=FakeClock())
    cid = str(uuid.uuid4())
    got = cache.read(cid, lambda _: None)
    assert got.view is None and client.get(cache.key(cid)) is None


def test_write_through_writer_coalesces_and_never_blocks(client: Any, cache_prefix: str) -> None:
    cache = ProfileCache(client, cache_prefix, clock=FakeClock())
    cache.start()
    try:
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        cache.submit([view(a, x=1), None, view(b, x=2), view(a, x=3)])
        poll(lambda: (client.get(cache.key(a)), client.get(cache.key(b))), lambda got: None not in got)
        assert json.loads(client.get(cache.key(a)))["view"]["x"] == 3  # latest view wins
    finally:
        cache.close()


def test_circuit_breaker_bypasses_a_dead_redis(redis_prefix: str) -> None:
    dead = redis.Redis.from_url(DEAD_REDIS, socket_timeout=0.5, socket_connect_timeout=0.5)
    metrics = Metrics()
    cache = ProfileCache(dead, redis_prefix, clock=FakeClock(), metrics=metrics, cooldown_s=0.3)
    cid = str(uuid.uuid4())
    got = cache.read(cid, lambda c: view(c, x=5))
    assert (got.origin, got.view["x"]) == ("source", 5)
    assert not cache.available and cache.errors == 1
    assert metrics.cache_available._value.get() == 0
    # While open, nothing touches Redis: no new errors, reads go straight to the source.
    for _ in range(5):
        assert cache.read(cid, lambda c: view(c, x=6)).view["x"] == 6
        cache.submit([view(cid, x=6)])
        assert not cache.put_many([view(cid, x=6)])
    assert cache.errors == 1
    # After the cooldown one call probes Redis again (and fails again here).
    poll(lambda: cache.available, bool, timeout=2)
    assert cache.get(cid) is None and cache.errors == 2
    dead.close()


# ------------------------------------------------------------------ through a live server


async def _move_somewhere(c: WSClient) -> dict[str, Any]:
    """Step in the first direction that is free; returns the ack."""
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)):
        answer = await c.answer(await c.move(dx, dy))
        if answer["type"] == "ack":
            return answer
        await asyncio.sleep(0.15)  # stay under the move rate limit
    raise AssertionError("no direction was free")


def test_write_through_and_read_through_api(live_server: Any) -> None:
    node = live_server.node
    cache = node.profiles
    rc = redis.Redis.from_url(live_server.settings.redis_url)

    async def play() -> None:
        alice = await login(live_server.ws_url, issue_dev_token(live_server.settings, "cache-alice", name="Alice"))
        cid = alice.welcome["character"]["character_id"]
        ack = await _move_somewhere(alice)
        x, y = ack["state"]["x"], ack["state"]["y"]
        # Write-through: the committed view lands in Redis without anyone reading it.
        entry = poll(lambda: rc.get(cache.key(cid)), lambda raw: raw is not None and json.loads(raw)["view"]["x"] == x)
        assert json.loads(entry)["view"]["y"] == y

        status, _, body = get_json(f"{live_server.url}/api/characters/{cid}")
        assert status == 200
        assert body == {"character_id": cid, "display_name": "Alice", "x": x, "y": y,
                        "health": body["max_health"], "max_health": body["max_health"]}

        # The staleness window on the node's own cache, with its clock injected.
        clock = FakeClock(time.time())
        cache.clock = clock
        cache.put_many([view(cid, x=x + 40)])  # a deliberately wrong position, stamped now
        clock.now += 0.099
        status, origin, body = get_json(f"{live_server.url}/api/characters/{cid}")
        assert (status, origin, body["x"]) == (200, "cache", x + 40)
        clock.now += 0.002  # 101 ms: refreshed from the live actor's committed state
        status, origin, body = get_json(f"{live_server.url}/api/characters/{cid}")
        assert (status, origin, body["x"], body["y"]) == (200, "source", x, y)
        assert json.loads(rc.get(cache.key(cid)))["view"]["x"] == x  # refilled
        alice.close()

    try:
        asyncio.run(play())
    finally:
        rc.close()
    # Three lookups: the first one hit or missed (real clock), then one hit and one miss.
    m = live_server.node.metrics
    hits, misses = (m.cache_lookups.labels(r)._value.get() for r in ("hit", "miss"))
    assert hits + misses == 3 and hits >= 1 and misses >= 1
    metrics = get_text(f"{live_server.url}/metrics")
    assert f"tilehall_cache_hit_ratio {hits / 3}" in metrics


def get_text(url: str) -> str:
    """The body of a GET."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def test_api_reads_postgresql_for_a_character_not_in_play(live_server: Any) -> None:
    cid = str(uuid.uuid4())
    with psycopg.connect(live_server.settings.database_url) as conn:
        conn.execute(
            "INSERT INTO character_profile (character_id, user_id, display_name, position_x, position_y,"
            " health, max_health, inventory_json, stats_json) VALUES (%s, 'cache-offline', 'Offline',"
            " 4, 5, 33, 100, '{\"items\": [{\"kind\": \"potion\"}]}', %s)",
            (cid, Jsonb({"max_health": 100})),
        )
    clock = FakeClock(time.time())
    live_server.node.profiles.clock = clock
    status, origin, body = get_json(f"{live_server.url}/api/characters/{cid}")
    assert (status, origin) == (200, "source")
    assert body == {"character_id": cid, "display_name": "Offline", "x": 4, "y": 5, "health": 33, "max_health": 100}
    # The row changes behind the cache's back: within the window the cache answers ...
    with psycopg.connect(live_server.settings.database_url) as conn:
        conn.execute("UPDATE character_profile SET health = 34 WHERE character_id = %s", (cid,))
    clock.now += 0.05
    assert get_json(f"{live_server.url}/api/characters/{cid}")[1:] == ("cache", body)
    # ... past it, PostgreSQL does.
    clock.now += 0.06
    status, origin, fresh = get_json(f"{live_server.url}/api/characters/{cid}")
    assert (origin, fresh["health"]) == ("source", 34)

    for missing in (str(uuid.uuid4()), "not-a-uuid"):
        status, _, body = get_json(f"{live_server.url}/api/characters/{missing}")
        assert (status, body["error"]) == (404, "not_found")


def test_redis_down_the_server_keeps_serving(start_server: Callable[..., Any]) -> None:
    server = start_server(redis_url=DEAD_REDIS)

    async def play() -> None:
        alice = await login(server.ws_url, issue_dev_token(server.settings, "cache-noredis", name="NoRedis"))
        cid = alice.welcome["character"]["character_id"]
        ack = await _move_somewhere(alice)
        status, origin, body = get_json(f"{server.url}/api/characters/{cid}")
        assert (status, origin) == (200, "source")
        assert (body["x"], body["y"], body["display_name"]) == (ack["state"]["x"], ack["state"]["y"], "NoRedis")
        alice.close()

    asyncio.run(play())
    try:
        urllib.request.urlopen(server.url + "/readyz", timeout=5)
        raise AssertionError("/readyz answered 200 with Redis down")
    except urllib.error.HTTPError as exc:
        assert exc.code == 503
        assert any("redis" in p for p in json.loads(exc.read())["problems"])
    metrics = get_text(server.url + "/metrics")
    assert "tilehall_cache_available 0.0" in metrics
    assert "tilehall_connect_success_total 1.0" in metrics
