"""The runtime's futures: :class:`TilehallFuture`, callback-driven and awaitable on asyncio.

A Pykka future that completes through callbacks instead of a blocked thread, so pooled actors
and the IOLoop can both wait for an answer without blocking: ``add_done_callback`` for actors,
``await`` (and :func:`ask_async`) for coroutines. ``get`` still blocks, for other threads and
tests, and refuses to on a pool worker (:class:`BlockingInPoolError`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import sys
import threading
from collections.abc import Callable, Generator, Iterable
from typing import Any, TypeVar

import pykka
from pykka import ActorDeadError, messages

from actors.runtime.dispatcher import in_pool_worker

__all__ = ["BlockingInPoolError", "TilehallFuture", "ask_async", "stop_future"]

logger = logging.getLogger("tilehall.runtime")

T = TypeVar("T")
M = TypeVar("M")


class BlockingInPoolError(RuntimeError):
    """A pool worker tried to wait on an unresolved future (pooled actors must never block)."""


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
            if in_pool_worker():
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



async def ask_async(ref: pykka.ActorRef[Any], message: Any, timeout: float | None) -> Any:
    """The actor's answer to ``message``, awaited without blocking the IOLoop.

    Raises ``ActorDeadError`` (the actor had stopped, or stops before handling it),
    ``TimeoutError`` (no answer within ``timeout`` seconds; the message may still be handled
    later, its answer dropped), or what the handler raised. ``ref`` must be a tilehall actor
    (its asks return a :class:`TilehallFuture`).
    """
    future = ref.ask(message, block=False)
    if not isinstance(future, TilehallFuture):
        raise TypeError(f"{ref} is not a tilehall actor: its ask returned {type(future).__name__}")
    return await asyncio.wait_for(future, timeout)
