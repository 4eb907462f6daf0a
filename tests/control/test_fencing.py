"""A fenced leader (SQLite, and PostgreSQL when given): the lease is judged by the database's
clock, and every write the loop makes checks the lease epoch inside its transaction, so a
leader that was paused past its TTL and wakes up mid-tick commits nothing and stops leading."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import update

from gpuplane.control import apply as store_apply
from gpuplane.control.loop import ControlLoop, TickReport
from gpuplane.domain.errors import LeaseLost
from gpuplane.domain.workloads import Phase
from gpuplane.drivers.sim import SimDriver
from gpuplane.store.db import Store
from gpuplane.store.leases import FencedStore
from gpuplane.store.tables import LeaseRow

from .conftest import Plane, make_plane

SIM = {"gpuplane.io/sim-duration-s": "3600"}


def _expire(store: Store) -> None:
    """As if the leader had been paused past its TTL (on the database's clock)."""
    with store.write() as tx:
        tx.session.execute(update(LeaseRow).where(LeaseRow.name == "scheduler")
                           .values(expires_at=0.0))


def _admits(store: Store, wid: str) -> int:
    with store.read() as tx:
        entries, _ = tx.audit.list(action="workload.admit", limit=1000)
    return sum(1 for e in entries if e.object_id == wid)


@pytest.fixture
def two(db_url, tmp_path):
    """Plane ``a`` (its loop holds the lease) and a second loop ``b`` on its own Store (as
    another process would have) on the same database."""
    a = make_plane(db_url, tmp_path / "a", holder="a")
    store_b = Store(db_url)
    b = ControlLoop(store_b, {"sim": SimDriver(tmp_path / "b")}, holder="b", lease_ttl_s=5,
                    local_host="none", stop_grace_s=0.1)
    assert a.loop.tick().leader and a.loop.is_leader
    yield a, b
    a.loop.release()
    b.release()
    a.store.dispose()
    store_b.dispose()


def _take_over(a: Plane, b: ControlLoop) -> None:
    """``a`` is 'paused' (its own clock says it still leads) while its lease expires and ``b``
    takes it with a new epoch."""
    epoch = a.loop.grant.epoch
    _expire(a.store)
    assert b._lease(b.clock())  # only takes the lease: b's first tick comes later
    assert b.grant.epoch == epoch + 1
    assert a.loop.is_leader, "a does not know yet: only the fence can stop it"


def test_a_paused_leader_that_lost_the_lease_admits_nothing_and_stops_leading(two, caplog):
    a, b = two
    w = a.submit(name="once", labels=SIM, tasks=[{"resources": {"gpus": 1}, "command": ["x"]}])
    _take_over(a, b)
    with caplog.at_level(logging.WARNING, logger="gpuplane.control"):
        report = a.loop.tick(renew=False)  # wakes up mid-tick: decides, then tries to write
    assert report.lease_lost and report.admitted == 0
    assert not a.loop.is_leader and a.loop.grant is None
    assert "scheduler lease lost by a" in caplog.text and "refused" in caplog.text
    assert a.get(w.id).phase == Phase.PENDING and _admits(a.store, w.id) == 0
    # the new leader admits it, exactly once; the old one cannot take the lease back
    for _ in range(3):
        b.tick()
    assert not a.loop.tick().leader
    assert a.get(w.id).phase == Phase.RUNNING and _admits(a.store, w.id) == 1


def test_a_stale_leader_stops_what_it_started_when_the_start_cannot_be_recorded(two):
    a, b = two
    w = a.submit(name="started", labels=SIM, tasks=[{"resources": {"gpus": 1},
                                                     "command": ["x"]}])
    a.loop.schedule(TickReport())  # admitted by a while it led
    assert a.get(w.id).tasks[0].phase == Phase.ADMITTED
    _take_over(a, b)
    report = a.loop.tick(renew=False)  # a starts the task on its driver, then cannot record it
    assert report.lease_lost and report.started == 0
    task_id = f"{w.id}.0.{a.get(w.id).tasks[0].attempt}"
    deadline = time.monotonic() + 5
    while task_id not in a.loop.drivers["sim"]._stopped and time.monotonic() < deadline:
        time.sleep(0.02)
    assert task_id in a.loop.drivers["sim"]._stopped, "the stale copy must be stopped"
    assert not a.get(w.id).tasks[0].handle
    b.tick()
    t = a.get(w.id).tasks[0]
    assert t.phase == Phase.RUNNING and t.handle["task_id"] == task_id
    assert task_id not in b.drivers["sim"]._stopped


def test_every_loop_writer_checks_the_epoch(two):
    a, b = two
    w = a.submit(name="w", labels=SIM, tasks=[{"resources": {"gpus": 1}, "command": ["x"]}])
    stale = FencedStore(a.store, a.loop.grant)
    _take_over(a, b)
    t = a.get(w.id).tasks[0]
    now = time.time()
    with pytest.raises(LeaseLost):
        store_apply.cancel_unstarted(stale, [a.get(w.id)], now)
    with pytest.raises(LeaseLost):
        store_apply.mark_stopping(stale, [(t, "Cancelled", "stale")])
    with pytest.raises(LeaseLost):
        store_apply.fail_task(stale, t, now, "ObserveFailed", "stale")
    with pytest.raises(LeaseLost):
        store_apply.record_starts(stale, [(a.get(w.id), t, None, "boom")], now)
    after = a.get(w.id).tasks[0]
    assert (after.phase, after.generation, after.reason) == (t.phase, t.generation, t.reason)


def test_a_process_whose_clock_runs_an_hour_ahead_cannot_take_the_lease(two, tmp_path):
    a, _b = two
    ahead = ControlLoop(Store(a.store.url), {"sim": SimDriver(tmp_path / "c")}, holder="c",
                        lease_ttl_s=5, local_host="none", clock=lambda: time.time() + 3600)
    try:
        assert not ahead.tick().leader
        assert a.store.leases.get().holder == "a"
    finally:
        ahead.store.dispose()
