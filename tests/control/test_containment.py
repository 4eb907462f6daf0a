"""One tenant cannot stall the control loop (DESIGN invariant 8): a task whose start or
observation raises, a stop that raises, and a host shrunk under its running tasks are each
contained to that task or host; every other task starts, runs and stops in the same ticks."""

from __future__ import annotations

import dataclasses
import logging
import sys

import pytest

from gpuplane.control.convert import QUARANTINE_TAINT, build_snapshot
from gpuplane.domain.errors import Conflict
from gpuplane.domain.workloads import Phase, WorkloadSpec
from gpuplane.service.authz import Principal
from gpuplane.service.inventory import InventoryService
from gpuplane.service.specs import HostSpec

PY = sys.executable
LOCAL = {"gpuplane.io/driver": "local"}
SIM = {"gpuplane.io/driver": "sim"}
QUICK = {"gpuplane.io/sim-duration-s": "0.2"}


def submit_unchecked(plane, name: str, command: list[str], env: dict[str, str] | None = None,
                     project: str = "default"):
    """Submit a local workload whose command (or env) today's edge validation refuses, as
    an older version accepted it: the spec object skips validation, the row is stored."""
    spec = WorkloadSpec(name=name, project=project,
                        tasks=[{"command": ["true"], "selector": LOCAL}])
    group = spec.tasks[0].model_copy(update={"command": command, "env": env or {}})
    spec = spec.model_copy(update={"tasks": [group]})
    return plane.workloads.submit_workload(Principal.system(), spec)


class Flaky:
    """Wraps a driver: ``start``, ``observe`` or ``stop`` raise for tasks whose workload name
    (in the driver task id's workload) is in the matching set."""

    def __init__(self, inner, start=(), observe=(), stop=()) -> None:  # noqa: ANN001
        self.inner = inner
        self.bad_start, self.bad_observe, self.bad_stop = set(start), set(observe), set(stop)
        self.ids: dict[str, str] = {}   # driver task id -> workload name

    def start(self, task, placement):  # noqa: ANN001, ANN201
        if task.workload in self.bad_start:
            raise ValueError("embedded null byte")
        handle = self.inner.start(task, placement)
        self.ids[handle.task_id] = task.workload
        return handle

    def observe(self, handles):  # noqa: ANN001, ANN201
        if any(self.ids.get(h.task_id) in self.bad_observe for h in handles):
            raise OSError("observation failed")
        return self.inner.observe(handles)

    def stop(self, handle, grace_s=10.0):  # noqa: ANN001, ANN201
        if self.ids.get(handle.task_id) in self.bad_stop:
            raise RuntimeError("stop failed")
        return self.inner.stop(handle, grace_s)

    def __getattr__(self, name):  # noqa: ANN001, ANN204
        return getattr(self.inner, name)


def events(plane, workload: str | None = None) -> list:
    with plane.store.read() as tx:
        return tx.events.list(None, workload, None, 1000).items


def test_a_nul_byte_in_a_command_fails_its_task_and_others_start_in_the_same_tick(plane, caplog):
    bad = submit_unchecked(plane, "nul-arg", ["echo", "a\x00b"])
    bad_env = submit_unchecked(plane, "nul-env", ["true"], env={"X": "a\x00b"})
    good = plane.submit(name="good", tasks=[{"command": [PY, "-c", "print('ok')"],
                                             "selector": LOCAL}])
    sim = plane.submit(name="gpu", labels=QUICK,
                       tasks=[{"resources": {"gpus": 1}, "command": ["train"]}])
    with caplog.at_level(logging.WARNING, logger="gpuplane.control"):
        report = plane.loop.tick()
    # the NUL argument fails at start; what a NUL env value does is the local driver's
    # business (it may refuse it at start, or hand the environment over in a file and drop
    # it): either way it ends alone
    assert report.failures.get("launch", 0) >= 1 and report.started >= 2, report
    for w in (bad, bad_env):
        got = plane.run_until(w.id, {"Failed", "Succeeded"})
        assert w is bad_env or got.phase == Phase.FAILED, got
        assert all("\x00" not in e.message for e in events(plane, w.id))
    t = plane.get(bad.id).tasks[0]
    assert t.reason == "StartFailed" and "ValueError: embedded null byte" in t.message
    assert any(e.reason == "TaskFailed" and "could not start" in e.message
               for e in events(plane, bad.id))
    assert plane.get(sim.id).tasks[0].phase in (Phase.RUNNING, Phase.SUCCEEDED)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"launch failed for task 0 of workload {bad.id}" in m for m in warnings)
    assert plane.loop.stats.read()[0]["launch"] >= 1
    assert plane.run_until(good.id, {"Succeeded", "Failed"}).phase == Phase.SUCCEEDED
    assert plane.run_until(sim.id, {"Succeeded", "Failed"}).phase == Phase.SUCCEEDED
    # not retried: the failed tasks are never started again
    for _ in range(3):
        assert plane.loop.tick().failures == {}


