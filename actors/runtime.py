"""The actor runtime: a pooled dispatcher behind Pykka's documented actor-type hooks.

Pykka's ``ThreadingActor`` spends one OS thread per actor. :class:`PooledActor` instead plugs
into Pykka's extension hooks (``_create_actor_inbox``, ``_create_future``,
``_start_actor_loop``): every actor gets a :class:`Mailbox`, and a fixed pool of worker threads
(:class:`Dispatcher`, threads named ``tilehall-pool-N``) drains the mailboxes that have work.

Guarantees, the same as Pykka's:

- an actor is scheduled on at most one worker at a time, so it handles one message at a time,
  in the order they were put;
- tell/ask/proxy/stop, ``on_start``/``on_stop``/``on_failure`` and the ``ActorRegistry`` work
  unchanged; an exception in an ask is delivered to the asker's future, an unhandled exception
  in a tell calls ``on_failure`` and stops the actor.

Fairness: a turn handles at most ``per_turn`` messages, then the actor goes to the back of the
run queue if more wait.

Exit: the workers are daemon threads, so the process can always exit; an ``atexit`` hook still
lets the workers finish the turn they are in (bounded join). A server stops its actors
(``ActorRegistry.stop_all()``) before :meth:`Dispatcher.shutdown`; shutdown does not stop actors,
and a message put after shutdown lazily restarts the pool.

Pooled actors must never block: :meth:`TilehallFuture.get` on an unresolved future raises
:class:`BlockingInPoolError` on a pool worker instead of deadlocking the pool.

:func:`configure_runtime` picks, once at server start, whether the same actor classes run pooled
or on one Pykka-style thread each (``"threading"``, for the benchmark's comparison).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable
from itertools import count
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import pykka
from pykka import ActorDeadError, ActorRegistry, messages

from config.settings import RuntimeSettings

if TYPE_CHECKING:
    from pykka._envelope import Envelope

__all__ = [
    "BlockingInPoolError",
    "Dispatcher",
    "Mailbox",
    "PooledActor",
    "RuntimeKind",
    "TilehallFuture",
    "configure_runtime",
    "in_pool_worker",
    "runtime_kind",
    "stop_future",
]

logger = logging.getLogger("tilehall.runtime")

T = TypeVar("T")
M = TypeVar("M")

RuntimeKind = Literal["pooled", "threading"]

_tls = threading.local()


def in_pool_worker() -> bool:
    """True when the calling thread is one of the dispatcher's pool workers."""
    return getattr(_tls, "in_pool", False)


class BlockingInPoolError(RuntimeError):
    """A pool worker tried to wait on an unresolved future (pooled actors must never block)."""


# --------------------------------------------------------------------------------------------
# Futures


_PENDING = 0
_VALUE = 1
_ERROR = 2


