"""The CharacterActor's works in flight to the StorageActor, in rollback chains.

A failed commit rolls the actor's state back to the durable one and starts a new ``chain``:
every later work of the old chain was built on the failed one and comes back failed too (the
StorageActor's chain rule), rejected with the first failure's code, so a player never sees a
``conflict`` caused by their own failed work. Plain: no actor, no I/O.
"""

from __future__ import annotations

from actors.character_work import Work


class Chains:
    """The works in flight by work id, the current chain, and the first failure of each broken one."""

    def __init__(self) -> None:
        self.current = 0  # the rollback generation: bumped by each failed commit
        self.broken: dict[int, tuple[str, str]] = {}  # chain → the (code, message) that ended it
        self.inflight: dict[int, Work] = {}

    def add(self, work_id: int, work: Work) -> None:
        """``work`` goes to storage as ``work_id``."""
        self.inflight[work_id] = work

    def take(self, work_id: int) -> Work:
        """The work storage answered for (it is no longer in flight)."""
        return self.inflight.pop(work_id)

    def failure_of(self, work: Work) -> tuple[str, str] | None:
        """The (code, message) that broke ``work``'s chain, or None while it is unbroken."""
        return self.broken.get(work.chain)

    def break_chain(self, work: Work, code: str, message: str) -> None:
        """``work`` is the first failure of its chain: remember why, start a new chain."""
        self.broken[work.chain] = (code, message)
        self.current += 1

    def forget_broken(self) -> None:
        """Drop the record of broken chains no work in flight belongs to any more."""
        live = {w.chain for w in self.inflight.values()}
        for chain in [c for c in self.broken if c not in live]:
            del self.broken[chain]

    def drop_all(self) -> list[Work]:
        """Forget every work in flight (the actor ends without answering them); returns them."""
        works = list(self.inflight.values())
        self.inflight.clear()
        return works
