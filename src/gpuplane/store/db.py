"""The database handle: engine set-up (SQLite WAL or PostgreSQL), migrations, transactions.

``Store.read()`` and ``Store.write()`` yield a ``Tx`` carrying one repository per concept.
Keep transactions short and never call the network inside one (STYLE habit 8).

Write transactions are serialised by default on both databases, so both behave the same and
writers can never deadlock (they lock rows in different orders: workloads, tasks, hosts, the
audit head): on SQLite a write transaction starts with ``BEGIN IMMEDIATE``; on PostgreSQL its
first statement takes a transaction-scoped advisory lock. Reads never wait (WAL / MVCC).
Decisions made on an earlier read are still checked by generation-guarded updates
(``Conflict``).

``write(serial=False)`` skips the advisory lock on PostgreSQL (SQLite is serial anyway): for
writes whose correctness rests on row locks and constraints alone, which only insert new rows
and append to the audit chain (its head row lock orders appenders; the head is the last row
such a writer locks, so it cannot deadlock with a serialised writer). Submitting a workload is
one: a unique constraint keeps names unique per project, a foreign key keeps the project.
Many such writers run at once, one API process or several.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from gpuplane.domain.errors import Conflict, GpuplaneError
from gpuplane.store.leases import LeaseGrant, LeaseRepo
from gpuplane.store.tx import Tx


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=16, max_overflow=48, pool_timeout=60)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn) -> None:  # noqa: ANN001
            immediate = conn.get_execution_options().get("gpuplane_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=30, pool_timeout=60,
                         json_deserializer=_json_loads)


_decode_json = json.JSONDecoder().decode


def _json_loads(data: bytes | str) -> Any:
    """psycopg hands JSON columns over as UTF-8 bytes; ``json.loads`` would first guess their
    encoding (a fifth of the decoding time when the loop reads thousands of JSON values)."""
    return _decode_json(data.decode() if isinstance(data, bytes) else data)


class StoreUnavailable(GpuplaneError):
    """The database did not answer in time (down, or locked longer than the busy timeout).
    Nothing was changed; retrying later is safe."""

    def __init__(self, detail: str) -> None:
        super().__init__(code="gpuplane.store.unavailable",
                         detail=f"the database is unavailable or busy ({detail}); retry shortly")


_PG_WRITE_LOCK = 0x67707771  # transaction-scoped advisory lock key of write transactions


class Store:
    """One database. Thread-safe; create one per process and share it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self.dialect = self.engine.dialect.name
        self.leases = LeaseRepo(self)
        self._migrated = False
        self._lock = threading.Lock()
        # SQLite: writers of this process queue on a lock here instead of in SQLite's busy
        # handler, which sleeps in growing steps (latency spikes under load). Other processes
        # still queue in the busy handler. PostgreSQL queues in its lock manager.
        self._writer = threading.RLock() if self.dialect == "sqlite" else contextlib.nullcontext()

    @classmethod
    def from_settings(cls, settings) -> Store:  # noqa: ANN001 - avoid importing settings here
        return cls(settings.database_url)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent, safe with two processes
        on PostgreSQL: an advisory lock serialises them)."""
        from gpuplane.store.migrations import upgrade_to_head

        with self._lock:
            upgrade_to_head(self.engine)
            self._migrated = True

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read transaction on one consistent snapshot (SQLite WAL: by nature; PostgreSQL:
        REPEATABLE READ), so what the control loop reads in one block fits together. Anything
        written inside it is rolled back."""
        try:
            with self.engine.connect() as conn:
                if self.dialect == "postgresql":
                    conn.execution_options(isolation_level="REPEATABLE READ")
                with Session(bind=conn, expire_on_commit=False, autoflush=True) as session:
                    session.begin()
                    try:
                        yield Tx(session, self.dialect)
                    finally:
                        session.rollback()
        except (OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(type(exc.orig if hasattr(exc, "orig") else exc).__name__
                                   ) from exc

    @contextmanager
    def write(self, fence: LeaseGrant | None = None, serial: bool = True) -> Iterator[Tx]:
        """A write transaction, committed when the block ends without an exception.

        ``fence``: a lease grant (``store/leases.py``); the transaction first checks that the
        grant is still the live lease and raises ``LeaseLost`` (nothing written) if not.
        ``serial=False``: no advisory lock on PostgreSQL (see the module docstring for which
        writes may do without it).
        A unique-constraint race lost to a concurrent writer (two creates of one name on
        PostgreSQL) surfaces as ``Conflict(gpuplane.conflict)``, never as a driver error."""
        try:
            with self._writer, self.engine.connect() as conn:
                conn.execution_options(gpuplane_write=True)
                with Session(bind=conn, expire_on_commit=False, autoflush=True) as session:
                    with session.begin():
                        if self.dialect == "postgresql" and serial:
                            session.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                                            {"k": _PG_WRITE_LOCK})
                        if fence is not None:
                            self.leases.check(session, fence)
                        yield Tx(session, self.dialect)
        except (OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(type(exc.orig if hasattr(exc, "orig") else exc).__name__
                                   ) from exc
        except IntegrityError as exc:
            raise Conflict("a concurrent change created or changed the same object first; "
                           "reload and try again", code="gpuplane.conflict") from exc

    def ping(self) -> bool:
        """True if the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - health check reports, never raises
            return False

    def dispose(self) -> None:
        self.engine.dispose()

    # -- leader lease (see store/leases.py for the contract) ----------------------------------
    def try_acquire_lease(self, holder: str, ttl_s: float) -> LeaseGrant | None:
        return self.leases.try_acquire(holder, ttl_s)

    def renew_lease(self, holder: str, ttl_s: float) -> LeaseGrant | None:
        return self.leases.renew(holder, ttl_s)

    def release_lease(self, holder: str) -> bool:
        return self.leases.release(holder)
