"""The pooled actor runtime and the actor base classes (actors/runtime/, actors/base.py)."""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass

import pykka
import pytest
from pykka import ActorDeadError, ActorRegistry

from actors.base import (
    DedicatedThreadActor,
    TilehallActor,
    UnknownMessageError,
    configure_runtime,
    find_actor,
    live_actors,
)
from actors.runtime import (
    BlockingInPoolError,
    Dispatcher,
    TilehallFuture,
    ask_async,
    runtime_kind,
    stop_future,
)

WAIT = 10.0  # generous bound for every wait on an expected event


@dataclass(frozen=True)
class Ping:
    n: int = 0


@dataclass(frozen=True)
class Boom:
    pass


@dataclass(frozen=True)
class Block:
    gate: threading.Event
    entered: threading.Event


class Recorder(TilehallActor):
    def __init__(self, log: list | None = None, name: str = "") -> None:
        super().__init__()
        self.got: list[int] = []
        self.log = log
        self.name = name

    def on_Ping(self, msg: Ping) -> int:
        self.got.append(msg.n)
        if self.log is not None:
            self.log.append(self.name)
        return msg.n * 2

    def on_Boom(self, msg: Boom) -> None:
        raise ValueError("boom")

    def on_Block(self, msg: Block) -> None:
        msg.entered.set()
        msg.gate.wait(WAIT)
        if self.log is not None:
            self.log.append(self.name)

    def thread_name(self) -> str:
        return threading.current_thread().name


def restart_pool(workers: int, per_turn: int) -> None:
    Dispatcher.shutdown()
    Dispatcher.start(workers, per_turn)


@pytest.fixture(autouse=True)
def _clean_runtime():
    yield
    ActorRegistry.stop_all(timeout=WAIT)
    if runtime_kind() != "pooled":
        configure_runtime("pooled", 4, 32)
    assert Dispatcher.shutdown(timeout=WAIT)


def pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tilehall-pool-")]


# -- ordering, exclusivity, fairness ---------------------------------------------------------


def test_messages_are_handled_in_order_per_actor():
    restart_pool(4, 3)
    refs = [Recorder.start() for _ in range(5)]
    for i in range(300):
        for ref in refs:
            ref.tell(Ping(i))
    for ref in refs:
        assert ref.proxy().got.get(timeout=WAIT) == list(range(300))


class Exclusive(TilehallActor):
    def __init__(self) -> None:
        super().__init__()
        self.guard = threading.Lock()
        self.overlaps = 0
        self.threads: set[str] = set()
        self.count = 0

    def on_Ping(self, msg: Ping) -> None:
        if not self.guard.acquire(blocking=False):
            self.overlaps += 1
            return
        try:
            self.threads.add(threading.current_thread().name)
            for _ in range(50):  # widen the window a second worker would hit
                self.count += 1
        finally:
            self.guard.release()

    def result(self) -> tuple[int, int, int]:
        return self.overlaps, self.count, len(self.threads)


def test_an_actor_runs_on_one_worker_at_a_time_even_with_many_workers():
    restart_pool(8, 1)  # one message per turn: actors hop between workers constantly
    refs = [Exclusive.start() for _ in range(16)]
    for _ in range(400):
        for ref in refs:
            ref.tell(Ping())
    results = [ref.proxy().result().get(timeout=WAIT) for ref in refs]
    assert all(overlaps == 0 for overlaps, _, _ in results)
    assert all(count == 400 * 50 for _, count, _ in results)
    assert max(workers for _, _, workers in results) > 1  # actors did move between workers


def test_a_flooded_actor_does_not_starve_another():
    per_turn = 8
    restart_pool(1, per_turn)
    log: list[str] = []
    flooded = Recorder.start(log, "A")
    other = Recorder.start(log, "B")
    gate, entered = threading.Event(), threading.Event()
    try:
        flooded.tell(Block(gate, entered))
        assert entered.wait(WAIT)  # the only worker is now inside A's turn
        for i in range(1000):
            flooded.tell(Ping(i))
        other.tell(Ping(0))
    finally:
        gate.set()
    assert other.ask(Ping(1), timeout=WAIT) == 2
    assert len(flooded.proxy().got.get(timeout=WAIT)) == 1000
    # A's turn ends after per_turn messages (Block + 7 pings); B is next, not after 1000.
    assert log.index("B") == per_turn


