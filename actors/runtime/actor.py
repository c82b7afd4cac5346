"""The actor type: :class:`PooledActor`, plugged into Pykka through its documented hooks.

``_create_actor_inbox`` gives it a :class:`~actors.runtime.dispatcher.Mailbox` (or a plain
queue in "threading" mode), ``_create_future`` a :class:`~actors.runtime.future.TilehallFuture`,
and ``_start_actor_loop`` attaches the mailbox to the dispatcher instead of spending a thread.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from itertools import count
from typing import TYPE_CHECKING, Any

import pykka
from pykka import ActorRegistry

from actors.runtime.dispatcher import Mailbox
from actors.runtime.future import TilehallFuture
from actors.runtime.kind import runtime_kind

if TYPE_CHECKING:
    from pykka._envelope import Envelope

__all__ = ["PooledActor"]

logger = logging.getLogger("tilehall.runtime")

_thread_counter = count(0)


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
        return Mailbox() if runtime_kind() == "pooled" else _ThreadInbox()

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
