"""Store: migrations, generation-guarded writes, leader lease — on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from gpuplane.domain.errors import Conflict
from gpuplane.domain.workloads import Phase, Resources, TaskGroup, WorkloadSpec
from gpuplane.store import Store
from gpuplane.store.migrations import current_revision
from gpuplane.store.records import Gpu
from gpuplane.store.tables import Base


def test_migrations_create_exactly_the_tables_the_code_uses(store):
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                Base.metadata)
    assert diff == []
    assert current_revision(store.engine) is not None


def test_sqlite_runs_in_wal_mode_with_foreign_keys(store):
    if store.dialect != "sqlite":
        pytest.skip("SQLite only")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_migrating_twice_changes_nothing(store):
    before = current_revision(store.engine)
    store.migrate()
    assert current_revision(store.engine) == before


def _host(tx, name="h1", now=1.0):
    if not tx.sites.list().items:
        tx.sites.add("s1", "EU/DE", "", "", {}, now)
    return tx.hosts.add(name, "s1", 8000, 65536, [Gpu(0, "H100-80GB", 81920)], now)


def test_a_stale_generation_loses_and_the_winner_stays(store):
    with store.write() as tx:
        seen = _host(tx).generation
    with store.write() as tx:
        assert tx.hosts.bump_generation("h1", seen) == seen + 1
    with pytest.raises(Conflict) as err, store.write() as tx:
        tx.hosts.bump_generation("h1", seen)
    assert err.value.code == "gpuplane.generation.conflict"
    with store.read() as tx:
        assert tx.hosts.get("h1").generation == seen + 1


def test_a_conflict_rolls_back_everything_in_its_transaction(store):
    with store.write() as tx:
        seen = _host(tx).generation
        _host(tx, "h2")
    with store.write() as tx:
        tx.hosts.set_state("h2", "cordoned")
    with pytest.raises(Conflict), store.write() as tx:
        tx.hosts.set_state("h1", "draining")  # would succeed ...
        tx.hosts.bump_generation("h2", seen)  # ... but this one is stale
    with store.read() as tx:
        assert tx.hosts.get("h1").state == "ready"


def test_concurrent_writers_on_one_row_exactly_one_wins(store):
    with store.write() as tx:
        seen = _host(tx).generation
    results: list[str] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        try:
            with store.write() as tx:
                tx.hosts.bump_generation("h1", seen)
            results.append("won")
        except Conflict:
            results.append("lost")

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["lost"] * 5 + ["won"]


def _workload(tx, name="w1"):
    if not tx.orgs.list().items:
        org = tx.orgs.add("o", "", 1.0)
        tx.projects.add("p", org.id, "", 1.0, None, 1.0)
    project = tx.projects.get("p")
    spec = WorkloadSpec(name=name, project="p", tasks=[TaskGroup(replicas=2)])
    return tx.workloads.add(f"wl-{name}", project, spec, 500, "standard", False, "u", 1.0)


def test_an_added_workload_is_what_is_read_back_and_a_taken_name_writes_nothing(store):
    with store.write() as tx:
        wl = _workload(tx, "same")
        project = tx.projects.get("p")
        mixed = tx.workloads.add("wl-mixed", project, WorkloadSpec(name="mixed", project="p", tasks=[
            TaskGroup(name="a", replicas=2),
            TaskGroup(name="b", resources=Resources(gpus=1, mig_profile="3g.40gb",
                                                    gpu_models=["H100"]))]),
            100, "standard", True, "u", 2.0)
    with store.read() as tx:
        assert tx.workloads.get(wl.id) == wl      # built from what was written, not read back
        assert tx.workloads.get(mixed.id) == mixed
        assert [t.mig_profile for t in mixed.tasks] == [None, None, "3g.40gb"]
    with store.write() as tx:
        assert _workload(tx, "same") is None and tx.workloads.find(wl.project_id, "same") == wl
    with store.read() as tx:
        assert [w.id for w in tx.workloads.list(None).items
                if w.name == "same"] == [wl.id]


def test_workload_and_task_updates_are_generation_guarded(store):
    with store.write() as tx:
        wl = _workload(tx)
    task = wl.tasks[0]
    with store.write() as tx:
        tx.tasks.update(task.id, task.generation, phase=Phase.CANCELLED)
        tx.workloads.update(wl.id, wl.generation, cancel_requested=True)
    for update in (lambda tx: tx.tasks.update(task.id, task.generation, phase=Phase.ADMITTED),
                   lambda tx: tx.workloads.update(wl.id, wl.generation, phase=Phase.RUNNING)):
        with pytest.raises(Conflict), store.write() as tx:
            update(tx)
    with store.read() as tx:
        again = tx.workloads.get(wl.id)
    assert again.cancel_requested and again.tasks[0].phase is Phase.CANCELLED


def test_quota_replace_with_a_stale_generation_is_refused(store):
    with store.write() as tx:
        _workload(tx)
        pid = tx.projects.get("p").id
        q = tx.quotas.put(pid, "gpu", "*", 8000, None, None, 1.0)
    with store.write() as tx:
        tx.quotas.put(pid, "gpu", "*", 4000, None, None, 2.0, seen_generation=q.generation)
    with pytest.raises(Conflict), store.write() as tx:
        tx.quotas.put(pid, "gpu", "*", 2000, None, None, 3.0, seen_generation=q.generation)
    with store.read() as tx:
        assert tx.quotas.find(pid, "gpu", "*").guaranteed_milli == 4000


def _expire(store, name: str = "scheduler") -> None:
    """As if the lease's TTL had passed on the database's clock."""
    from sqlalchemy import update

    from gpuplane.store.tables import LeaseRow

    with store.write() as tx:
        tx.session.execute(update(LeaseRow).where(LeaseRow.name == name).values(expires_at=0.0))


def test_lease_is_exclusive_until_it_expires(store):
    a = store.try_acquire_lease("a", 30.0)
    assert a is not None and a.holder == "a"
    assert store.try_acquire_lease("b", 30.0) is None
    renewed = store.renew_lease("a", 30.0)
    assert renewed is not None and renewed.epoch == a.epoch  # a renewal keeps the epoch
    _expire(store)
    b = store.try_acquire_lease("b", 30.0)  # expired: b takes over, with a new epoch
    assert b is not None and b.epoch == a.epoch + 1
    assert store.renew_lease("a", 30.0) is None  # a must stop scheduling
    assert not store.release_lease("a")
    assert store.release_lease("b")
    again = store.try_acquire_lease("a", 30.0)
    assert again is not None and again.epoch == b.epoch + 1
    state = store.leases.get()
    assert state.holder == "a" and state.epoch == 3


def test_lease_expiry_is_judged_by_the_database_clock(store, monkeypatch):
    """The caller's clock plays no part: a process whose clock runs an hour ahead cannot take
    an unexpired lease, and the expiry written is the database's now + TTL."""
    import time as time_module

    before = store.leases.db_time()
    a = store.try_acquire_lease("a", 0.6)
    assert before + 0.6 <= a.expires_at <= store.leases.db_time() + 0.6
    real = time_module.time
    monkeypatch.setattr(time_module, "time", lambda: real() + 3600)
    assert store.try_acquire_lease("b", 0.6) is None
    monkeypatch.undo()
    time_module.sleep(0.8)  # past the TTL on the database's clock
    assert store.try_acquire_lease("b", 0.6) is not None