def test_a_start_that_raises_respects_the_retry_policy(plane):
    plane.loop.drivers["sim"] = Flaky(plane.loop.drivers["sim"], start={"bad"})
    bad = plane.submit(name="bad", labels=QUICK, retries={"limit": 1, "backoff_s": 0},
                       tasks=[{"resources": {"gpus": 1}, "command": ["x"]}])
    done = plane.run_until(bad.id, {"Failed", "Succeeded"})
    assert done.phase == Phase.FAILED and done.tasks[0].attempt == 2
    assert done.tasks[0].reason == "StartFailed"
    assert plane.loop.stats.read()[0]["launch"] == 2


def test_an_observation_that_raises_is_contained_to_its_task(plane, caplog):
    plane.loop.observe_failure_limit = 2
    plane.loop.drivers["sim"] = Flaky(plane.loop.drivers["sim"], observe={"blind"})
    blind = plane.submit(name="blind", tasks=[{"resources": {"gpus": 1}, "command": ["x"]}])
    seen = plane.submit(name="seen", labels=QUICK,
                        tasks=[{"resources": {"gpus": 1}, "command": ["x"]}])
    with caplog.at_level(logging.WARNING, logger="gpuplane.control"):
        assert plane.run_until(seen.id, {"Succeeded", "Failed"}).phase == Phase.SUCCEEDED
        got = plane.run_until(blind.id, {"Failed", "Succeeded"})
    assert got.tasks[0].reason == "ObserveFailed" and "OSError" in got.tasks[0].message
    assert plane.loop.stats.read()[0]["observe"] >= 2
    assert any("observe failed for task 0 of workload " + blind.id in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


def test_a_stop_that_raises_is_retried_and_other_cancels_go_through(plane):
    plane.loop.drivers["sim"] = Flaky(plane.loop.drivers["sim"], stop={"stuck"})
    stuck = plane.submit(name="stuck", tasks=[{"resources": {"gpus": 1}, "command": ["x"]}])
    other = plane.submit(name="other", tasks=[{"resources": {"gpus": 1}, "command": ["x"]}])
    plane.run_until(stuck.id, {"Running"})
    plane.run_until(other.id, {"Running"})
    for w in (stuck, other):
        plane.workloads.cancel_workload(Principal.system(), w.id)
    assert plane.run_until(other.id, {"Cancelled"}).phase == Phase.CANCELLED
    assert plane.get(stuck.id).phase == Phase.RUNNING
    assert plane.loop.stats.read()[0]["stop"] >= 1
    plane.loop.drivers["sim"].bad_stop.clear()   # the driver recovers: the next tick stops it
    assert plane.run_until(stuck.id, {"Cancelled"}).phase == Phase.CANCELLED


def shrink_in_store(plane, host: str, cpu_milli: int, memory_mib: int) -> None:
    """Shrink ``host`` behind the service's back (a direct DB edit, an old re-registration)."""
    with plane.store.write() as tx:
        h = tx.hosts.get(host)
        tx.hosts.replace(host, h.generation, cpu_milli, memory_mib, list(h.gpus), rack=h.rack,
                         labels=dict(h.labels), taints=list(h.taints), tee=h.tee,
                         simulated=h.simulated, declared=h.declared)


def test_a_host_shrunk_under_its_tasks_is_quarantined_and_the_others_admit(plane, caplog):
    big = plane.submit(name="big", tasks=[{"resources": {"gpus": 1, "cpu": 16,
                                                         "memory": "64Gi"},
                                           "command": ["x"]}])
    host = plane.run_until(big.id, {"Running"}).tasks[0].placement.host
    shrink_in_store(plane, host, 2000, 4096)
    later = [plane.submit(name=f"later-{i}", labels=QUICK,
                          tasks=[{"resources": {"gpus": 1}, "command": ["x"]}])
             for i in range(2)]
    with caplog.at_level(logging.WARNING, logger="gpuplane.control"):
        report = plane.loop.tick()
    assert report.admitted == 2 and report.failures == {"snapshot": 1}, report
    for w in later:
        got = plane.run_until(w.id, {"Succeeded", "Failed"})
        assert got.phase == Phase.SUCCEEDED and got.tasks[0].placement.host != host
    assert plane.loop.stats.read()[2] == {host: plane.loop.quarantined[host]}
    assert "16 cores" in plane.loop.quarantined[host]
    assert any(f"host {host} (quarantined" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)
    quarantined = [e for e in events(plane) if e.reason == "HostQuarantined"]
    assert len(quarantined) == 1 and host in quarantined[0].message
    # the task on the shrunk host still runs and stops normally
    assert plane.get(big.id).phase == Phase.RUNNING
    plane.workloads.cancel_workload(Principal.system(), big.id)
    assert plane.run_until(big.id, {"Cancelled"}).phase == Phase.CANCELLED
    plane.submit(name="after", labels=QUICK, tasks=[{"resources": {"gpus": 1},
                                                     "command": ["x"]}])
    plane.loop.tick()
    assert plane.loop.quarantined == {}
    assert any(e.reason == "HostQuarantineLifted" for e in events(plane))


def test_the_snapshot_books_what_fits_and_quarantines_the_rest(plane):
    w = plane.submit(name="held", tasks=[{"resources": {"gpus": 2}, "command": ["x"]}])
    host = plane.run_until(w.id, {"Running"}).tasks[0].placement.host
    shrink_in_store(plane, host, 100, 100)
    with plane.store.read() as tx:
        hosts, active = tx.hosts.list_all(), tx.workloads.list_active()
    built = build_snapshot(hosts, active, 0.0)
    assert set(built.quarantined) == {host} and len(built.running) == 1
    h = built.snap.host_of(host)
    assert built.snap.cpu_free[h] == 0 and built.snap.mem_free[h] == 0
    assert any(t.key == QUARANTINE_TAINT for t in built.snap.hosts[h].taints)
    # a task holding a GPU its host no longer has is left out; its host is quarantined
    records = [dataclasses.replace(r, gpus=()) if r.name == host else r for r in hosts]
    records = [dataclasses.replace(r, cpu_milli=32000, memory_mib=262144) if r.name == host
               else r for r in records]
    built = build_snapshot(records, active, 0.0)
    assert set(built.quarantined) == {host} and built.running == []
    assert "no longer fits" in built.quarantined[host] and w.id in built.dropped


def test_updating_a_host_below_what_its_tasks_hold_is_refused_naming_them(plane):
    w = plane.submit(name="holder", tasks=[{"resources": {"gpus": 1, "cpu": 8,
                                                         "memory": "16Gi"},
                                           "command": ["x"]}])
    host = plane.run_until(w.id, {"Running"}).tasks[0].placement.host
    inv = InventoryService(plane.store)
    rec = inv.get_host(Principal.system(), host)
    gpus = [{"index": g.index, "model": g.model, "memory_mib": g.memory_mib, "mode": g.mode}
            for g in rec.gpus]
    with pytest.raises(Conflict) as err:
        inv.update_host(Principal.system(), host, HostSpec(
            name=host, site="here", cpu=4, memory="256Gi", driver="sim", gpus=gpus))
    assert err.value.code == "gpuplane.host.shrink_below_usage"
    assert "default/holder task 0" in err.value.detail and "8 cores" in err.value.detail
    with pytest.raises(Conflict):   # a GPU it holds may not change mode either
        inv.update_host(Principal.system(), host, HostSpec(
            name=host, site="here", cpu=32, memory="256Gi", driver="sim",
            gpus=[{**g, "mode": "whole"} for g in gpus]))
    # growing, or shrinking down to exactly what is held, is fine
    inv.update_host(Principal.system(), host, HostSpec(
        name=host, site="here", cpu=8, memory="16Gi", driver="sim", gpus=gpus))
    assert inv.get_host(Principal.system(), host).cpu_milli == 8000


def test_a_stored_spec_that_todays_rules_refuse_is_still_read(plane):
    """Specs accepted by an older version (here a reserved env name and a control character
    in an argument) stay readable: listing workloads and every tick go on."""
    old = submit_unchecked(plane, "old-spec", ["echo", "tab\tand\x07bell"],
                           env={"LD_PRELOAD": "/tmp/x.so"})
    page = plane.workloads.list_workloads(Principal.system(), None, 100)
    assert old.id in [w.id for w in page.items]
    got = plane.run_until(old.id, {"Succeeded", "Failed"})
    assert got.spec.tasks[0].command == ["echo", "tab\tand\x07bell"]


def test_a_decision_the_store_refuses_is_contained_to_its_workload(plane, monkeypatch):
    from gpuplane.control import apply

    bad = plane.submit(name="refused", tasks=[{"resources": {"gpus": 1}, "command": ["x"]}])
    good = plane.submit(name="fine", labels=QUICK,
                        tasks=[{"resources": {"gpus": 1}, "command": ["x"]}])
    real = apply.lifecycle.admit_many

    def admit_many(tx, admissions, *args, **kwargs):  # noqa: ANN001, ANN202
        if any(a.workload.id == bad.id for a in admissions):
            raise ValueError("A string literal cannot contain NUL (0x00) characters")
        return real(tx, admissions, *args, **kwargs)

    monkeypatch.setattr(apply.lifecycle, "admit_many", admit_many)
    report = plane.loop.tick()
    assert report.failures == {"snapshot": 1} and report.admitted == 1, report
    assert plane.run_until(good.id, {"Succeeded", "Failed"}).phase == Phase.SUCCEEDED
    assert plane.get(bad.id).phase == Phase.PENDING
