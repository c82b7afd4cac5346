"""The StorageActor's session audit: ``session_audit`` rows written in batches, not one
transaction (and one fsync) per login or logout.

Each :class:`~actors.messages.AuditSession` is buffered; the buffer is written in one
transaction when the StorageActor's inbox is empty, when it reaches ``max_batch`` rows, after
each group commit of actions, when a short timer fires, and when the actor stops. So an audit row
is durable within about :data:`AUDIT_FLUSH_S` of its message reaching the StorageActor, except
while PostgreSQL is unavailable: then the rows stay buffered (up to :data:`AUDIT_MAX_PENDING`,
the oldest dropped beyond, with a warning) and are written when it is back. Audit rows never
ride in an action's transaction: an audit can neither delay nor fail an ack.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool

from actors.messages import AuditSession
from storage.postgres.audit import write_audits

log = logging.getLogger(__name__)

AUDIT_FLUSH_S = 0.2
"""The longest an audit row waits in the buffer while PostgreSQL is writable."""
AUDIT_RETRY_S = 1.0
"""How often buffered audit rows are tried again while PostgreSQL fails."""
AUDIT_MAX_PENDING = 50_000
"""Buffered audit rows kept while PostgreSQL fails (about 200 bytes each)."""


@dataclass(frozen=True, slots=True)
class FlushAudits:
    """The StorageActor to itself (a timer): write the buffered session_audit rows."""


class AuditBuffer:
    """Audit changes waiting to be written, in arrival order."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max(1, max_batch)
        self._pending: deque[AuditSession] = deque()
        self.written = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, msg: AuditSession) -> None:
        """Buffer one change; past :data:`AUDIT_MAX_PENDING` the oldest is dropped (logged)."""
        self._pending.append(msg)
        if len(self._pending) > AUDIT_MAX_PENDING:
            lost = self._pending.popleft()
            self.dropped += 1
            log.warning("session audit for %s dropped: PostgreSQL has failed for too long", lost.session_id)

    def full(self) -> bool:
        """Whether a batch is ready to go without waiting."""
        return len(self._pending) >= self.max_batch

    def flush(self, pool: psycopg_pool.ConnectionPool, timeout: float) -> bool:
        """Write everything buffered, ``max_batch`` rows per transaction; True when the buffer
        is empty afterwards. A batch PostgreSQL refuses as data (not as an outage) is written
        row by row, and a row it still refuses is dropped with a warning: one bad row must not
        hold back every later one."""
        while self._pending:
            batch = [self._pending[i] for i in range(min(self.max_batch, len(self._pending)))]
            try:
                with pool.connection(timeout=timeout) as conn:
                    write_audits(conn, batch)
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout, OSError) as exc:
                log.warning("session audit: %d rows not written yet (%s); retrying", len(self._pending), exc)
                return False
            except psycopg.Error as exc:
                log.warning("session audit batch refused (%s); writing its rows one by one", exc)
                if not self._write_singly(pool, timeout, batch):
                    return False
            for _ in batch:
                self._pending.popleft()
            self.written += len(batch)
        return True

    def _write_singly(self, pool: psycopg_pool.ConnectionPool, timeout: float, batch: list[Any]) -> bool:
        for msg in batch:
            try:
                with pool.connection(timeout=timeout) as conn:
                    write_audits(conn, [msg])
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout, OSError):
                return False
            except psycopg.Error as exc:
                self.dropped += 1
                log.warning("session audit for %s not written: %s", msg.session_id, exc)
        return True
