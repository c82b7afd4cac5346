"""The StorageActor: group commit of ActionEvents, acknowledgements released only after commit.

It runs on a thread of its own (it blocks on PostgreSQL). Each ``Persist`` is buffered; when the
inbox holds no more work (or the batch reaches ``storage.max_batch``) the buffer is committed in
one transaction and every sender is told the outcome. At low load a lone action therefore commits
at once; under load, whatever arrives while a commit is in flight forms the next batch.

Faults stay contained to the characters they concern:

- a character whose row another transaction holds locked is *parked*: its works wait, in order,
  and are retried with the next batches (or a timer), failed ``unavailable`` after
  ``storage.commit_timeout_s``; every other character commits meanwhile;
- a fenced write (the row's ownership epoch moved on) fails ``conflict`` with ``fenced=True``;
- a failed work breaks its character's chain: later works of that chain were computed on top of
  it and fail at once with the same code, until a Persist with a newer chain arrives;
- a commit whose connection broke (it may have landed) is resolved by looking it up before any
  answer: never ``unavailable`` for work that may be stored.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool
from pykka import messages as pykka_messages

from actors.base import DedicatedThreadActor, tell_if_alive
from actors.messages import (
    AuditSession,
    Flush,
    LookupAction,
    Persist,
    Persisted,
    PersistFailed,
    StoredAnswer,
)
from actors.storage_audit import AUDIT_FLUSH_S, AUDIT_RETRY_S, AuditBuffer, FlushAudits
from actors.storage_faults import ChainBreaks, ParkedWorks, character_of, work_key
from actors.timers import TimerHandle, tell_later
from actors.vocabulary import RejectCode
from config.settings import Settings
from storage.postgres.actions import (
    BatchRefused,
    CommitOutcomeUnknown,
    Fenced,
    RowsBusy,
    SeqAlreadyStored,
    VersionConflict,
    batch_landed,
    commit_batch,
    find_action,
)
from storage.postgres.db import can_write

log = logging.getLogger(__name__)

RETRY_PARKED_S = 0.05
"""How often parked works are retried when no other batch comes along."""
PROBE_HEALTH_S = 1.0
"""How often a failing StorageActor probes whether PostgreSQL is writable again."""
RESOLVE_RETRY_S = 0.1
"""Pause between lookups of a commit whose outcome is unknown."""

_UNAVAILABLE = "the database is unavailable; try again"
_BUSY = "the character is busy in the database; try again"


@dataclass(frozen=True, slots=True)
class RetryParked:
    """To itself (a timer): retry the parked works."""


@dataclass(frozen=True, slots=True)
class ProbeHealth:
    """To itself (a timer) while commits fail: is PostgreSQL writable again?"""


class _Stopping(Exception):
    """The actor was asked to stop while it was resolving an ambiguous commit."""


class StorageActor(DedicatedThreadActor):
    """Owns every write to PostgreSQL on the action path."""

    def __init__(self, pool: psycopg_pool.ConnectionPool, settings: Settings, observer: Any = None) -> None:
        super().__init__()
        self.pool = pool
        self.max_batch = settings.storage.max_batch
        self.commit_timeout_s = settings.storage.commit_timeout_s
        # Hooks: on_batch(size, seconds, committed), and if present on_commit_health(failing_since)
        # and on_storage_died(exc).
        self.observer = observer
        self.entity_id = "storage"
        self.debug_status = "idle"
        self._buffer: list[Persist] = []
        self._parked = ParkedWorks()
        self._retry_timer: TimerHandle | None = None
        self._breaks = ChainBreaks()
        self._audits = AuditBuffer(self.max_batch)
        self._audit_timer: TimerHandle | None = None
        self.failing_since: float | None = None
        """Monotonic time of the first failed commit since the last success (None: committing
        fine). Rebound only by the actor's thread; read by /readyz from any thread."""
        self.parked = 0
        self.batches = 0
        self.rows = 0
        self.last_batch_size = 0
        self.failures = 0

    def on_failure(self, exception_type: Any, exception_value: BaseException | None, traceback: Any) -> None:
        """The actor died of an exception: tell the observer (the node marks itself unready)."""
        log.error("storage actor died: %r", exception_value)
        died = getattr(self.observer, "on_storage_died", None)
        if died is not None:
            died(exception_value)

    # ---------------------------------------------------------------- messages

    def on_Persist(self, msg: Persist) -> None:
        """Buffer work (or park it behind its character's parked works, or fail it at once when
        its chain is broken); commit when nothing else waits in the inbox or the batch is full."""
        character_id = character_of(msg)
        if self._fail_if_broken(msg):
            return
        if character_id in self._parked:
            self._parked.park(msg, time.monotonic() + self.commit_timeout_s)
        else:
            self._buffer.append(msg)
        if len(self._buffer) >= self.max_batch or self._inbox_empty():
            self._commit_buffer()

    def _fail_if_broken(self, work: Persist) -> bool:
        """Fail ``work`` at once when it was built on a failed work of its character (True)."""
        failure = self._breaks.failure_of(work)
        if failure is None:
            return False
        code, message = failure
        log.info("work %s of character %s was built on a failed one (chain %s): player told %s",
                 work.work_id, character_of(work), work.chain, code)
        self.failures += 1
        tell_if_alive(work.reply_to, PersistFailed(work.work_id, code, message))
        return True

    def on_RetryParked(self, msg: RetryParked) -> None:
        """Timer: retry the parked works (with whatever else is buffered)."""
        self._retry_timer = None
        self._commit_buffer()

    def on_Flush(self, msg: Flush) -> int:
        """Commit whatever is buffered, and wait for the parked works to commit or time out
        (at most ``commit_timeout_s``: graceful shutdown asks this, and every work it answers is
        answered before the node stops); returns how many works were committed or failed."""
        n = len(self._buffer) + len(self._parked)
        self._commit_buffer()
        while self._parked:
            time.sleep(RETRY_PARKED_S)
            self._commit_buffer()
        return n

    def on_LookupAction(self, msg: LookupAction) -> None:
        """Find a resent seq in ``action_seq``; answer :class:`StoredAnswer` to ``reply_to`` (only
        if it is still alive). A lookup that keeps failing for ``commit_timeout_s`` is not
        answered at all: "not stored" could be wrong."""
        deadline = time.monotonic() + self.commit_timeout_s
        while True:
            try:
                with self.pool.connection(timeout=max(0.05, deadline - time.monotonic())) as conn:
                    found = find_action(conn, msg.character_id, msg.seq)
                break
            except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
                if time.monotonic() >= deadline:
                    log.warning(
                        "lookup of seq %s of character %s failed (%s); not answered",
                        msg.seq, msg.character_id, exc,
                    )
                    return
                time.sleep(RESOLVE_RETRY_S)
        answer = (
            StoredAnswer(msg.seq, found.action_id, found.persisted_at, found.action_type, found.payload)
            if found is not None
            else StoredAnswer(msg.seq, None)
        )
        if not tell_if_alive(msg.reply_to, answer):
            log.info("lookup of seq %s of character %s: the asker has stopped", msg.seq, msg.character_id)

    def on_receive(self, message: Any) -> Any:
        """Dispatch; then, after any message but a Persist, commit the works buffered if nothing
        else waits (their Persist saw this message waiting and left the commit to a later turn)."""
        result = super().on_receive(message)
        if self._buffer and type(message) is not Persist and self._inbox_empty():
            self._commit_buffer()  # the audit rows follow the acks' batch
        return result

    def on_AuditSession(self, msg: AuditSession) -> None:
        """Buffer a session_audit change; written in batches (:mod:`actors.storage_audit`)."""
        self._audits.add(msg)
        if self._audits.full() or (self._inbox_empty() and not self._buffer):
            self._flush_audits()
        elif self._audit_timer is None:
            self._audit_timer = tell_later(AUDIT_FLUSH_S, self.actor_ref, FlushAudits())

    def on_FlushAudits(self, msg: FlushAudits) -> None:
        """Timer: write the buffered audit rows (or try again, while PostgreSQL fails)."""
        self._audit_timer = None
        self._flush_audits()

    def _flush_audits(self) -> None:
        if self._audits and not self._audits.flush(self.pool, self.commit_timeout_s) and self._audit_timer is None:
            self._audit_timer = tell_later(AUDIT_RETRY_S, self.actor_ref, FlushAudits())

    def on_stop(self) -> None:
        """Stopping: the buffered audit rows get one last try."""
        self._flush_audits()

    def describe(self) -> dict[str, Any]:
        """Batch counters for /debug/actors."""
        fields = ("batches", "rows", "last_batch_size", "failures", "max_batch", "parked", "failing_since")
        return {name: getattr(self, name) for name in fields} | {"audit_pending": len(self._audits)}

    # ---------------------------------------------------------------- the group commit

    def _inbox_empty(self) -> bool:
        return len(self.actor_inbox.queue) == 0

    def _stop_requested(self) -> bool:
        try:
            return any(
                isinstance(getattr(e, "message", None), pykka_messages._ActorStop)  # noqa: SLF001
                for e in list(self.actor_inbox.queue)
            )
        except RuntimeError:  # the deque changed while we looked: look next time
            return False

    def _commit_buffer(self) -> None:
        retry, deadlines, expired = self._parked.take_all()
        works = retry + self._buffer
        self._buffer = []
        failed: dict[int, tuple[str, str, bool]] = {}
        for w in expired:
            log.warning(
                "work %s of character %s: its row stayed locked for %.1f s; player told %s",
                w.work_id, character_of(w), self.commit_timeout_s, RejectCode.UNAVAILABLE,
            )
            failed[work_key(w)] = (RejectCode.UNAVAILABLE, _BUSY, False)
        self._answer_failed(expired, failed)
        works = [w for w in works if not self._fail_if_broken(w)]
        if works:
            self._run_batch(works, deadlines, {})
        self.parked = len(self._parked)
        if self._parked and self._retry_timer is None:
            self._retry_timer = tell_later(RETRY_PARKED_S, self.actor_ref, RetryParked())
        self._flush_audits()  # after the acks' batch: an audit never delays one

    def _run_batch(self, works: list[Persist], deadlines: dict[int, float], failed: dict) -> None:
        started = time.monotonic()
        self.debug_status = f"committing {len(works)}"
        pending = works
        persisted_at = dt.datetime.now(dt.UTC)
        deadline = started + self.commit_timeout_s
        unavailable = False
        committed_any = False
        while pending:
            try:
                self._commit(pending, persisted_at, deadline)
                committed_any = True
                break
            except RowsBusy as exc:
                for w in pending:
                    if character_of(w) in exc.character_ids:
                        self._parked.park(w, deadlines.get(work_key(w), started + self.commit_timeout_s))
                log.info("rows of %d character(s) locked elsewhere; their works wait", len(exc.character_ids))
            except Fenced as exc:
                for cid, (ours, theirs) in exc.epochs.items():
                    log.warning(
                        "character %s fenced: write epoch %s, row epoch %s; player told %s",
                        cid, ours, theirs, RejectCode.CONFLICT,
                    )
                self._fail(pending, exc, failed, "another owner took this character", fenced=True)
            except VersionConflict as exc:
                for cid in exc.character_ids:
                    log.warning("character %s: version conflict; player told %s", cid, RejectCode.CONFLICT)
                self._fail(pending, exc, failed, "another writer changed this character")
            except SeqAlreadyStored as exc:
                for cid, seqs in exc.seqs.items():
                    log.warning(
                        "character %s: seq %s already stored; player told %s",
                        cid, sorted(seqs), RejectCode.CONFLICT,
                    )
                self._fail(pending, exc, failed, "this seq was already stored")
            except _Stopping:
                log.warning("stopping while a commit's outcome is unknown: %d works not answered", len(pending))
                for w in pending:
                    failed[work_key(w)] = None  # no answer at all: it may have landed
                pending = []
            except (psycopg.Error, psycopg_pool.PoolTimeout, OSError) as exc:
                log.warning("commit of %d works failed: %s; players told %s", len(pending), exc, RejectCode.UNAVAILABLE)
                for w in pending:
                    failed[work_key(w)] = (RejectCode.UNAVAILABLE, _UNAVAILABLE, False)
                unavailable = True
                pending = []
            parked = self._parked.keys()
            pending = [w for w in pending if work_key(w) not in failed and work_key(w) not in parked]
        elapsed = time.monotonic() - started
        self.debug_status = "idle"
        parked = self._parked.keys()
        done = [w for w in works if work_key(w) not in parked]
        committed = [w for w in done if work_key(w) not in failed]
        self.batches += 1
        self.rows += sum(len(w.events) for w in committed)
        self.last_batch_size = len(works)
        self._set_health(unavailable, committed_any)
        for w in done:
            if work_key(w) not in failed:
                tell_if_alive(w.reply_to, Persisted(w.work_id, persisted_at))
        self._answer_failed(done, failed)
        if self.observer is not None:
            self.observer.on_batch(len(works), elapsed, committed)

    def _fail(
        self, pending: list[Persist], exc: BatchRefused, failed: dict, message: str, *, fenced: bool = False
    ) -> None:
        for w in pending:
            if character_of(w) in exc.character_ids:
                failed[work_key(w)] = (RejectCode.CONFLICT, message, fenced)

    def _answer_failed(self, works: list[Persist], failed: dict) -> None:
        """Tell the failed works' senders, and break their characters' chains."""
        for w in works:
            outcome = failed.get(work_key(w))
            if outcome is None:
                continue
            code, message, fenced = outcome
            self._breaks.record(w, code, message)
            if character_of(w) is not None:
                # Its later works already parked were built on this one: they fail with it.
                for later in self._parked.pop(character_of(w)):
                    tell_if_alive(later.reply_to, PersistFailed(later.work_id, code, message, fenced))
                    self.failures += 1
            self.failures += 1
            tell_if_alive(w.reply_to, PersistFailed(w.work_id, code, message, fenced))

    def _set_health(self, unavailable: bool, committed: bool) -> None:
        before = self.failing_since
        if committed:
            self.failing_since = None
        elif unavailable and before is None:
            self.failing_since = time.monotonic()
        if self.failing_since != before:
            hook = getattr(self.observer, "on_commit_health", None)
            if hook is not None:
                hook(self.failing_since)
            if self.failing_since is not None:
                tell_later(PROBE_HEALTH_S, self.actor_ref, ProbeHealth())

    def on_ProbeHealth(self, msg: ProbeHealth) -> None:
        """While commits fail and no player acts, learn that PostgreSQL is back (the node's
        /readyz turns 200 again without waiting for the next action)."""
        if self.failing_since is None:
            return
        if can_write(self.pool, timeout=PROBE_HEALTH_S):
            log.info("storage: PostgreSQL writable again")
            self._set_health(False, True)
        else:
            tell_later(PROBE_HEALTH_S, self.actor_ref, ProbeHealth())

    def _commit(self, works: list[Persist], persisted_at: dt.datetime, deadline: float) -> None:
        """One transaction for ``works``; retries a broken connection until ``deadline``.

        A connection that broke during the transaction leaves its outcome unknown: it is looked
        up (until an answer comes) before anything else, so a batch is never stored twice and
        never answered unavailable when it landed."""
        events = [e for w in works for e in w.events]
        writes = [w.write for w in works if w.write is not None]
        while True:
            timeout = max(0.05, deadline - time.monotonic())
            try:
                with self.pool.connection(timeout=timeout) as conn:
                    commit_batch(conn, events, writes, persisted_at)
                return
            except CommitOutcomeUnknown as exc:
                log.warning("%s; looking up whether %d works landed", exc, len(works))
                if self._landed(events, writes, persisted_at, exc.backend_pid):
                    return
                if time.monotonic() >= deadline:
                    raise psycopg.OperationalError("commit did not land before the timeout") from exc
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout):
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.05)

    def _landed(self, events: list, writes: list, persisted_at: dt.datetime, backend_pid: int) -> bool:
        """Whether the batch whose connection (to ``backend_pid``) broke landed. Asks until
        PostgreSQL answers; "not landed" only once that backend is gone (it cannot commit any
        more). Raises :class:`_Stopping` when the actor is asked to stop meanwhile."""
        while True:
            try:
                with self.pool.connection(timeout=self.commit_timeout_s) as conn:
                    landed = batch_landed(conn, events, writes, persisted_at, backend_pid)
                if landed is not None:
                    return landed
            except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
                log.warning("looking up an unknown commit failed: %s; asking again", exc)
            if self._stop_requested():
                raise _Stopping()
            time.sleep(RESOLVE_RETRY_S)