# -- Pykka semantics -------------------------------------------------------------------------


def test_ask_proxy_and_tell():
    ref = Recorder.start()
    assert ref.ask(Ping(21), timeout=WAIT) == 42
    future = ref.ask(Ping(1), block=False)
    assert isinstance(future, TilehallFuture)
    assert future.get(timeout=WAIT) == 2
    proxy = ref.proxy()
    assert proxy.thread_name().get(timeout=WAIT).startswith("tilehall-pool-")
    ref.tell(Ping(5))
    assert proxy.got.get(timeout=WAIT) == [21, 1, 5]
    proxy.name = "renamed"
    assert proxy.name.get(timeout=WAIT) == "renamed"


def test_exceptions_in_an_ask_reach_the_future_and_the_actor_lives_on():
    ref = Recorder.start()
    with pytest.raises(ValueError, match="boom"):
        ref.ask(Boom(), timeout=WAIT)
    with pytest.raises(UnknownMessageError, match="on_str"):
        ref.ask("hello", timeout=WAIT)
    assert ref.is_alive()
    assert ref.ask(Ping(2), timeout=WAIT) == 4


class Lifecycle(TilehallActor):
    def __init__(self, events: list[str], fail_start: bool = False) -> None:
        super().__init__()
        self.events = events
        self.fail_start = fail_start
        self.failed = threading.Event()
        self.actor_ref.tell(Ping(0))  # queued before the actor starts: must follow on_start

    def on_start(self) -> None:
        self.events.append("start")
        if self.fail_start:
            raise RuntimeError("cannot start")

    def on_stop(self) -> None:
        self.events.append("stop")

    def on_failure(self, exc_type, exc_value, tb) -> None:
        self.events.append(f"failure:{exc_type.__name__}")
        self.failed.set()

    def on_Ping(self, msg: Ping) -> None:
        self.events.append(f"ping{msg.n}")

    def on_Boom(self, msg: Boom) -> None:
        raise KeyError("tell failure")


def test_on_start_runs_first_and_stop_calls_on_stop_and_unregisters():
    events: list[str] = []
    ref = Lifecycle.start(events)
    ref.tell(Ping(1))
    assert ref.stop(timeout=WAIT) is True
    assert events == ["start", "ping0", "ping1", "stop"]
    assert not ref.is_alive()
    assert ref not in ActorRegistry.get_all()
    with pytest.raises(ActorDeadError):
        ref.ask(Ping(2), timeout=WAIT)
    with pytest.raises(ActorDeadError):
        ref.tell(Ping(2))
    assert ref.stop(timeout=WAIT) is False


def test_messages_left_behind_a_stop_get_actor_dead_error():
    restart_pool(1, 32)
    gate, entered = threading.Event(), threading.Event()
    ref = Recorder.start()
    try:
        ref.tell(Block(gate, entered))
        assert entered.wait(WAIT)
        stopped = ref.stop(block=False)
        later = ref.ask(Ping(1), block=False)  # queued behind the stop
    finally:
        gate.set()
    assert stopped.get(timeout=WAIT) is True
    with pytest.raises(ActorDeadError):
        later.get(timeout=WAIT)


def test_an_unhandled_exception_in_a_tell_calls_on_failure_and_stops_the_actor():
    events: list[str] = []
    ref = Lifecycle.start(events)
    actor = find_actor(ref.actor_urn)
    ref.tell(Boom())
    assert actor.failed.wait(WAIT)
    with pytest.raises(ActorDeadError):
        ref.ask(Ping(9), timeout=WAIT)
    assert events == ["start", "ping0", "failure:KeyError"]
    assert not ref.is_alive()
    assert ref not in ActorRegistry.get_all()


def test_an_unknown_message_told_stops_the_actor_with_a_clear_error():
    events: list[str] = []
    ref = Lifecycle.start(events)
    actor = find_actor(ref.actor_urn)
    ref.tell(object())
    assert actor.failed.wait(WAIT)
    assert events[-1] == "failure:UnknownMessageError"


