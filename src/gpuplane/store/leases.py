"""Leader lease in the database: at most one holder at a time, and a fence for its writes.

Each lease operation is one atomic ``UPDATE ... WHERE`` in its own short transaction, so two
processes racing for an expired lease cannot both see rowcount 1: the database serialises the
updates and the loser's WHERE clause no longer matches.

**Time is the database's.** Expiry is written and compared with the database's clock
(``db_now``: PostgreSQL ``clock_timestamp()``, SQLite ``julianday('now')``), never with the
caller's, so processes on machines whose clocks disagree still agree on who holds the lease.
SQLite runs inside the calling process, so there "the database's clock" is the clock of the
machine that holds the file, which every process sharing that file also reads: the same clock.

**Epoch (fencing token).** ``epoch`` grows by one whenever a holder takes the lease that it
did not hold (a hand-over, or a take after a release). A grant (``LeaseGrant``) carries the
epoch it was given; ``Store.write(fence=grant)`` checks, inside the write transaction and
before anything else, that the lease still names that holder and epoch and has not expired
(PostgreSQL: ``SELECT ... FOR UPDATE`` of the lease row, so it cannot change hands until the
transaction ends; SQLite: the check runs inside the ``BEGIN IMMEDIATE`` transaction, which no
other writer interleaves with). A stale holder (paused past its TTL, partitioned) therefore
gets ``LeaseLost`` and commits nothing, however late it wakes up.

Holders must renew well before ``ttl_s`` (the control loop renews every ``ttl_s / 3``) and must
stop leading when ``try_acquire``/``renew`` return None or a fenced write raises ``LeaseLost``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Float, case, cast, extract, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gpuplane.domain.errors import Conflict, LeaseLost
from gpuplane.store.tables import LeaseRow

if TYPE_CHECKING:
    from gpuplane.store.db import Store
    from gpuplane.store.tx import Tx

SCHEDULER_LEASE = "scheduler"


def db_now(dialect: str) -> Any:
    """The database's clock as an SQL expression: seconds since the Unix epoch (float).

    PostgreSQL: ``clock_timestamp()`` (the time of the statement, not of the transaction's
    start); SQLite: ``julianday('now')`` converted to Unix seconds (millisecond precision)."""
    if dialect == "postgresql":
        return cast(extract("epoch", func.clock_timestamp()), Float)
    return (func.julianday("now") - 2440587.5) * 86400.0


@dataclass(frozen=True)
class LeaseState:
    name: str
    holder: str | None
    expires_at: float  # database clock, seconds since the epoch
    epoch: int  # increases by one every time the lease changes hands


@dataclass(frozen=True)
class LeaseGrant:
    """What a successful take or renewal gave ``holder``: the epoch to fence writes with and
    the expiry on the database's clock (``ttl_s`` after the database's ``now``)."""

    name: str
    holder: str
    epoch: int
    expires_at: float
    ttl_s: float


class LeaseRepo:
    def __init__(self, store: Store) -> None:
        self._store = store

    def _now(self) -> Any:
        return db_now(self._store.dialect)

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

    def _grant(self, tx: Tx, name: str, holder: str, ttl_s: float) -> LeaseGrant:
        row = tx.session.execute(select(LeaseRow.epoch, LeaseRow.expires_at)
                                 .where(LeaseRow.name == name)).one()
        return LeaseGrant(name, holder, int(row.epoch), float(row.expires_at), ttl_s)

    def try_acquire(self, holder: str, ttl_s: float,
                    name: str = SCHEDULER_LEASE) -> LeaseGrant | None:
        """Take the lease if it is free, expired (database clock), or already ours (then it is
        renewed, and keeps its epoch). A take from anybody else (or after a release) increments
        the epoch. Returns the grant, or None if another holder has it. Never blocks for long."""
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._ensure(name)
        now = self._now()
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
            if result.rowcount != 1:
                return None
            return self._grant(tx, name, holder, ttl_s)

    def renew(self, holder: str, ttl_s: float, name: str = SCHEDULER_LEASE,
              epoch: int | None = None) -> LeaseGrant | None:
        """Extend our unexpired lease (of ``epoch``, when given). None if it expired or someone
        else holds it: stop leading."""
        now = self._now()
        cond = [LeaseRow.name == name, LeaseRow.holder == holder, LeaseRow.expires_at >= now]
        if epoch is not None:
            cond.append(LeaseRow.epoch == epoch)
        with self._store.write() as tx:
            result = tx.session.execute(
                update(LeaseRow).where(*cond).values(expires_at=now + ttl_s)
                .execution_options(synchronize_session=False))
            if result.rowcount != 1:
                return None
            return self._grant(tx, name, holder, ttl_s)

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

    def db_time(self) -> float:
        """The database's clock now (seconds since the epoch)."""
        with self._store.read() as tx:
            return float(tx.session.execute(select(self._now())).scalar_one())

    def check(self, session: Session, grant: LeaseGrant) -> None:
        """The fence: raise ``LeaseLost`` unless ``grant`` is still the live lease. Called by
        ``Store.write(fence=grant)`` as the first statement of the write transaction; on
        PostgreSQL it locks the lease row until the transaction ends."""
        row = session.execute(
            select(LeaseRow.holder, LeaseRow.epoch, LeaseRow.expires_at,
                   self._now().label("now"))
            .where(LeaseRow.name == grant.name)
            .with_for_update()).one_or_none()
        if row is None or row.holder != grant.holder or row.epoch != grant.epoch:
            held = (f"now held by {row.holder} at epoch {row.epoch}"
                    if row is not None and row.holder else "now free")
            raise LeaseLost(f"lease {grant.name!r} of {grant.holder} at epoch {grant.epoch} "
                            f"is {held}; this write is refused")
        if row.expires_at < row.now:
            raise LeaseLost(f"lease {grant.name!r} of {grant.holder} at epoch {grant.epoch} "
                            f"expired {row.now - row.expires_at:.1f} s ago (database clock); "
                            "this write is refused")


class FencedStore:
    """A view of ``store`` whose write transactions are fenced by ``grant`` (see the module
    docstring): what the control loop hands to its writers. Reads are not fenced."""

    def __init__(self, store: Store, grant: LeaseGrant,
                 on_write: Callable[[], None] | None = None) -> None:
        self.store = store
        self.grant = grant
        self.dialect = store.dialect
        self.on_write = on_write  # called as each write transaction begins

    def read(self) -> AbstractContextManager[Tx]:
        return self.store.read()

    def write(self, advisory: bool = False) -> AbstractContextManager[Tx]:
        """A fenced write transaction. ``advisory``: it writes only what no decision reads
        back (pending reasons), so ``on_write`` is not called."""
        if self.on_write is not None and not advisory:
            self.on_write()
        return self.store.write(fence=self.grant)


__all__ = ["SCHEDULER_LEASE", "FencedStore", "LeaseGrant", "LeaseRepo", "LeaseState", "db_now"]
