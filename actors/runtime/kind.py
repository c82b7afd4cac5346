"""Which runtime new actors get: the pooled dispatcher, or a thread each (for the benchmark)."""

from __future__ import annotations

from typing import Literal

from actors.runtime.dispatcher import Dispatcher

__all__ = ["RuntimeKind", "configure_runtime", "runtime_kind"]

RuntimeKind = Literal["pooled", "threading"]

_kind: RuntimeKind = "pooled"


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
