"""The rollback chains of the CharacterActor's works in flight to the StorageActor.

A failed commit rolls the actor's state back to the durable one and starts a new ``chain``:
every later work of the old chain was built on the failed one and comes back failed too (the
StorageActor's chain rule), rejected with the first failure's code, so a player never sees a
``conflict`` caused by their own failed work. Plain: no actor, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from actors.character_work import Work


class Chains:
    """The current chain, and the first failure of each broken chain still in flight."""

    def __init__(self) -> None:
        self.current = 0  # the rollback generation: bumped by each failed commit
        self.broken: dict[int, tuple[str, str]] = {}  # chain → the (code, message) that ended it

    def failure_of(self, work: Work) -> tuple[str, str] | None:
        """The (code, message) that broke ``work``'s chain, or None while it is unbroken."""
        return self.broken.get(work.chain)

    def break_chain(self, work: Work, code: str, message: str) -> None:
        """``work`` is the first failure of its chain: remember why, start a new chain."""
        self.broken[work.chain] = (code, message)
        self.current += 1

    def forget_broken(self, inflight: Iterable[Work]) -> None:
        """Drop the record of broken chains no work in flight belongs to any more."""
        live = {w.chain for w in inflight}
        for chain in [c for c in self.broken if c not in live]:
            del self.broken[chain]
