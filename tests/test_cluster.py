"""Zone events across server nodes: two nodes on one PostgreSQL and Redis (as the
``start_server`` fixture starts them) relay their zone's traffic over the Redis channel
``<prefix>zone:<map_id>``, so players on different nodes see, block, strike and lose sight of
each other. A node that goes silent (a "ghost" this test publishes for) loses its characters
after ``cluster.peer_timeout_s``.

Every wait is bounded: a frame with a timeout, or a poll of the zone's ``/debug/actors`` detail.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg
import redis
import redis.asyncio
from nodes import LiveServer
from waiting import poll, wait_until
from wsclient import Frame, Predicate, WSClient, login

from actors.world_map import load_map
from storage.postgres.characters import public_view
from transport.auth import issue_dev_token

GAME = {"view_radius": 64}  # the whole 40x30 default map is in everyone's view
# Rosters too rare to matter: what these tests see travelled as enter, leave, event and effect.
QUIET = {"roster_interval_s": 30.0, "peer_timeout_s": 60.0}
STEPS = ((1, 0), (-1, 0), (0, 1), (0, -1))
Tile = tuple[int, int]


# ------------------------------------------------------------------ helpers


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
    """Run one async scenario in the test thread (each server has its own IOLoop thread)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def two_nodes(start_server: Callable[..., LiveServer]) -> tuple[LiveServer, LiveServer]:
    """Nodes A and B of one cluster (same PostgreSQL, Redis and key prefix), once each has heard
    the other: a node tells enter/leave/events only to peers it knows, and with QUIET rosters a
    login racing the handshake would stay unknown to the other node for 30 s."""
    a, b = start_server(game=GAME, cluster=QUIET), start_server(game=GAME, cluster=QUIET)
    for node, other in ((a, b), (b, a)):
        poll(lambda node=node: zone_detail(node), lambda d, other=other: other.node.node_id in d["peers"])
    return a, b


def new_user(who: str) -> str:
    """A user id no other test uses (the database is shared by the whole run)."""
    return f"{who}-{uuid.uuid4().hex[:8]}"


async def log_in(server: LiveServer, user: str) -> WSClient:
    """Log ``user`` in on ``server``; the client's ``welcome`` is set."""
    return await login(server.ws_url, issue_dev_token(server.settings, user))


def character_id(client: WSClient) -> str:
    """The id of the character ``client`` plays."""
    return client.welcome["character"]["character_id"]


def snapshot(client: WSClient) -> dict[str, Frame]:
    """The characters of ``client``'s welcome snapshot, by id."""
    return {c["character_id"]: c for c in client.welcome["world"]["characters"]}


def event_of(cid: str, action_type: str, **payload: Any) -> Predicate:
    """Predicate: an ``event`` of character ``cid`` whose payload has these fields."""
    return lambda f: (
        f.get("type") == "event" and f["character_id"] == cid and f["action_type"] == action_type
        and all(f["payload"].get(k) == v for k, v in payload.items())
    )


def zone_detail(server: LiveServer) -> dict[str, Any]:
    """``describe()`` of the server's ZoneActor, read over ``/debug/actors/{urn}`` (loopback).

    The urn comes from the node: the ``?class=ZoneActor`` listing cannot tell two nodes'
    zones apart, since nodes of one process share the actor registry."""
    url = f"{server.url}/debug/actors/{server.node.zone.actor_urn}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())["detail"]


async def wait_zone(
    server: LiveServer, check: Callable[[dict[str, Any]], bool], timeout: float = 5.0
) -> dict[str, Any]:
    """Poll the server's zone detail until ``check`` holds on it; returns that detail."""
    return await asyncio.to_thread(poll, lambda: zone_detail(server), check, timeout)


async def step(client: WSClient) -> Frame:
    """Take one step in the first of the four directions the server accepts; returns its ack."""
    refusals = []
    for dx, dy in STEPS:
        answer = await client.answer(await client.move(dx, dy))
        if answer["type"] == "ack":
            return answer
        assert answer["code"] in ("blocked", "out_of_bounds", "occupied"), answer
        refusals.append(answer["code"])
    raise AssertionError(f"no step possible: {refusals}")


