"""The StorageActor's bookkeeping of faults that concern one character only: the works parked
behind a row locked elsewhere, and the chains broken by a failed work. Pure: no actor, no I/O."""

from __future__ import annotations

import time
from dataclasses import dataclass

from actors.messages import Persist


def character_of(work: Persist) -> str | None:
    """The character a work writes (None for a work with neither write nor event)."""
    if work.write is not None:
        return work.write.character_id
    return work.events[0].character_id if work.events else None


def work_key(work: Persist) -> int:
    """What tells one work from another inside the StorageActor. Not ``work_id``: each
    character actor numbers its own works, so two characters' works share ids."""
    return id(work)


@dataclass(frozen=True, slots=True)
class _Break:
    epoch: int | None  # the owner epoch of the failed work's writer
    chain: int
    code: str
    message: str
    base: int | None  # the version the failed work expected (None: it wrote no row)


class ChainBreaks:
    """A failed work breaks its character's chain: the later works of the same owner and chain
    were computed on top of it and must fail with the same code, without touching PostgreSQL.
    A newer chain (the character rolled back), another owner epoch (a new owner started from the
    row) or a write from the version the failed work started from ends the break."""

    def __init__(self) -> None:
        self._broken: dict[str, _Break] = {}

    def record(self, work: Persist, code: str, message: str) -> None:
        """``work`` failed with ``code``: break its chain."""
        cid = character_of(work)
        if cid is None:
            return
        epoch = work.write.owner_epoch if work.write is not None else None
        base = work.write.expected_version if work.write is not None else None
        before = self._broken.get(cid)
        if before is not None and before.chain == work.chain and before.base is not None:
            base = before.base if base is None else min(base, before.base)
        self._broken[cid] = _Break(epoch, work.chain, code, message, base)

    def failure_of(self, work: Persist) -> tuple[str, str] | None:
        """(code, message) when ``work`` was built on a failed one and must fail too, else None
        (and the break ends if ``work`` is not part of it)."""
        cid = character_of(work)
        broken = self._broken.get(cid) if cid is not None else None
        if broken is None:
            return None
        write = work.write
        other_owner = write is not None and broken.epoch is not None and write.owner_epoch != broken.epoch
        from_durable = write is not None and broken.base is not None and write.expected_version <= broken.base
        if work.chain > broken.chain or other_owner or from_durable:
            del self._broken[cid]
            return None
        return broken.code, broken.message


class ParkedWorks:
    """Works of characters whose row another transaction holds locked, by character in arrival
    order, each with the monotonic time after which it is failed."""

    def __init__(self) -> None:
        self._queues: dict[str | None, list[tuple[Persist, float]]] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def __contains__(self, character_id: str | None) -> bool:
        return character_id in self._queues

    def park(self, work: Persist, deadline: float) -> None:
        """Keep ``work`` until its character's row is free again (or ``deadline`` passed)."""
        self._queues.setdefault(character_of(work), []).append((work, deadline))

    def pop(self, character_id: str | None) -> list[Persist]:
        """Take every parked work of one character (its chain just broke)."""
        return [w for w, _ in self._queues.pop(character_id, [])]

    def keys(self) -> set[int]:
        """The :func:`work_key` of every parked work."""
        return {work_key(w) for q in self._queues.values() for w, _ in q}

    def take_all(self) -> tuple[list[Persist], dict[int, float], list[Persist]]:
        """Empty the park: the works to retry (oldest first), their deadlines (by
        :func:`work_key`), and the works of
        characters whose first parked work waited past its deadline (all of theirs expire)."""
        now = time.monotonic()
        retry: list[Persist] = []
        deadlines: dict[int, float] = {}
        expired: list[Persist] = []
        for queue in self._queues.values():
            if queue[0][1] <= now:
                expired.extend(w for w, _ in queue)
                continue
            for w, deadline in queue:
                retry.append(w)
                deadlines[work_key(w)] = deadline
        self._queues = {}
        return retry, deadlines, expired