def test_a_failing_on_start_stops_the_actor():
    events: list[str] = []
    ref = Lifecycle.start(events, fail_start=True)
    with pytest.raises(ActorDeadError):
        ref.ask(Ping(5), timeout=WAIT)  # ping0, queued in __init__, is never handled either
    assert events == ["start"]
    assert not ref.is_alive()
    assert ref not in ActorRegistry.get_all()


class Asker(TilehallActor):
    def __init__(self, other: pykka.ActorRef) -> None:
        super().__init__()
        self.other = other

    def relay_blocking(self) -> int:
        return self.other.ask(Ping(1), timeout=WAIT)


def test_a_pooled_actor_waiting_on_a_future_gets_a_clear_error_not_a_deadlock():
    restart_pool(1, 32)  # with one worker a blocking ask would deadlock
    other = Recorder.start()
    asker = Asker.start(other)
    with pytest.raises(BlockingInPoolError, match="never block"):
        asker.proxy().relay_blocking().get(timeout=WAIT)


# -- futures ---------------------------------------------------------------------------------


def test_done_callback_fires_once_on_completion_and_at_once_when_added_late():
    future: TilehallFuture[int] = TilehallFuture()
    early: list[int] = []
    future.add_done_callback(lambda f: early.append(f.get()))
    assert not future.done() and early == []
    future.set(7)
    assert early == [7]
    with pytest.raises(queue.Full):
        future.set(8)
    late: list[int] = []
    future.add_done_callback(lambda f: late.append(f.get()))
    assert late == [7] and early == [7]
    assert future.get() == 7 and future.get() == 7


def test_done_callback_sees_exceptions_and_a_failing_callback_does_not_stop_others():
    future: TilehallFuture[int] = TilehallFuture()
    seen: list[str] = []

    def bad(_f: TilehallFuture[int]) -> None:
        raise RuntimeError("callback bug")

    def good(f: TilehallFuture[int]) -> None:
        try:
            f.get()
        except LookupError as exc:
            seen.append(str(exc))

    future.add_done_callback(bad)
    future.add_done_callback(good)
    try:
        raise LookupError("nope")
    except LookupError:
        future.set_exception()
    assert seen == ["nope"]
    with pytest.raises(queue.Full):
        future.set_exception((ValueError, ValueError(), None))


def test_get_times_out_and_wakes_when_set_from_another_thread():
    future: TilehallFuture[str] = TilehallFuture()
    with pytest.raises(pykka.Timeout):
        future.get(timeout=0.01)
    setter = threading.Thread(target=future.set, args=("ok",))
    setter.start()
    assert future.get(timeout=WAIT) == "ok"
    setter.join(WAIT)


def test_ask_future_calls_back_from_the_worker():
    ref = Recorder.start()
    done = threading.Event()
    result: list[tuple[int, str]] = []

    def callback(f: TilehallFuture[int]) -> None:
        result.append((f.get(), threading.current_thread().name))
        done.set()

    ref.ask(Ping(4), block=False).add_done_callback(callback)
    assert done.wait(WAIT)
    assert result[0][0] == 8


def test_map_and_join_are_callback_driven():
    a: TilehallFuture[int] = TilehallFuture()
    b: TilehallFuture[int] = TilehallFuture()
    mapped = a.map(lambda v: v + 1)
    joined = a.join(b)
    got: list[object] = []
    mapped.add_done_callback(lambda f: got.append(f.get()))
    joined.add_done_callback(lambda f: got.append(f.get()))
    a.set(1)
    assert got == [2]
    b.set(5)
    assert got == [2, [1, 5]]


def test_awaiting_a_future_on_an_asyncio_loop_does_not_block_it():
    ref = Recorder.start()

    async def main() -> tuple[int, int]:
        ticks = 0
        future = ref.ask(Ping(10), block=False)
        task = asyncio.ensure_future(_await(future))
        while not task.done():
            ticks += 1
            await asyncio.sleep(0)
        return task.result(), ticks

    async def _await(f: TilehallFuture[int]) -> int:
        return await f

    value, _ticks = asyncio.run(asyncio.wait_for(main(), WAIT))
    assert value == 20

    async def failing() -> None:
        await ref.ask(Boom(), block=False)

    with pytest.raises(ValueError, match="boom"):
        asyncio.run(asyncio.wait_for(failing(), WAIT))