async def log_out(server: LiveServer, client: WSClient) -> None:
    """Log out and wait until the character is out of play (its last commit landed)."""
    cid = character_id(client)
    await client.send({"type": "logout"})
    await client.wait_closed()
    await asyncio.to_thread(
        wait_until, lambda: cid not in server.node.directory.characters, 5.0, "character out of play")


def place(server: LiveServer, cid: str, tile: Tile) -> None:
    """Set a character's durable position (it must be out of play: login loads it from
    PostgreSQL, the profile cache only serves ``GET /api/characters``)."""
    with psycopg.connect(server.settings.database_url, autocommit=True) as conn:
        cur = conn.execute(
            "UPDATE character_profile SET position_x = %s, position_y = %s WHERE character_id = %s",
            (*tile, cid),
        )
        assert cur.rowcount == 1, cid


def health_in_db(server: LiveServer, cid: str) -> int:
    """A character's durable health."""
    with psycopg.connect(server.settings.database_url, autocommit=True) as conn:
        sql = "SELECT health FROM character_profile WHERE character_id = %s"
        return conn.execute(sql, (cid,)).fetchone()[0]


def neighbours(tile: Tile) -> list[Tile]:
    """The walkable item-free tiles next to ``tile`` (8 directions) on the default map."""
    world = load_map("default")
    x, y = tile
    return [
        (x + dx, y + dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
        if (dx or dy) and world.is_walkable(x + dx, y + dy) and world.item_at(x + dx, y + dy) is None
    ]


def adjacent_tiles() -> tuple[Tile, Tile]:
    """Two walkable item-free tiles side by side on the default map, by a spawn point."""
    world = load_map("default")
    for x, y in world.spawn_points:
        if world.item_at(x, y) is None and (x + 1, y) in neighbours((x, y)):
            return (x, y), (x + 1, y)
    raise AssertionError("no spawn point of the default map has a free east neighbour")


def zone_channel(key_prefix: str) -> str:
    """The Redis channel of the default map's zone."""
    return f"{key_prefix}zone:default"


def heard(sub: redis.client.PubSub, node: str, t: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next message of type ``t`` that ``node`` published on the subscribed channel (alone,
    or within a ``batch`` of what queued together)."""
    pending: list[dict[str, Any]] = sub.__dict__.setdefault("_unbatched", [])
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not pending:
            raw = sub.get_message(timeout=left)
            if raw is None or raw["type"] != "message":
                continue
            envelope = json.loads(raw["data"])
            assert envelope["v"] == 1, envelope
            batch = envelope.get("batch")
            pending.extend([{**m, "v": 1, "node": envelope["node"]} for m in batch] if batch else [envelope])
        message = pending.pop(0)
        if message.get("node") == node and message.get("t") == t:
            return message
    raise AssertionError(f"{node} published no {t!r} message within {timeout:g} s")


async def publish_every(
    client: redis.asyncio.Redis, channel: str, message: dict[str, Any], every_s: float
) -> None:
    """Publish ``message`` on ``channel`` every ``every_s`` seconds until cancelled, as a
    node republishes its roster."""
    text = json.dumps(message)
    while True:
        await client.publish(channel, text)
        await asyncio.sleep(every_s)


# ------------------------------------------------------------------ tests


def test_players_on_two_nodes_see_each_other(start_server: Callable[..., LiveServer]) -> None:
    """Bob on B finds Alice (on A) in his welcome snapshot, sees her step; Alice sees Bob's
    chat and step."""
    a, b = two_nodes(start_server)

    async def scenario() -> None:
        alice = await log_in(a, new_user("alice"))
        detail = await wait_zone(b, lambda d: d["remote_characters"] == 1)
        assert a.node.node_id in detail["peers"], detail
        bob = await log_in(b, new_user("bob"))
        assert snapshot(bob).get(character_id(alice)) == public_view(alice.welcome["character"])

        moved = (await step(alice))["state"]
        seen = await bob.read_until(event_of(character_id(alice), "move", x=moved["x"], y=moved["y"]))
        assert seen["display_name"] == alice.welcome["character"]["display_name"]

        await bob.answer(await bob.chat("hello from B"))
        await alice.read_until(event_of(character_id(bob), "chat", text="hello from B"))
        moved = (await step(bob))["state"]
        await alice.read_until(event_of(character_id(bob), "move", x=moved["x"], y=moved["y"]))
        alice.close()
        bob.close()

    run(scenario())


def test_remote_character_blocks_its_tile_and_can_be_struck(
    start_server: Callable[..., LiveServer],
) -> None:
    """Alice (A) and Bob (B) stand side by side: Bob's step onto Alice's tile is refused as
    occupied; his strike is acked, Alice sees it and her damage, and her durable health drops."""
    a, b = two_nodes(start_server)
    alice_tile, bob_tile = adjacent_tiles()
    alice_user, bob_user = new_user("alice"), new_user("bob")

    async def scenario() -> None:
        for server, other, user, tile in ((a, b, alice_user, alice_tile), (b, a, bob_user, bob_tile)):
            first = await log_in(server, user)  # creates the character
            await wait_zone(other, lambda d: d["remote_characters"] == 1)
            await log_out(server, first)
            await wait_zone(other, lambda d: d["remote_characters"] == 0)
            place(server, character_id(first), tile)

        alice = await log_in(a, alice_user)
        assert (alice.welcome["character"]["x"], alice.welcome["character"]["y"]) == alice_tile
        alice_id, health = character_id(alice), alice.welcome["character"]["health"]
        await wait_zone(b, lambda d: d["remote_characters"] == 1)
        bob = await log_in(b, bob_user)
        assert (bob.welcome["character"]["x"], bob.welcome["character"]["y"]) == bob_tile
        assert snapshot(bob).get(alice_id) == public_view(alice.welcome["character"])
        await wait_zone(a, lambda d: d["remote_characters"] == 1)

        dx, dy = alice_tile[0] - bob_tile[0], alice_tile[1] - bob_tile[1]
        refused = await bob.answer(await bob.move(dx, dy))
        assert (refused["type"], refused.get("code")) == ("reject", "occupied"), refused
        struck = await bob.answer(await bob.ability("strike", target_id=alice_id))
        assert struck["type"] == "ack", struck

        bob_id = character_id(bob)
        strike = await alice.read_until(event_of(bob_id, "ability", name="strike", target_id=alice_id))
        amount = strike["payload"]["amount"]
        assert amount > 0, strike
        await alice.read_until(
            event_of(alice_id, "system", kind="damage", amount=amount, health=health - amount, by=bob_id))
        await bob.read_until(event_of(alice_id, "system", kind="damage", health=health - amount))
        await asyncio.to_thread(poll, lambda: health_in_db(a, alice_id), lambda h: h == health - amount)
        alice.close()
        bob.close()

    run(scenario())


def test_logout_on_one_node_reaches_the_other(start_server: Callable[..., LiveServer]) -> None:
    """Alice logs out on A: Bob on B gets her logout event and B forgets her."""
    a, b = two_nodes(start_server)

    async def scenario() -> None:
        alice = await log_in(a, new_user("alice"))
        bob = await log_in(b, new_user("bob"))
        await wait_zone(b, lambda d: d["remote_characters"] == 1)
        await alice.send({"type": "logout"})
        await bob.read_until(event_of(character_id(alice), "system", kind="logout", reason="logout"))
        await wait_zone(b, lambda d: d["remote_characters"] == 0)
        bob.close()

    run(scenario())


def test_silent_node_loses_its_characters(start_server: Callable[..., LiveServer]) -> None:
    """A ghost node's roster puts its character into B's zone (a fresh login on B sees it);
    while the rosters keep coming it stays; once they stop, B drops it within about
    ``cluster.peer_timeout_s`` and tells Bob it went out of view."""
    b = start_server(game=GAME, cluster={"roster_interval_s": 0.2, "peer_timeout_s": 1.0})
    channel = zone_channel(b.settings.redis.key_prefix)

    async def scenario() -> None:
        bob = await log_in(b, new_user("bob"))
        bob_tile = (bob.welcome["character"]["x"], bob.welcome["character"]["y"])
        ghost_id = str(uuid.uuid4())
        x, y = neighbours(bob_tile)[0]
        ghost = {"character_id": ghost_id, "display_name": "ghost", "x": x, "y": y,
                 "health": 70, "max_health": 100}
        out_of_view = event_of(ghost_id, "system", kind="out_of_view")
        client = redis.asyncio.Redis.from_url(b.settings.redis_url)
        rosters = asyncio.create_task(publish_every(
            client, channel, {"v": 1, "node": "ghost-node", "t": "roster", "members": [ghost]}, 0.2))
        try:
            detail = await wait_zone(b, lambda d: d["remote_characters"] == 1)
            assert "ghost-node" in detail["peers"], detail
            carol = await log_in(b, new_user("carol"))
            assert snapshot(carol).get(ghost_id) == ghost
            await bob.expect_none(out_of_view, 1.5)  # longer than peer_timeout_s: rosters keep it
        finally:
            rosters.cancel()
            await asyncio.gather(rosters, return_exceptions=True)
            await client.aclose()
        await wait_zone(b, lambda d: d["remote_characters"] == 0)
        gone = await bob.read_until(out_of_view)
        assert (gone["payload"]["x"], gone["payload"]["y"]) == (x, y), gone
        bob.close()
        carol.close()

    run(scenario())


def test_zone_messages_follow_the_wire_format(
    start_server: Callable[..., LiveServer], redis_url: str, redis_prefix: str
) -> None:
    """What node A publishes: a roster as it starts, then for Alice enter, her events (the
    frame body as text, her view, where she came ``from``) and leave."""
    client = redis.Redis.from_url(redis_url)
    sub = client.pubsub()
    sub.subscribe(zone_channel(redis_prefix))
    assert sub.get_message(timeout=5)["type"] == "subscribe"  # listening before A starts
    a, b = two_nodes(start_server)
    node = a.node.node_id

    async def scenario() -> None:
        assert (await asyncio.to_thread(heard, sub, node, "roster"))["members"] == []
        await wait_zone(a, lambda d: b.node.node_id in d["peers"])
        alice = await log_in(a, new_user("alice"))
        view = public_view(alice.welcome["character"])
        assert (await asyncio.to_thread(heard, sub, node, "enter"))["view"] == view
        login_event = await asyncio.to_thread(heard, sub, node, "event")
        assert login_event["view"] == view, login_event
        assert "from" in login_event, f"an event message without 'from': keys {sorted(login_event)}"
        body = json.loads(login_event["body"])
        assert body["character_id"] == view["character_id"], body
        assert (body["action_type"], body["payload"]["kind"]) == ("system", "login"), body
        moved = (await step(alice))["state"]
        move_event = await asyncio.to_thread(heard, sub, node, "event")
        assert move_event["view"] == {**view, **moved}, move_event
        assert move_event["from"] == [view["x"], view["y"]], move_event
        assert json.loads(move_event["body"])["payload"]["x"] == moved["x"], move_event
        await log_out(a, alice)
        leave = await asyncio.to_thread(heard, sub, node, "leave")
        assert leave["character_id"] == view["character_id"], leave

    try:
        run(scenario())
    finally:
        sub.close()
        client.close()


def test_a_burst_travels_as_one_batch_in_order(redis_url: str, redis_prefix: str) -> None:
    """What queues while the writer is busy goes as one Redis message (``batch``); the other
    node gets each message in order, with the sender's node id."""
    from storage.relay.zone_relay import ZoneRelay

    client = redis.Redis.from_url(redis_url)
    raw = client.pubsub()
    raw.subscribe(zone_channel(redis_prefix))
    assert raw.get_message(timeout=5)["type"] == "subscribe"
    got: list[dict[str, Any]] = []
    sender = ZoneRelay(client, redis_prefix, "default", "node-a", lambda m: None)
    receiver = ZoneRelay(client, redis_prefix, "default", "node-b", got.append)
    try:
        assert receiver.start()
        for i in range(200):  # queued before the writer runs: one batch
            sender.publish({"t": "item", "item_id": f"i{i}"})
        assert sender.start()
        wait_until(lambda: len(got) >= 200, 5, "200 messages delivered")
        assert [m["item_id"] for m in got] == [f"i{i}" for i in range(200)]
        assert all(m["node"] == "node-a" and m["v"] == 1 for m in got)
        texts = []
        while (m := raw.get_message(timeout=0.5)) is not None:
            if m["type"] == "message":
                texts.append(json.loads(m["data"]))
        assert len(texts) < 200 and texts[0]["node"] == "node-a" and len(texts[0]["batch"]) > 1, len(texts)
    finally:
        sender.close()
        receiver.close()
        raw.close()
        client.close()
