"""The node's liveness sweep over a wheel of deadlines (IOLoop thread only).

A socket must say hello in time, then keep sending frames (pings count) and keep an unexpired
token. Checking every socket every second costs a visit per socket per second (5,400 visits/s
with 5,000 idle players); here each socket sits in the one-second slot of its next possible
deadline and is visited only then. The visit (``check_liveness``) either ends the socket or
returns its next deadline, computed from what happened meanwhile (a frame received, a reauth):
about one visit per socket per idle timeout.
"""

from __future__ import annotations

import math
from typing import Protocol


class Watched(Protocol):
    """A socket the wheel watches."""

    def check_liveness(self, now: float, wall: float) -> float | None:
        """End the socket if a deadline passed; else return its next deadline (monotonic
        seconds), or None when there is nothing left to watch."""


class LivenessWheel:
    """Sockets bucketed by the whole second of their next deadline."""

    def __init__(self) -> None:
        self._slots: dict[int, set[Watched]] = {}
        self._slot_of: dict[Watched, int] = {}

    def __len__(self) -> int:
        return len(self._slot_of)

    def watch(self, sock: Watched, deadline: float) -> None:
        """Visit ``sock`` at the first sweep at or after ``deadline`` (an earlier slot it
        already has is kept: the visit computes the real deadline anyway)."""
        slot = math.ceil(deadline)
        current = self._slot_of.get(sock)
        if current is not None:
            if current <= slot:
                return
            self._slots[current].discard(sock)
        self._slot_of[sock] = slot
        self._slots.setdefault(slot, set()).add(sock)

    def forget(self, sock: Watched) -> None:
        """Stop watching ``sock`` (it closed)."""
        slot = self._slot_of.pop(sock, None)
        if slot is not None:
            bucket = self._slots.get(slot)
            if bucket is not None:
                bucket.discard(sock)
                if not bucket:
                    del self._slots[slot]

    def sweep(self, now: float, wall: float) -> int:
        """Visit every socket whose slot is due; returns how many were visited."""
        due = [s for s in self._slots if s <= now]
        visited = 0
        for slot in sorted(due):
            for sock in self._slots.pop(slot):
                if self._slot_of.pop(sock, None) is None:
                    continue  # forgotten meanwhile (a visit closed it)
                visited += 1
                deadline = sock.check_liveness(now, wall)
                if deadline is not None:
                    self.watch(sock, max(deadline, now + 1e-3))
        return visited
