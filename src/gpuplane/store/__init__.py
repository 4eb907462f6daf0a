"""Persistence: SQLAlchemy tables, Alembic migrations, repositories returning domain objects.

Use::

    store = Store(settings.database_url); store.migrate()
    with store.read() as tx:  hosts = tx.hosts.list_all()
    with store.write() as tx: tx.workloads.update(uid, seen_generation, phase=Phase.RUNNING)
    store.leases.try_acquire(holder, ttl_s)  # leader lease (database clock)
    with store.write(fence=grant) as tx: ...          # refused (LeaseLost) once stale
"""

from gpuplane.store.db import Store
from gpuplane.store.leases import SCHEDULER_LEASE, FencedStore, LeaseGrant, LeaseState
from gpuplane.store.tx import Tx

__all__ = ["SCHEDULER_LEASE", "FencedStore", "LeaseGrant", "LeaseState", "Store", "Tx"]