class TilehallFuture(pykka.Future[T]):
    """A thread-safe Pykka future with non-blocking completion callbacks.

    ``get(timeout=...)`` blocks (for non-IOLoop threads and tests). ``add_done_callback(fn)``
    calls ``fn(future)`` exactly once when the future completes, on the completing thread, or
    at once on the caller's thread if it already has. ``await future`` on a running asyncio
    loop resolves through a callback and never blocks the loop. ``map``/``filter``/``reduce``/
    ``join`` are callback-driven, so derived futures support callbacks too; only futures built
    with ``set_get_hook`` (such as ``ActorRef.stop(block=False)``; use :func:`stop_future`)
    cannot be waited on without blocking.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._state = _PENDING
        self._value: Any = None
        self._exc_info: Any = None
        self._event: threading.Event | None = None
        self._callbacks: list[Callable[[TilehallFuture[T]], object]] | None = None

    def __repr__(self) -> str:
        state = {_PENDING: "pending", _VALUE: "done", _ERROR: "failed"}[self._state]
        return f"<TilehallFuture {state}>"

    def done(self) -> bool:
        """True once a value or an exception is set."""
        return self._state != _PENDING

    def get(self, *, timeout: float | None = None) -> T:
        """Return the value (or raise the exception), waiting up to ``timeout`` seconds."""
        if self._get_hook is not None:
            return super().get(timeout=timeout)
        if self._state == _PENDING:
            if getattr(_tls, "in_pool", False):
                raise BlockingInPoolError(
                    "a pooled actor waited on an unresolved future; pooled actors must never "
                    "block: reply with a tell, or use add_done_callback"
                )
            with self._lock:
                event = None
                if self._state == _PENDING:
                    event = self._event
                    if event is None:
                        event = self._event = threading.Event()
            if event is not None and not event.wait(timeout):
                raise pykka.Timeout(f"{timeout} seconds")
        return self._outcome()

    def _outcome(self) -> T:
        if self._state == _VALUE:
            return self._value
        exc_type, exc_value, exc_tb = self._exc_info
        if exc_value is None:
            exc_value = exc_type()
        if exc_value.__traceback__ is not exc_tb:
            raise exc_value.with_traceback(exc_tb)
        raise exc_value

    def set(self, value: T | None = None) -> None:
        """Complete with ``value``; raises ``queue.Full`` if already completed."""
        self._complete(_VALUE, value, None)

    def set_exception(self, exc_info: Any = None) -> None:
        """Complete with an exception (``sys.exc_info()`` of the current one by default)."""
        if exc_info is None:
            exc_info = sys.exc_info()
        assert len(exc_info) == 3
        self._complete(_ERROR, None, exc_info)

    def _complete(self, state: int, value: Any, exc_info: Any) -> None:
        with self._lock:
            if self._state != _PENDING or self._get_hook is not None:
                raise queue.Full
            self._value = value
            self._exc_info = exc_info
            self._state = state
            event, callbacks = self._event, self._callbacks
            self._callbacks = None
        if event is not None:
            event.set()
        if callbacks:
            for fn in callbacks:
                self._run_callback(fn)

    def set_get_hook(self, func: Callable[[float | None], T]) -> None:
        """Pykka's lazy-value hook (used by ``ActorRef.stop``); not callback-capable."""
        with self._lock:
            if self._state != _PENDING:
                raise queue.Full
            super().set_get_hook(func)

    def add_done_callback(self, fn: Callable[[TilehallFuture[T]], object]) -> None:
        """Call ``fn(self)`` once, when completed (now, if already). ``fn`` must not block."""
        if self._get_hook is not None:
            raise TypeError(
                "this future is computed lazily by a get hook; it cannot call back without "
                "blocking (for ActorRef.stop use actors.runtime.stop_future)"
            )
        with self._lock:
            if self._state == _PENDING:
                if self._callbacks is None:
                    self._callbacks = [fn]
                else:
                    self._callbacks.append(fn)
                return
        self._run_callback(fn)

    def _run_callback(self, fn: Callable[[TilehallFuture[T]], object]) -> None:
        try:
            fn(self)
        except Exception:
            logger.exception("future done-callback %r failed", fn)

    def __await__(self) -> Generator[Any, None, T]:
        """Await on a running asyncio loop without blocking it."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()

        def transfer(_: asyncio.Future[Any] | None = None) -> None:
            if waiter.cancelled():
                return
            if self._state == _VALUE:
                waiter.set_result(self._value)
            else:
                waiter.set_exception(self._exc_info[1] or self._exc_info[0]())

        self.add_done_callback(lambda _f: loop.call_soon_threadsafe(transfer))
        return (yield from waiter.__await__())

    # Derived futures: callback-driven so they never need a blocking get.

    def _derive(self, fn: Callable[[Any], Any]) -> TilehallFuture[Any]:
        out: TilehallFuture[Any] = TilehallFuture()

        def done(src: TilehallFuture[Any]) -> None:
            try:
                out.set(fn(src._outcome()))
            except Exception:
                out.set_exception()

        self.add_done_callback(done)
        return out

    def map(self, func: Callable[[T], M]) -> pykka.Future[M]:
        """A future of ``func(value)``."""
        if self._get_hook is not None:
            return super().map(func)
        return self._derive(func)

    def filter(self, func: Callable[[Any], bool]) -> pykka.Future[Any]:  # type: ignore[override]
        """A future of the items of the (iterable) value for which ``func`` is true."""
        if self._get_hook is not None:
            return super().filter(func)  # type: ignore[misc]
        return self._derive(lambda value: list(filter(func, value)))

    def reduce(self, func: Callable[[Any, Any], Any], *args: Any) -> pykka.Future[Any]:  # type: ignore[override]
        """A future of ``functools.reduce(func, value, *args)``."""
        if self._get_hook is not None:
            return super().reduce(func, *args)  # type: ignore[misc]
        return self._derive(lambda value: functools.reduce(func, value, *args))

    def join(self, *futures: pykka.Future[Any]) -> pykka.Future[Iterable[Any]]:  # type: ignore[override]
        """A future of the list of this and ``futures``' values (first exception wins)."""
        every = [self, *futures]
        if any(not isinstance(f, TilehallFuture) or f._get_hook is not None for f in every):
            return super().join(*futures)
        out: TilehallFuture[Iterable[Any]] = TilehallFuture()
        remaining = [len(every)]
        lock = threading.Lock()

        def done(_: TilehallFuture[Any]) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            try:
                out.set([f._outcome() for f in every])
            except Exception:
                out.set_exception()

        for f in every:
            f.add_done_callback(done)
        return out