def test_ask_async_awaits_the_answer_without_blocking_the_loop():
    ref = Recorder.start()
    gate, entered = threading.Event(), threading.Event()
    ref.tell(Block(gate, entered))
    assert entered.wait(WAIT)

    async def main() -> tuple[int, int]:
        task = asyncio.ensure_future(ask_async(ref, Ping(21), timeout=WAIT))
        ticks = 0
        while ticks < 20:  # the actor is busy: the loop keeps running meanwhile
            ticks += 1
            await asyncio.sleep(0)
        assert not task.done()
        gate.set()
        return await task, ticks

    value, ticks = asyncio.run(main())
    assert value == 42 and ticks == 20


def test_ask_async_raises_what_the_handler_raised_and_actor_dead_error():
    ref = Recorder.start()
    with pytest.raises(ValueError, match="boom"):
        asyncio.run(ask_async(ref, Boom(), timeout=WAIT))
    assert asyncio.run(ask_async(ref, Ping(1), timeout=WAIT)) == 2  # it lives on
    ref.stop(timeout=WAIT)
    with pytest.raises(ActorDeadError):
        asyncio.run(ask_async(ref, Ping(2), timeout=WAIT))


def test_ask_async_times_out_and_a_late_answer_is_dropped():
    ref = Recorder.start()
    gate, entered = threading.Event(), threading.Event()
    ref.tell(Block(gate, entered))
    assert entered.wait(WAIT)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await ask_async(ref, Ping(3), timeout=0.05)
        gate.set()
        # The message was still handled; the next ask is answered normally.
        assert await ask_async(ref, Ping(4), timeout=WAIT) == 8

    asyncio.run(main())
    assert ref.proxy().got.get(timeout=WAIT) == [3, 4]


def test_ask_async_works_on_a_dedicated_thread_actor_and_refuses_plain_pykka():
    ref = Blocking.start(Recorder.start())
    value, name = asyncio.run(ask_async(ref, Ping(5), timeout=WAIT))
    assert value == 10 and not name.startswith("tilehall-pool-")
    plain = pykka.ThreadingActor.start()
    try:
        with pytest.raises(TypeError):
            asyncio.run(ask_async(plain, Ping(6), timeout=WAIT))
    finally:
        plain.stop(timeout=WAIT)


def test_stop_future_is_callback_capable():
    ref = Recorder.start()
    done = threading.Event()
    result: list[bool] = []
    stop_future(ref).add_done_callback(lambda f: (result.append(f.get()), done.set()))
    assert done.wait(WAIT)
    assert result == [True] and not ref.is_alive()
    assert stop_future(ref).get(timeout=WAIT) is False


# -- scale and cleanup -----------------------------------------------------------------------


def test_2000_actors_run_on_the_pool_threads_only():
    restart_pool(4, 32)
    baseline = threading.active_count()
    refs = [Recorder.start() for _ in range(2000)]
    names = pykka.get_all(
        [ref.proxy().thread_name() for ref in refs], timeout=WAIT
    )
    assert threading.active_count() == baseline
    assert len(pool_threads()) == 4
    assert set(names) <= {f"tilehall-pool-{i}" for i in range(4)}


def test_stop_all_cleans_the_registry_and_the_introspection():
    refs = [Recorder.start() for _ in range(50)]
    assert {s["urn"] for s in live_actors()} >= {r.actor_urn for r in refs}
    ActorRegistry.stop_all(timeout=WAIT)
    assert ActorRegistry.get_all() == []
    assert live_actors() == []
    assert all(find_actor(r.actor_urn) is None for r in refs)


def test_shutdown_joins_every_worker_and_a_later_message_restarts_the_pool():
    restart_pool(6, 32)
    assert len(pool_threads()) == 6
    ref = Recorder.start()
    assert ref.ask(Ping(1), timeout=WAIT) == 2
    assert Dispatcher.shutdown(timeout=WAIT)
    assert pool_threads() == [] and not Dispatcher.is_running()
    assert ref.ask(Ping(2), timeout=WAIT) == 4  # lazily restarted with the defaults
    assert Dispatcher.is_running()