def test_a_fenced_write_of_a_stale_grant_is_refused(store):
    """The epoch is checked inside the write transaction: after a hand-over (or an expiry) the
    old holder's write commits nothing."""
    from gpuplane.domain.errors import LeaseLost

    a = store.try_acquire_lease("a", 30.0)
    with store.write(fence=a) as tx:
        _workload(tx, "by-a")
    _expire(store)
    with pytest.raises(LeaseLost, match="expired"), store.write(fence=a) as tx:
        _workload(tx, "expired-a")
    b = store.try_acquire_lease("b", 30.0)
    with pytest.raises(LeaseLost, match="held by b"), store.write(fence=a) as tx:
        _workload(tx, "stale-a")
    with store.write(fence=b) as tx:
        _workload(tx, "by-b")
    with store.read() as tx:
        names = {w.name for w in tx.workloads.list_active() + tx.workloads.list_schedulable(1e12)}
    assert names == {"by-a", "by-b"}


def test_lease_race_has_one_winner_per_round(store):
    for _round in range(3):
        _expire(store)  # every round starts after the previous lease expired
        winners: list[str] = []
        barrier = threading.Barrier(8)

        def contender(name: str) -> None:
            barrier.wait()
            if store.try_acquire_lease(name, 30.0):
                winners.append(name)

        threads = [threading.Thread(target=contender, args=(f"p{i}",)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1, winners


def test_a_second_store_on_the_same_database_sees_committed_work(db_url):
    first = Store(db_url)
    first.migrate()
    with first.write() as tx:
        wl = _workload(tx)
    first.dispose()  # as if the process died after answering
    second = Store(db_url)
    second.migrate()
    with second.read() as tx:
        assert tx.workloads.get(wl.id).name == "w1"
        assert len(tx.workloads.list_schedulable(now=2.0)) == 1
    second.dispose()


def test_pagination_walks_every_item_once(store):
    with store.write() as tx:
        for i in range(7):
            _workload(tx, f"w{i}")
    seen, after = [], None
    while True:
        with store.read() as tx:
            page = tx.workloads.list(None, after=after, limit=3)
        seen += [w.name for w in page.items]
        after = page.next_after
        if after is None:
            break
    assert seen == [f"w{i}" for i in range(7)]


def test_a_lost_unique_race_is_a_conflict_not_a_crash(store):
    """Two creates of the same name that both passed their existence check: the loser gets
    Conflict from the unique constraint (PostgreSQL lets both check before either inserts)."""
    from sqlalchemy import insert

    from gpuplane.store.tables import OrganisationRow

    with store.write() as tx:
        tx.orgs.add("dup", "", 1.0)
    with pytest.raises(Conflict) as err, store.write() as tx:
        tx.session.execute(insert(OrganisationRow).values(name="dup", display_name="",
                                                          generation=1, created_at=2.0))
    assert err.value.code == "gpuplane.conflict"


def test_concurrent_bootstraps_make_one_admin(db_url):
    from gpuplane.service import Services

    stores = [Store(db_url) for _ in range(3)]
    stores[0].migrate()
    tokens: list[str | None] = []
    barrier = threading.Barrier(3)

    def boot(s: Store) -> None:
        barrier.wait()
        tokens.append(Services(s).bootstrap_admin())

    threads = [threading.Thread(target=boot, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([t for t in tokens if t]) == 1
    with stores[0].read() as tx:
        assert [u.name for u in tx.users.list().items] == ["admin"]
    for s in stores:
        s.dispose()


def test_an_unreachable_database_is_a_clear_error_not_a_driver_trace(tmp_path):
    from gpuplane.store.db import StoreUnavailable

    # a PostgreSQL URL nobody listens on
    store = Store("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2")
    with pytest.raises(StoreUnavailable) as err, store.read():
        pass
    assert err.value.code == "gpuplane.store.unavailable" and "retry" in err.value.detail
    with pytest.raises(StoreUnavailable), store.write():
        pass
    assert store.ping() is False


def test_a_read_block_sees_one_snapshot(store):
    """Commits made while a read block is open are not visible inside it (on both databases),
    so a host list and a task list read together always fit together."""
    with store.write() as tx:
        _host(tx, "h1")
    with store.read() as tx:
        first = [h.name for h in tx.hosts.list_all()]
        with store.write() as other:
            _host(other, "h2")
        second = [h.name for h in tx.hosts.list_all()]
    assert first == second == ["h1"]
    with store.read() as tx:
        assert [h.name for h in tx.hosts.list_all()] == ["h1", "h2"]
