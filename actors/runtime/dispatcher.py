"""The worker pool and the per-actor mailboxes that pooled actors run on.

Every pooled actor gets a :class:`Mailbox`; a fixed pool of worker threads (:class:`Dispatcher`,
threads named ``tilehall-pool-N``) drains the mailboxes that have work, one turn of at most
``per_turn`` messages at a time, an actor on at most one worker at once.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

from pykka import ActorDeadError, ActorRegistry, messages

from config.settings import RuntimeSettings

if TYPE_CHECKING:
    from pykka._envelope import Envelope

    from actors.runtime.actor import PooledActor

__all__ = ["Dispatcher", "Mailbox", "in_pool_worker"]

logger = logging.getLogger("tilehall.runtime")

_tls = threading.local()


def in_pool_worker() -> bool:
    """True when the calling thread is one of the dispatcher's pool workers."""
    return getattr(_tls, "in_pool", False)


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
            # No IndexError to catch when the queue runs dry: most turns handle one message,
            # and raising it cost more than the rest of the turn's bookkeeping.
            while q and n < per_turn and not stopped.is_set():
                handle(q.popleft())
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