def stop_future(ref: pykka.ActorRef[Any]) -> TilehallFuture[bool]:
    """Ask ``ref`` to stop; a callback-capable future of ``ActorRef.stop``'s boolean."""
    out: TilehallFuture[bool] = TilehallFuture()
    asked = ref.ask(messages._ActorStop(), block=False)

    def done(f: TilehallFuture[Any]) -> None:
        try:
            f.get()
        except ActorDeadError:
            out.set(False)
        except Exception:
            out.set_exception()
        else:
            out.set(True)

    asked.add_done_callback(done)
    return out


# --------------------------------------------------------------------------------------------
# Mailboxes and the dispatcher


def _reject(envelope: Envelope[Any], actor_name: str) -> None:
    """Answer an envelope that will never be handled, like Pykka's loop teardown does."""
    if envelope.reply_to is None:
        return
    if isinstance(envelope.message, messages._ActorStop):
        envelope.reply_to.set(None)
    else:
        envelope.reply_to.set_exception(
            exc_info=(
                ActorDeadError,
                ActorDeadError(f"{actor_name} stopped before handling the message"),
                None,
            )
        )


class Mailbox:
    """A pooled actor's inbox: a FIFO plus the "scheduled on a worker" flag.

    ``put`` schedules the actor on the dispatcher when it is not already scheduled; the worker
    that runs a turn re-queues it if messages remain. Messages put before the actor starts wait
    for ``on_start``. Messages put after it stopped are answered with ``ActorDeadError`` at once.
    """

    __slots__ = ("_queue", "_lock", "_actor", "_scheduled", "_dead", "_started", "_name")

    def __init__(self) -> None:
        self._queue: deque[Envelope[Any]] = deque()
        self._lock = threading.Lock()
        self._actor: PooledActor | None = None
        self._scheduled = False
        self._dead = False
        self._started = False
        self._name = "actor"

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, envelope: Envelope[Any], /) -> None:
        """Enqueue an envelope and schedule the actor if it is idle."""
        with self._lock:
            if self._dead:
                dead = True
            else:
                dead = False
                self._queue.append(envelope)
                if self._scheduled or self._actor is None:
                    return
                self._scheduled = True
        if dead:
            _reject(envelope, self._name)
        else:
            Dispatcher.submit(self)

    def get(self) -> Envelope[Any]:
        """Pop the oldest envelope without waiting (``queue.Empty`` if none)."""
        try:
            return self._queue.popleft()
        except IndexError:
            raise queue.Empty from None

    def empty(self) -> bool:
        """True when no envelope waits."""
        return not self._queue

    def attach(self, actor: PooledActor) -> None:
        """Bind the started actor and schedule its first turn (``on_start``)."""
        with self._lock:
            self._actor = actor
            self._name = str(actor.actor_ref)
            self._scheduled = True
        Dispatcher.submit(self)

    def run_turn(self, per_turn: int) -> bool:
        """Handle up to ``per_turn`` messages; True if the actor must be re-queued."""
        actor = self._actor
        if actor is None:  # already torn down
            return False
        stopped = actor.actor_stopped
        try:
            if not self._started:
                self._started = True
                actor._actor_loop_setup()
            handle = actor._handle_envelope
            q = self._queue
            n = 0
            while n < per_turn and not stopped.is_set():
                try:
                    envelope = q.popleft()
                except IndexError:
                    break
                handle(envelope)
                n += 1
        except BaseException:
            # Only a bug in the runtime itself gets here; never lose the worker.
            logger.exception("runtime failure in a turn of %s; stopping it", self._name)
            ActorRegistry.unregister(actor.actor_ref)
            actor.actor_stopped.set()
        if stopped.is_set():
            self._teardown()
            return False
        with self._lock:
            if self._queue:
                return True
            self._scheduled = False
            return False

    def _teardown(self) -> None:
        with self._lock:
            self._dead = True
            self._scheduled = False
            self._actor = None  # let the stopped actor be collected
            left = list(self._queue)
            self._queue.clear()
        for envelope in left:
            _reject(envelope, self._name)


