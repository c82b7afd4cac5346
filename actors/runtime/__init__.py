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

Layout, by concept (as Pykka splits ``_actor``, ``_future``, ``_registry``):
:mod:`~actors.runtime.future` (the callback-driven, awaitable future and :func:`ask_async`),
:mod:`~actors.runtime.dispatcher` (the worker pool and the mailboxes),
:mod:`~actors.runtime.actor` (the actor type) and :mod:`~actors.runtime.kind` (which runtime
new actors get). This package's names are the runtime's public API.
"""

from actors.runtime.actor import PooledActor
from actors.runtime.dispatcher import Dispatcher, Mailbox, in_pool_worker
from actors.runtime.future import BlockingInPoolError, TilehallFuture, ask_async, stop_future
from actors.runtime.kind import RuntimeKind, configure_runtime, runtime_kind

__all__ = [
    "BlockingInPoolError",
    "Dispatcher",
    "Mailbox",
    "PooledActor",
    "RuntimeKind",
    "TilehallFuture",
    "ask_async",
    "configure_runtime",
    "in_pool_worker",
    "runtime_kind",
    "stop_future",
]

