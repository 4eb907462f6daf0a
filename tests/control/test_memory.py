"""The scheduler's memory (SQLite, and PostgreSQL when given): named documents the leader
writes inside its fenced transactions and the next leader resumes."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import update

from gpuplane.control.loop import FAIRSHARE_MEMORY, PLACEMENT_MEMORY, ControlLoop
from gpuplane.control.memory import PersistedState, SchedulerMemory
from gpuplane.drivers.sim import SimDriver
from gpuplane.scheduling.admission.fairshare import UsageHistory
from gpuplane.store.db import Store
from gpuplane.store.tables import LeaseRow

from .conftest import make_plane

SIM = {"gpuplane.io/sim-duration-s": "3600"}


class Counter:
    """The smallest thing the memory can keep."""

    def __init__(self, n: int = 0) -> None:
        self.n = n

    def to_dict(self) -> dict:
        return {"n": self.n}

    @classmethod
    def from_dict(cls, data: dict) -> Counter:
        return cls(int(data["n"]))


def _docs(store: Store) -> dict:
    with store.read() as tx:
        return tx.scheduler_state.get(["counter", "box", FAIRSHARE_MEMORY])


def _loop(store: Store, home, holder: str, **memory) -> ControlLoop:  # noqa: ANN001
    return ControlLoop(store, {"sim": SimDriver(home)}, holder=holder, lease_ttl_s=5,
                       local_host="none", memory=memory, memory_every_s=0.0)


def _expire(store: Store) -> None:
    with store.write() as tx:
        tx.session.execute(update(LeaseRow).where(LeaseRow.name == "scheduler")
                           .values(expires_at=0.0))


def test_the_next_leader_resumes_the_memory_of_the_last_one(db_url, tmp_path):
    plane = make_plane(db_url, tmp_path / "a")
    box: dict = {"seen": []}
    a = _loop(plane.store, tmp_path / "a", "a", counter=Counter(),
              box=PersistedState(lambda: dict(box), box.update))
    assert a.tick().leader
    a.memory["counter"].n = 5
    box["seen"] = ["x"]
    a.tick()
    docs = _docs(plane.store)
    assert docs["counter"].data == {"n": 5} and docs["box"].data == {"seen": ["x"]}
    assert docs["counter"].epoch == a.grant.epoch
    written = docs["counter"].updated_at
    time.sleep(0.01)
    a.tick()  # nothing changed: nothing written
    assert _docs(plane.store)["counter"].updated_at == written

    _expire(plane.store)
    store_b = Store(db_url)
    box_b: dict = {}
    b = _loop(store_b, tmp_path / "b", "b", counter=Counter(),
              box=PersistedState(lambda: dict(box_b), box_b.update))
    try:
        assert b.tick().leader
        assert b.memory["counter"].n == 5 and box_b == {"seen": ["x"]}
        # the stale leader's memory is refused by the fence
        a.memory["counter"].n = 99
        a.memory.every_s = 0.0
        report = a.tick(renew=False)
        assert report.lease_lost
        assert _docs(plane.store)["counter"].data == {"n": 5}
    finally:
        b.release()
        store_b.dispose()
        plane.store.dispose()


def test_unreadable_or_oversized_memory_is_left_alone(db_url, tmp_path, caplog):
    plane = make_plane(db_url, tmp_path)
    with plane.store.write() as tx:
        tx.scheduler_state.put("counter", {"n": "not a number"}, 0, 1.0)
    loop = _loop(plane.store, tmp_path, "a", counter=Counter(3))
    assert loop.tick().leader
    assert loop.memory["counter"].n == 3 and "cannot be read" in caplog.text
    memory = SchedulerMemory({"counter": Counter(1)}, every_s=0.0, max_bytes=4)
    assert memory.due(0.0) == {} and "over the limit" in caplog.text
    plane.store.dispose()


def test_the_fair_share_history_advances_every_tick_and_is_kept(db_url, tmp_path):
    plane = make_plane(db_url, tmp_path)
    plane.loop.memory.every_s = 0.0
    plane.submit(name="holder", labels=SIM, tasks=[{"resources": {"gpus": 2}, "command": ["x"]}])
    plane.loop.tick()
    time.sleep(0.05)
    plane.loop.tick()
    assert plane.loop.history.get("default")[0] > 0
    stored = UsageHistory.from_dict(_docs(plane.store)[FAIRSHARE_MEMORY].data)
    assert stored.get("default")[0] > 0
    plane.loop.release()
    plane.store.dispose()


@pytest.mark.parametrize("every_s, writes", [(0.0, 2), (3600.0, 1)],
                         ids=["every change", "at most once an hour"])
def test_memory_writes_are_rate_limited(every_s, writes):
    memory = SchedulerMemory({"counter": Counter()}, every_s=every_s)
    done = 0
    for n in (1, 2):
        memory["counter"].n = n
        due = memory.due(float(n))
        if due:
            memory.committed(due, float(n))
            done += 1
    assert done == writes


def test_the_placement_workload_model_is_kept_and_resumed_in_place(db_url, tmp_path):
    """A new leader resumes the online workload model (issue 11, item 1): the same counts, and
    its placement profile uses the restored object, not a fresh one."""
    plane = make_plane(db_url, tmp_path / "a")
    plane.loop.memory.every_s = 0.0
    for i in range(3):
        plane.submit(name=f"w{i}", labels=SIM,
                     tasks=[{"resources": {"gpus": 1 + i % 2}, "command": ["x"]}])
    plane.loop.tick()
    plane.loop.tick()
    learned = plane.loop.workload_model.to_dict()
    assert learned["count"] == 3
    plane.loop.release()
    b = _loop(plane.store, tmp_path / "b", "b")
    assert b.workload_model.count == 0
    assert b.tick().leader
    assert b.workload_model.to_dict() == learned
    profile = b.cycle_options.profile
    assert any(getattr(p, "online", None) is b.workload_model
               for p in (*[s for s, _ in profile.scores], *profile.choosers))
    with b.store.read() as tx:
        stored = tx.scheduler_state.get([PLACEMENT_MEMORY])[PLACEMENT_MEMORY].data
    assert stored["count"] == 3
    b.release()
    plane.store.dispose()
