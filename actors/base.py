"""The base classes every tilehall actor derives from, and the /debug/actors introspection.

- :class:`TilehallActor`: pooled (see :mod:`actors.runtime`); must never block.
- :class:`DedicatedThreadActor`: a thread of its own, for actors that block on I/O.

Both dispatch typed messages: ``on_receive(msg)`` calls ``self.on_<type(msg).__name__>(msg)``,
so a message class ``SubmitAction`` is handled by ``def on_SubmitAction(self, msg)``. Proxy
calls (``ref.proxy().method()``) keep working as in Pykka.

Introspection reads plain attributes the actor's own thread rebinds to immutable values, so
:func:`live_actors`, :func:`find_actor` and :meth:`actor_snapshot` are safe from any thread
(the IOLoop included) and never wait for an actor.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import pykka
from pykka import ActorRegistry

from actors.runtime import (
    Mailbox,
    PooledActor,
    RuntimeKind,
    TilehallFuture,
    configure_runtime,
    runtime_kind,
)

__all__ = [
    "DedicatedThreadActor",
    "RuntimeKind",
    "TilehallActor",
    "UnknownMessageError",
    "configure_runtime",
    "find_actor",
    "live_actors",
    "runtime_kind",
    "tell_if_alive",
]


class UnknownMessageError(TypeError):
    """An actor received a message type it has no ``on_<ClassName>`` handler for."""


class _TypedIntrospectedActor:
    """Typed message dispatch plus the lock-free snapshot; mixed into both base classes."""

    entity_id: Any = None
    """The id of the entity the actor owns (session id, character id, zone name); set it."""

    debug_status: str = "running"
    """A short status shown by /debug/actors; rebind it (never mutate in place)."""

    messages_handled: int = 0
    last_message_at: float | None = None
    started_at: float | None = None
    _handling: type | None = None  # the type of the message being handled now (its thread writes)

    _message_counts: dict[type, int] | None = None  # message type -> handled (its thread writes)

    # Per-class cache: message type -> handler function (None when there is none).
    _handlers: ClassVar[dict[type, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handlers = {}

    # Pykka hook overrides (called on the actor's own thread/turn).

    def _actor_loop_setup(self) -> None:
        self.started_at = time.time()
        super()._actor_loop_setup()  # type: ignore[misc]

    def _handle_receive(self, message: Any) -> Any:
        self.messages_handled += 1
        self.last_message_at = time.time()
        mtype = self._handling = type(message)  # its name is looked up by readers, not here
        counts = self._message_counts
        if counts is None:
            counts = self._message_counts = {}
        counts[mtype] = counts.get(mtype, 0) + 1
        try:
            return super()._handle_receive(message)  # type: ignore[misc]
        finally:
            self._handling = None

    def on_receive(self, message: Any) -> Any:
        """Dispatch ``message`` to ``self.on_<ClassName>(message)``; its return is the reply."""
        cls = type(self)
        mtype = type(message)
        try:
            handler = cls._handlers[mtype]
        except KeyError:
            handler = cls._handlers[mtype] = getattr(cls, "on_" + mtype.__name__, None)
        if handler is None:
            raise UnknownMessageError(
                f"{cls.__name__} has no handler for message {mtype.__qualname__}: "
                f"define {cls.__name__}.on_{mtype.__name__}(self, msg)"
            )
        return handler(self, message)

    # Introspection (any thread).

    def actor_snapshot(self) -> dict[str, Any]:
        """A JSON-ready summary for /debug/actors, read without taking any lock."""
        entity_id = self.entity_id
        if entity_id is not None and not isinstance(entity_id, str | int):
            entity_id = str(entity_id)
        inbox = self.actor_inbox  # type: ignore[attr-defined]
        return {
            "class": type(self).__name__,
            "urn": self.actor_urn,  # type: ignore[attr-defined]
            "entity_id": entity_id,
            "status": self.debug_status,
            "alive": not self.actor_stopped.is_set(),  # type: ignore[attr-defined]
            "runtime": self._runtime_name(),
            "inbox_depth": _inbox_depth(inbox),
            "messages_handled": self.messages_handled,
            "last_message_at": self.last_message_at,
            "started_at": self.started_at,
            "handling": _name(self._handling),
        }

    def message_counts(self) -> dict[str, int]:
        """Messages handled so far by type name, read from any thread without a lock (one C-level
        copy of a dict the actor's own thread only adds to or bumps; the GIL makes it atomic)."""
        counts = self._message_counts
        if counts is None:
            return {}
        return {t.__name__: n for t, n in sorted(counts.copy().items(), key=lambda kv: -kv[1])}

    def describe(self) -> dict[str, Any]:
        """Detail for /debug/actors/{urn}; override. Called from other threads: read only
        attributes the actor rebinds to immutable values (no iteration over live state)."""
        return {}

    def _runtime_name(self) -> str:
        return "thread"


def _name(mtype: type | None) -> str | None:
    return None if mtype is None else mtype.__name__


def _inbox_depth(inbox: Any) -> int:
    try:
        return len(inbox)
    except TypeError:
        q = getattr(inbox, "queue", None)  # a plain queue.Queue: its deque, lock-free
        return len(q) if q is not None else 0


class TilehallActor(_TypedIntrospectedActor, PooledActor):
    """The base class of every pooled actor. Handlers must never block (no I/O waits, no
    ``ask(...).get()``); reply with tells, or ``add_done_callback`` on an ask's future."""

    def _runtime_name(self) -> str:
        return "pooled" if isinstance(self.actor_inbox, Mailbox) else "thread"


class DedicatedThreadActor(_TypedIntrospectedActor, pykka.ThreadingActor):
    """A typed actor on a thread of its own, for work that blocks on I/O (the StorageActor).

    Its thread is a daemon so the process can always exit; flush it with an explicit stop
    during graceful shutdown. Its futures are :class:`~actors.runtime.TilehallFuture`.
    """

    use_daemon_thread: ClassVar[bool] = True

    @staticmethod
    def _create_future() -> TilehallFuture[Any]:
        return TilehallFuture()


def live_actors() -> list[dict[str, Any]]:
    """Snapshots of every registered actor, oldest first."""
    out = []
    for ref in ActorRegistry.get_all():
        actor = ref._actor_weakref()
        if actor is None:
            continue
        snap = getattr(actor, "actor_snapshot", None)
        if snap is not None:
            out.append(snap())
        else:
            out.append(
                {
                    "class": ref.actor_class.__name__,
                    "urn": ref.actor_urn,
                    "entity_id": None,
                    "status": "running",
                    "alive": ref.is_alive(),
                    "runtime": "pykka",
                    "inbox_depth": _inbox_depth(ref.actor_inbox),
                    "messages_handled": None,
                    "last_message_at": None,
                    "started_at": None,
                    "handling": None,
                }
            )
    return out


def find_actor(urn: str) -> pykka.Actor | None:
    """The registered actor with this URN, or None."""
    ref = ActorRegistry.get_by_urn(urn)
    return None if ref is None else ref._actor_weakref()


def tell_if_alive(ref: pykka.ActorRef, message: Any) -> bool:
    """Tell ``message`` to ``ref``; False (nothing raised) when that actor has stopped.

    The one place a stopped receiver is tolerated: a reply to an actor that ended first must
    never crash the sender (Pykka raises ``ActorDeadError`` from ``tell``)."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        return False
    return True


# ---------------------------------------------------------------- what actors publish

def published_snapshot(ref: pykka.ActorRef) -> dict[str, Any] | None:
    """What ``ref``'s actor publishes for operators, read without waiting for it: its
    :meth:`~_TypedIntrospectedActor.actor_snapshot` (class, urn, ``status`` — the
    ``debug_status`` the actor rebinds on its own thread —, inbox depth, ...). None once the
    actor has left the registry. Safe from any thread (the /metrics scrape calls it on the
    IOLoop); the caller never touches the actor object itself. O(1): the registry's own
    lookup scans every actor, which made one scrape with 5,400 sessions O(n²), seconds of
    IOLoop."""
    return _published(ref) if ref.is_alive() else None


def published_detail(urn: str) -> dict[str, Any] | None:
    """The snapshot of the registered actor with this URN plus its :meth:`describe` as
    ``detail`` (or ``detail: None`` and ``detail_error`` when describe raised: it reads another
    thread's fields), for /debug/actors/{urn}. None for an unknown URN."""
    ref = ActorRegistry.get_by_urn(urn)
    actor = None if ref is None else ref._actor_weakref()
    row = _published(ref)
    if actor is None or row is None:
        return None
    try:
        row["detail"] = actor.describe()
    except Exception as exc:
        row["detail"] = None
        row["detail_error"] = f"{type(exc).__name__}: {exc}"
    counts = getattr(actor, "message_counts", None)
    row["message_counts"] = counts() if counts is not None else {}
    return row


def _published(ref: pykka.ActorRef | None) -> dict[str, Any] | None:
    actor = None if ref is None else ref._actor_weakref()
    snap = getattr(actor, "actor_snapshot", None)
    return None if snap is None else snap()
