"""Awaiting an actor's answer on the IOLoop: the one asyncio bridge of the transport room.

Every transport caller that needs an answer (the directory's kick and claim, the node's final
flush, the cluster's peer count, the shutdown's pending count) goes through :func:`ask`; it
never blocks the IOLoop thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

import pykka

log = logging.getLogger(__name__)


async def ask(ref: pykka.ActorRef, message: Any, timeout: float) -> Any:
    """The actor's answer to ``message``, awaited without blocking the IOLoop. Raises
    ActorDeadError (it had stopped or stops first), TimeoutError, or what the handler raised."""
    future = ref.ask(message, block=False)
    return await asyncio.wait_for(asyncio.wrap_future(_as_concurrent(future)), timeout)


async def ask_quietly(ref: pykka.ActorRef, message: Any, timeout: float) -> None:
    """Tell ``message`` and wait until the actor handled it; a dead, crashing or slow actor
    ends the wait (at most ``timeout`` seconds) without an error."""
    try:
        await ask(ref, message, timeout)
    except Exception as exc:
        log.debug("%s not confirmed by %s: %s", type(message).__name__, ref, exc)


async def await_future(future: Any, timeout: float) -> Any:
    """A Pykka future (e.g. a proxy call's) awaited like :func:`ask` awaits an answer."""
    return await asyncio.wait_for(asyncio.wrap_future(_as_concurrent(future)), timeout)


def _as_concurrent(future: Any) -> Any:
    """A concurrent.futures.Future resolved by a Pykka future's callback (never blocks)."""
    out: concurrent.futures.Future = concurrent.futures.Future()

    def done(f: Any) -> None:
        try:
            out.set_result(f.get())
        except Exception as exc:
            out.set_exception(exc)

    future.add_done_callback(done)
    return out
