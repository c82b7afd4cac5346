"""The StorageActor: group commit of ActionEvents, acknowledgements released only after commit.

It runs on a thread of its own (it blocks on PostgreSQL). Each ``Persist`` is buffered; when the
inbox holds no more work (or the batch reaches ``storage.max_batch``) the buffer is committed in
one transaction and every sender is told the outcome. At low load a lone action therefore commits
at once; under load, whatever arrives while a commit is in flight forms the next batch.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import psycopg
import psycopg_pool

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
from actors.vocabulary import RejectCode
from config.settings import Settings
from storage.postgres.actions import VersionConflict, action_landed, commit_batch, find_action
from storage.postgres.audit import close_audit, open_audit

log = logging.getLogger(__name__)


class StorageActor(DedicatedThreadActor):
    """Owns every write to PostgreSQL on the action path."""

    def __init__(self, pool: psycopg_pool.ConnectionPool, settings: Settings, observer: Any = None) -> None:
        super().__init__()
        self.pool = pool
        self.max_batch = settings.storage.max_batch
        self.commit_timeout_s = settings.storage.commit_timeout_s
        self.observer = observer  # metrics/cache hooks: on_batch(size, seconds), on_committed(views)
        self.entity_id = "storage"
        self.debug_status = "idle"
        self._buffer: list[Persist] = []
        self.batches = 0
        self.rows = 0
        self.last_batch_size = 0
        self.failures = 0

    # ---------------------------------------------------------------- messages

    def on_Persist(self, msg: Persist) -> None:
        """Buffer work; commit when nothing else waits in the inbox or the batch is full."""
        self._buffer.append(msg)
        if len(self._buffer) >= self.max_batch or self._inbox_empty():
            self._commit_buffer()

    def on_Flush(self, msg: Flush) -> int:
        """Commit whatever is buffered; returns how many works were committed or failed."""
        n = len(self._buffer)
        self._commit_buffer()
        return n

    def on_LookupAction(self, msg: LookupAction) -> None:
        """Find an old action in the log (a duplicate seq from a previous session)."""
        try:
            with self.pool.connection(timeout=self.commit_timeout_s) as conn:
                found = find_action(conn, msg.character_id, msg.seq)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            log.warning("lookup of seq %s failed: %s", msg.seq, exc)
            found = None
        tell_if_alive(
            msg.reply_to,
            StoredAnswer(msg.seq, found.action_id if found else None, found.persisted_at if found else None),
        )

    def on_AuditSession(self, msg: AuditSession) -> None:
        """Insert the session_audit row at start; close it at the end."""
        try:
            with self.pool.connection(timeout=self.commit_timeout_s) as conn:
                if not msg.ended:
                    open_audit(
                        conn, session_id=msg.session_id, user_id=msg.user_id,
                        character_id=msg.character_id, protocol_version=msg.protocol_version,
                        node_id=msg.node_id, last_action_seq=msg.last_action_seq,
                    )
                else:
                    close_audit(
                        conn, session_id=msg.session_id, end_reason=msg.end_reason,
                        reconnects=msg.reconnects, last_action_seq=msg.last_action_seq,
                    )
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            log.warning("session audit for %s not written: %s", msg.session_id, exc)

    def describe(self) -> dict[str, Any]:
        """Batch counters for /debug/actors."""
        return {
            "batches": self.batches,
            "rows": self.rows,
            "last_batch_size": self.last_batch_size,
            "failures": self.failures,
            "max_batch": self.max_batch,
        }

    # ---------------------------------------------------------------- the group commit

    def _inbox_empty(self) -> bool:
        return len(self.actor_inbox.queue) == 0

    def _commit_buffer(self) -> None:
        works, self._buffer = self._buffer, []
        if not works:
            return
        started = time.monotonic()
        self.debug_status = f"committing {len(works)}"
        failed: dict[int, tuple[RejectCode, str]] = {}
        pending = works
        persisted_at = dt.datetime.now(dt.UTC)
        deadline = started + self.commit_timeout_s
        while pending:
            try:
                self._commit(pending, persisted_at, deadline)
                break
            except VersionConflict as exc:
                # Fail only the conflicting characters' work; retry the rest at once.
                for w in pending:
                    if w.write is not None and w.write.character_id in exc.character_ids:
                        failed[w.work_id] = (RejectCode.CONFLICT, "another writer changed this character")
                pending = [w for w in pending if w.work_id not in failed]
            except (psycopg.Error, psycopg_pool.PoolTimeout, OSError) as exc:
                log.warning("commit of %d works failed: %s", len(pending), exc)
                for w in pending:
                    failed[w.work_id] = (RejectCode.UNAVAILABLE, "the database is unavailable; try again")
                pending = []
        elapsed = time.monotonic() - started
        self.debug_status = "idle"
        committed = [w for w in works if w.work_id not in failed]
        self.batches += 1
        self.rows += sum(len(w.events) for w in committed)
        self.last_batch_size = len(works)
        self.failures += len(failed)
        for w in works:
            if w.work_id in failed:
                code, message = failed[w.work_id]
                tell_if_alive(w.reply_to, PersistFailed(w.work_id, code, message))
            else:
                tell_if_alive(w.reply_to, Persisted(w.work_id, persisted_at))
        if self.observer is not None:
            self.observer.on_batch(len(works), elapsed, committed)

    def _commit(self, works: list[Persist], persisted_at: dt.datetime, deadline: float) -> None:
        """One transaction for ``works``; retries a broken connection until ``deadline``."""
        events = [e for w in works for e in w.events]
        writes = [w.write for w in works if w.write is not None]
        while True:
            timeout = max(0.05, deadline - time.monotonic())
            try:
                with self.pool.connection(timeout=timeout) as conn:
                    commit_batch(conn, events, writes, persisted_at)
                return
            except psycopg.OperationalError:
                # The connection died under us (restart, pg_terminate_backend). If it died
                # during COMMIT the batch may have landed: look before retrying, so a row is
                # never stored twice.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
                if events and self._landed(events[0].action_id, persisted_at, deadline):
                    return

    def _landed(self, action_id: str, persisted_at: dt.datetime, deadline: float) -> bool:
        try:
            with self.pool.connection(timeout=max(0.05, deadline - time.monotonic())) as conn:
                return action_landed(conn, action_id, persisted_at)
        except (psycopg.Error, psycopg_pool.PoolTimeout):
            return False