def test_starting_a_running_pool_with_other_sizes_is_refused():
    restart_pool(2, 16)
    Dispatcher.start(2, 16)  # same sizes: no-op
    with pytest.raises(RuntimeError, match="already running"):
        Dispatcher.start(3, 16)


class Counter(TilehallActor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_Ping(self, msg: Ping) -> None:
        self.count += 1


def test_100k_tells_through_1000_actors_all_arrive():
    refs = [Counter.start() for _ in range(1000)]
    for i in range(100_000):
        refs[i % 1000].tell(Ping(i))
    counts = pykka.get_all([ref.proxy().count for ref in refs], timeout=WAIT * 6)
    assert sum(counts) == 100_000
    assert set(counts) == {100}


# -- runtime switch, dedicated threads, introspection ----------------------------------------


def test_the_same_classes_run_on_their_own_threads_in_threading_mode():
    configure_runtime("threading", 4, 32)
    before = threading.active_count()
    refs = [Recorder.start() for _ in range(3)]
    names = [r.proxy().thread_name().get(timeout=WAIT) for r in refs]
    assert len(set(names)) == 3 and not any(n.startswith("tilehall-pool-") for n in names)
    assert threading.active_count() == before + 3
    assert refs[0].ask(Ping(3), timeout=WAIT) == 6
    assert find_actor(refs[0].actor_urn).actor_snapshot()["runtime"] == "thread"
    ActorRegistry.stop_all(timeout=WAIT)
    configure_runtime("pooled", 2, 32)
    ref = Recorder.start()
    assert ref.proxy().thread_name().get(timeout=WAIT).startswith("tilehall-pool-")


class Blocking(DedicatedThreadActor):
    def __init__(self, other: pykka.ActorRef) -> None:
        super().__init__()
        self.other = other
        self.entity_id = "storage"

    def on_Ping(self, msg: Ping) -> tuple[int, str]:
        # A dedicated thread may wait on a pooled actor's answer.
        return self.other.ask(msg, timeout=WAIT), threading.current_thread().name


def test_a_dedicated_thread_actor_may_block_and_dispatches_typed_messages():
    pooled = Recorder.start()
    ref = Blocking.start(pooled)
    future = ref.ask(Ping(3), block=False)
    assert isinstance(future, TilehallFuture)
    value, name = future.get(timeout=WAIT)
    assert value == 6 and not name.startswith("tilehall-pool-")
    with pytest.raises(UnknownMessageError):
        ref.ask(Boom(), timeout=WAIT)
    snap = find_actor(ref.actor_urn).actor_snapshot()
    assert snap["class"] == "Blocking" and snap["entity_id"] == "storage"
    assert snap["runtime"] == "thread" and snap["messages_handled"] == 2


class Described(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.entity_id = 1234
        self.debug_status = "active"

    def describe(self) -> dict:
        return {"got": tuple(self.got)}


def test_snapshots_read_live_state_without_waiting_for_the_actor():
    restart_pool(1, 32)
    ref = Described.start()
    gate, entered = threading.Event(), threading.Event()
    try:
        ref.tell(Ping(1))
        ref.tell(Block(gate, entered))
        assert entered.wait(WAIT)
        for i in range(5):
            ref.tell(Ping(i))
        actor = find_actor(ref.actor_urn)
        snap = actor.actor_snapshot()  # the actor is busy: this must not wait for it
        assert snap["inbox_depth"] == 5
        assert snap["messages_handled"] == 2
        assert snap["entity_id"] == 1234 and snap["status"] == "active"
        assert snap["class"] == "Described" and snap["runtime"] == "pooled" and snap["alive"]
        assert snap["started_at"] <= snap["last_message_at"]
        assert actor.describe() == {"got": (1,)}
        assert [s["urn"] for s in live_actors()] == [ref.actor_urn]
    finally:
        gate.set()
    assert find_actor("urn:uuid:nope") is None
