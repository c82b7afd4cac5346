"""Delayed tells: one scheduler thread for every timer (respawns, reconnect windows, idle checks).

Pooled actors must never sleep; they ask this scheduler to tell them a message later.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any

import pykka

from actors.base import tell_if_alive


class TimerHandle:
    """A scheduled tell; :meth:`cancel` prevents it if it has not fired yet."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        """Do not deliver this timer's message."""
        self.cancelled = True


class _Scheduler:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle, Any, Any]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def tell_later(self, delay_s: float, ref: pykka.ActorRef, message: Any) -> TimerHandle:
        handle = TimerHandle()
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay_s, next(self._seq), handle, ref, message))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="tilehall-timers", daemon=True)
                self._thread.start()
            self._cond.notify()
        return handle

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                _, _, handle, ref, message = heapq.heappop(self._heap)
            if not handle.cancelled:
                tell_if_alive(ref, message)


_scheduler = _Scheduler()


def tell_later(delay_s: float, ref: pykka.ActorRef, message: Any) -> TimerHandle:
    """Tell ``message`` to ``ref`` after ``delay_s`` seconds (dropped if the actor is dead)."""
    return _scheduler.tell_later(delay_s, ref, message)
