"""Leader lease in the database: at most one holder at a time, across processes and machines.

Each operation is one atomic ``UPDATE ... WHERE`` in its own short transaction, so two processes
racing for an expired lease cannot both see rowcount 1: the database serialises the updates and
the loser's WHERE clause no longer matches. ``now`` is the caller's wall clock (seconds); holders
must renew well before ``ttl_s`` (the control loop renews every ``ttl_s / 3``) and must stop
scheduling when ``renew`` returns False.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import case, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from gpuplane.domain.errors import Conflict
from gpuplane.store.tables import LeaseRow

if TYPE_CHECKING:
    from gpuplane.store.db import Store

SCHEDULER_LEASE = "scheduler"


@dataclass(frozen=True)
class LeaseState:
    name: str
    holder: str | None
    expires_at: float
    epoch: int  # increases by one every time the lease changes hands


class LeaseRepo:
    def __init__(self, store: Store) -> None:
        self._store = store

    def _ensure(self, name: str) -> None:
        with self._store.read() as tx:
            if tx.session.get(LeaseRow, name) is not None:
                return
        try:
            with self._store.write() as tx:
                tx.session.execute(insert(LeaseRow).values(name=name, holder=None,
                                                           expires_at=0.0, epoch=0))
        except (IntegrityError, Conflict):
            pass  # somebody else created it: fine

    def try_acquire(self, holder: str, ttl_s: float, now: float,
                    name: str = SCHEDULER_LEASE) -> bool:
        """Take the lease if it is free, expired, or already ours (then it is renewed).

        Returns True if ``holder`` holds it until ``now + ttl_s``. Never blocks for long."""
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._ensure(name)
        with self._store.write() as tx:
            result = tx.session.execute(
                update(LeaseRow)
                .where(LeaseRow.name == name,
                       or_(LeaseRow.holder == holder, LeaseRow.holder.is_(None),
                           LeaseRow.expires_at < now))
                .values(holder=holder, expires_at=now + ttl_s,
                        epoch=case((LeaseRow.holder == holder, LeaseRow.epoch),
                                   else_=LeaseRow.epoch + 1))
                .execution_options(synchronize_session=False))
            return result.rowcount == 1

    def renew(self, holder: str, ttl_s: float, now: float, name: str = SCHEDULER_LEASE) -> bool:
        """Extend our unexpired lease. False if it expired or someone else holds it: stop work."""
        with self._store.write() as tx:
            result = tx.session.execute(
                update(LeaseRow)
                .where(LeaseRow.name == name, LeaseRow.holder == holder,
                       LeaseRow.expires_at >= now)
                .values(expires_at=now + ttl_s)
                .execution_options(synchronize_session=False))
            return result.rowcount == 1

    def release(self, holder: str, name: str = SCHEDULER_LEASE) -> bool:
        """Give the lease up if we hold it (idempotent). True if we held it."""
        with self._store.write() as tx:
            result = tx.session.execute(
                update(LeaseRow)
                .where(LeaseRow.name == name, LeaseRow.holder == holder)
                .values(holder=None, expires_at=0.0)
                .execution_options(synchronize_session=False))
            return result.rowcount == 1

    def get(self, name: str = SCHEDULER_LEASE) -> LeaseState | None:
        with self._store.read() as tx:
            row = tx.session.execute(select(LeaseRow).where(LeaseRow.name == name)).scalar_one_or_none()
            if row is None:
                return None
            return LeaseState(row.name, row.holder, row.expires_at, row.epoch)