_SHUTDOWN = object()


class Dispatcher:
    """The process-wide pool of worker threads that run pooled actors' turns.

    Started explicitly with :meth:`start` or lazily by the first message (with the
    ``RuntimeSettings`` defaults); :meth:`shutdown` joins the workers.
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()
    # One run queue for the life of the process: mailboxes queued across a shutdown wait
    # here for the next start instead of being lost.
    _runq: ClassVar[queue.SimpleQueue[Any]] = queue.SimpleQueue()
    _threads: ClassVar[list[threading.Thread]] = []
    _per_turn: ClassVar[int] = RuntimeSettings().messages_per_turn
    _running: ClassVar[bool] = False
    _atexit_registered: ClassVar[bool] = False

    @classmethod
    def start(cls, workers: int | None = None, per_turn: int | None = None) -> None:
        """Start ``workers`` threads handling ``per_turn`` messages per turn (no-op if running
        with the same sizes; ``RuntimeError`` if running with others)."""
        defaults = RuntimeSettings()
        workers = defaults.pool_workers if workers is None else workers
        per_turn = defaults.messages_per_turn if per_turn is None else per_turn
        if workers < 1 or per_turn < 1:
            raise ValueError("workers and per_turn must be >= 1")
        with cls._lock:
            if cls._running:
                if len(cls._threads) != workers or cls._per_turn != per_turn:
                    raise RuntimeError(
                        f"dispatcher already running with {len(cls._threads)} workers and "
                        f"{cls._per_turn} messages per turn; shutdown() first"
                    )
                return
            cls._per_turn = per_turn
            cls._threads = [
                threading.Thread(target=cls._work, name=f"tilehall-pool-{i}", daemon=True)
                for i in range(workers)
            ]
            for t in cls._threads:
                t.start()
            cls._running = True
            if not cls._atexit_registered:
                atexit.register(cls.shutdown, 1.0)
                cls._atexit_registered = True

    @classmethod
    def shutdown(cls, timeout: float | None = 5.0) -> bool:
        """Stop and join the workers (each finishes its current turn); True if all joined.

        Does not stop actors: call ``ActorRegistry.stop_all()`` first.
        """
        with cls._lock:
            if not cls._running:
                return True
            threads = cls._threads
            cls._threads = []
            cls._running = False
            for _ in threads:
                cls._runq.put(_SHUTDOWN)
        current = threading.current_thread()
        for t in threads:
            if t is not current:
                t.join(timeout)
        return not any(t.is_alive() for t in threads if t is not current)

    @classmethod
    def is_running(cls) -> bool:
        """True while the worker threads run."""
        return cls._running

    @classmethod
    def workers(cls) -> int:
        """How many worker threads run now."""
        return len(cls._threads)

    @classmethod
    def submit(cls, mailbox: Mailbox) -> None:
        """Queue a mailbox for a turn (starts the pool lazily)."""
        if not cls._running:
            cls.start()
        cls._runq.put(mailbox)

    @classmethod
    def _work(cls) -> None:
        _tls.in_pool = True
        get, put = cls._runq.get, cls._runq.put
        while True:
            mailbox = get()
            if mailbox is _SHUTDOWN:
                return
            if mailbox.run_turn(cls._per_turn):
                put(mailbox)


# --------------------------------------------------------------------------------------------
# The actor type


_kind: RuntimeKind = "pooled"
_thread_counter = count(0)


def configure_runtime(kind: RuntimeKind, workers: int, per_turn: int) -> None:
    """Choose how :class:`PooledActor` subclasses run; call at server start, before any actor.

    ``"pooled"`` starts the dispatcher with ``workers`` threads and ``per_turn`` messages per
    turn (restarting it if it runs with other sizes); ``"threading"`` gives each actor started
    afterwards a daemon thread of its own, like ``pykka.ThreadingActor``. Actors already
    running keep the runtime they started with.
    """
    global _kind
    if kind not in ("pooled", "threading"):
        raise ValueError(f"runtime kind must be 'pooled' or 'threading', not {kind!r}")
    _kind = kind
    if kind == "pooled":
        if Dispatcher.is_running() and (
            Dispatcher.workers() != workers or Dispatcher._per_turn != per_turn
        ):
            Dispatcher.shutdown()
        Dispatcher.start(workers, per_turn)


def runtime_kind() -> RuntimeKind:
    """The runtime new actors get (see :func:`configure_runtime`)."""
    return _kind


class _ThreadInbox(queue.Queue):  # type: ignore[type-arg]
    """The inbox of an actor running on its own thread (``len`` reads without the lock)."""

    def __len__(self) -> int:
        return len(self.queue)


class PooledActor(pykka.Actor):
    """A Pykka actor run by the pooled dispatcher (or on its own thread in "threading" mode).

    Pooled actors must never block: no sleeps, no I/O waits, no ``ask(...).get()``.
    """

    @staticmethod
    def _create_actor_inbox() -> Any:
        return Mailbox() if _kind == "pooled" else _ThreadInbox()

    @staticmethod
    def _create_future() -> TilehallFuture[Any]:
        return TilehallFuture()

    def _start_actor_loop(self) -> None:
        inbox = self.actor_inbox
        if isinstance(inbox, Mailbox):
            inbox.attach(self)
        else:
            threading.Thread(
                target=self._actor_loop,
                name=f"{self.__class__.__name__}-{next(_thread_counter)}",
                daemon=True,
            ).start()

    def _handle_envelope(self, envelope: Envelope[Any]) -> None:
        """Handle one message: Pykka's ``_actor_loop_running`` body, for one envelope."""
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                logger.info(f"Exception returned from {self} to caller:", exc_info=sys.exc_info())
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    self._handle_failure(*sys.exc_info())
        except BaseException:
            exc = sys.exc_info()[1]
            logger.debug(f"{exc!r} in {self}. Stopping all actors.")
            if envelope.reply_to is not None:
                envelope.reply_to.set_exception()
            self._stop()
            # Never block a worker waiting for other actors to stop.
            ActorRegistry.stop_all(block=False)
