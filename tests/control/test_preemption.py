"""The preemption protocol in the live loop (SQLite, and PostgreSQL when given): a borrower's
tasks on the real local host are signalled when the owner's work arrives, given their grace
period, and the outcome (acknowledged / timeout), the beneficiary and the GPU-time lost since the
last checkpoint are recorded on the task, in the events, the usage records and the audit chain."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from gpuplane.api.schemas import TaskOut
from gpuplane.control.loop import ControlLoop
from gpuplane.domain.workloads import Phase, WorkloadSpec
from gpuplane.drivers.local import LocalDriver
from gpuplane.service.auditing import AuditService
from gpuplane.service.auth import AuthService
from gpuplane.service.authz import Principal
from gpuplane.service.inventory import InventoryService
from gpuplane.service.policy import PolicyService
from gpuplane.service.specs import (HostSpec, OrganisationSpec, ProjectSpec, QuotaSpec,
                                    SiteSpec)
from gpuplane.service.tenancy import TenancyService
from gpuplane.service.workloads import WorkloadService
from gpuplane.store.db import Store

PY = sys.executable
SYSTEM = Principal.system()
GRACE_S = 2.0

# Ready once its SIGTERM handler is installed (touches argv[1]); then, on SIGTERM:
#   "exit"       - exits at once (acknowledges);
#   "trap"       - ignores it (times out and is killed);
#   "checkpoint" - touches $GPUPLANE_CHECKPOINT_FILE, then exits (loses nothing before it).
# Every mode also checkpoints once when the file argv[1] + ".go" appears.
TASK = r"""
import os, pathlib, signal, sys, time
mode = sys.argv[2]
def on_term(*_):
    if mode == "trap":
        return
    if mode == "checkpoint":
        pathlib.Path(os.environ["GPUPLANE_CHECKPOINT_FILE"]).touch()
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
pathlib.Path(sys.argv[1]).touch()
go = pathlib.Path(sys.argv[1] + ".go")
saved = False
while True:
    if not saved and go.exists():
        pathlib.Path(os.environ["GPUPLANE_CHECKPOINT_FILE"]).touch()
        saved = True
    time.sleep(0.05)
"""


class Cluster:
    def __init__(self, db_url: str, home: Path) -> None:
        self.home = home
        self.store = Store(db_url)
        self.store.migrate()
        AuthService(self.store).bootstrap_admin()
        InventoryService(self.store).create_site(SYSTEM, SiteSpec(name="here"))
        InventoryService(self.store).register_host(SYSTEM, HostSpec(
            name="local", site="here", cpu=8, memory="16Gi", driver="local", simulated=False,
            gpus=[{"index": g, "model": "L40S-48GB", "memory_mib": 49152} for g in range(2)]))
        ten, pol = TenancyService(self.store), PolicyService(self.store)
        ten.create_organisation(SYSTEM, OrganisationSpec(name="lab"))
        for name, guaranteed in (("owner", 2), ("borrower", 0)):
            ten.create_project(SYSTEM, ProjectSpec(name=name, organisation="lab", cohort="lab"))
            pol.set_quota(SYSTEM, QuotaSpec(project=name, resource="gpu", guaranteed=guaranteed))
        # unsandboxed: the tasks signal readiness through files in the test's tmp_path, which
        # the sandbox hides (tests/drivers and tests/security cover the protocol sandboxed)
        self.loop = ControlLoop(self.store, {"local": LocalDriver(home, host="local",
                                                                  unsandboxed=True)},
                                holder="test", local_host="local", lease_ttl_s=5,
                                stop_grace_s=1.0, preempt_grace_s=GRACE_S)
        self.workloads = WorkloadService(self.store)

    def submit(self, project: str, name: str, command: list[str], gpus: int = 1,
               priority_class: str = "standard"):
        return self.workloads.submit_workload(SYSTEM, WorkloadSpec(
            name=name, project=project, priority_class=priority_class,
            tasks=[{"resources": {"gpus": gpus, "cpu": 1, "memory": "1Gi"},
                    "command": command}]))

    def get(self, uid: str):
        return self.workloads.get_workload(SYSTEM, uid)

    def run_until(self, cond, timeout: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.loop.tick()
            if cond():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def events(self, uid: str):
        return self.workloads.list_events(SYSTEM, None, 500, uid).items

    def close(self) -> None:
        """Stop every process still running, then release the lease and the store."""
        from gpuplane.drivers.base import DriverHandle

        with self.store.read() as tx:
            handles = [t.handle for t in tx.tasks.list_active() if t.handle]
        for h in handles:
            self.loop.drivers["local"].stop(DriverHandle.from_dict(h), 0.0)
        self.loop.release()
        self.store.dispose()


@pytest.fixture
def cluster(db_url, tmp_path):
    c = Cluster(db_url, tmp_path)
    yield c
    c.close()


def borrow(cluster: Cluster, tmp_path: Path, modes: list[str]) -> list:
    """Start one borrower workload per mode (one GPU each) and wait until each is ready."""
    out = []
    for mode in modes:
        ready = tmp_path / f"ready-{mode}"
        w = cluster.submit("borrower", f"b-{mode}", [PY, "-c", TASK, str(ready), mode],
                           priority_class="preemptible")
        out.append((w, ready))
    cluster.run_until(lambda: all(r.exists() for _, r in out), what="borrowers ready")
    assert all(cluster.get(w.id).phase == Phase.RUNNING for w, _ in out)
    return [w for w, _ in out]


def test_the_owner_reclaims_borrowed_gpus_and_each_outcome_is_recorded(cluster, tmp_path):
    acked, trapped = borrow(cluster, tmp_path, ["exit", "trap"])
    # stored as borrowed (the cycle places them apart from guaranteed work), and shown so
    assert all(TaskOut.of(cluster.get(w.id).tasks[0]).placement.borrowed
               for w in (acked, trapped))
    time.sleep(0.3)      # some work that will be lost (no checkpoint was ever written)
    owner = cluster.submit("owner", "train", [PY, "-c", "import time; time.sleep(600)"], gpus=2)
    t0 = time.monotonic()
    cluster.run_until(lambda: cluster.get(owner.id).phase == Phase.RUNNING, what="owner runs")
    assert not cluster.get(owner.id).tasks[0].placement.borrowed
    # the trapping task held its GPU for the whole grace period before it was killed
    assert time.monotonic() - t0 >= GRACE_S - 0.2

    for w, expected in ((acked, "acknowledged"), (trapped, "timeout")):
        got = cluster.get(w.id)
        assert got.phase == Phase.PENDING, got.phase
        task = got.tasks[0]
        assert task.reason == "Preempted" and task.placement is None
        p = dict(task.preemption or {})
        assert p["outcome"] == expected, p
        assert p["beneficiary"] == owner.id and p["beneficiary_name"] == "owner/train"
        assert p["grace_s"] == GRACE_S and p["code"] == "preempt.reclaim"
        assert p["lost_since"] == "start" and p["lost_gpu_s"] > 0.3, p
        if expected == "timeout":
            assert p["lost_s"] >= GRACE_S - 0.2, p   # it kept running until killed
        events = cluster.events(w.id)
        signalled = [e for e in events if e.reason == "Preempting"]
        assert len(signalled) == 1, [e.message for e in signalled]   # signalled once
        assert "owner/train" in signalled[0].message
        assert f"{GRACE_S:g} s grace" in signalled[0].message
        done = [e for e in events if e.reason == "Preempted"]
        assert done and "owner/train" in done[-1].message, [e.message for e in events]
        assert ("within its" if expected == "acknowledged" else "ran out") in done[-1].message
        assert "GPU-s since its last start" in done[-1].message

    entries, _ = AuditService(cluster.store).list_entries(SYSTEM, None, 100,
                                                          action="workload.preempt")
    by_object = {e.object_id: e.detail for e in entries}
    assert set(by_object) == {acked.id, trapped.id}
    assert by_object[acked.id]["outcome"] == "acknowledged"
    assert by_object[trapped.id]["outcome"] == "timeout"
    assert all(d["beneficiary"] == owner.id and d["grace_s"] == GRACE_S and d["lost_gpu_s"] > 0
               for d in by_object.values())

    with cluster.store.read() as tx:
        usage = {r.workload_uid: r for r in tx.usage.list(None) if r.outcome == "Preempted"}
    assert set(usage) == {acked.id, trapped.id}
    assert usage[trapped.id].lost_gpu_s == pytest.approx(by_object[trapped.id]["lost_gpu_s"])
    assert usage[trapped.id].lost_gpu_s > usage[acked.id].lost_gpu_s > 0

    # back in the queue, and they do not preempt the owner back
    for _ in range(5):
        cluster.loop.tick()
        time.sleep(0.05)
    assert cluster.get(owner.id).phase == Phase.RUNNING
    assert cluster.get(owner.id).tasks[0].preemption is None
    assert all(cluster.get(w.id).phase == Phase.PENDING for w in (acked, trapped))


def test_a_task_that_checkpoints_on_the_signal_loses_only_the_time_since(cluster, tmp_path):
    (saver,) = borrow(cluster, tmp_path, ["checkpoint"])
    time.sleep(1.0)
    owner = cluster.submit("owner", "train", [PY, "-c", "import time; time.sleep(600)"], gpus=2)
    cluster.run_until(lambda: cluster.get(owner.id).phase == Phase.RUNNING, what="owner runs")
    p = dict(cluster.get(saver.id).tasks[0].preemption or {})
    assert p["outcome"] == "acknowledged" and p["lost_since"] == "checkpoint", p
    assert p["checkpointed_at"] is not None
    assert p["lost_gpu_s"] < 0.5, p       # ran for over a second, checkpointed on the signal


def test_the_victim_is_the_borrower_that_loses_least_since_its_last_checkpoint(cluster,
                                                                               tmp_path):
    (older,) = borrow(cluster, tmp_path, ["exit"])
    time.sleep(0.5)
    (newer,) = borrow(cluster, tmp_path, ["trap"])
    time.sleep(0.5)
    # the older one checkpoints now: it would lose less than the newer one, which never did
    (tmp_path / "ready-exit.go").touch()
    cluster.run_until(lambda: cluster.get(older.id).tasks[0].checkpointed_at is not None,
                      what="checkpoint observed")
    owner = cluster.submit("owner", "eval", [PY, "-c", "import time; time.sleep(600)"], gpus=1)
    cluster.run_until(lambda: cluster.get(owner.id).phase == Phase.RUNNING, what="owner runs")
    assert cluster.get(newer.id).phase == Phase.RUNNING        # spared
    p = dict(cluster.get(older.id).tasks[0].preemption or {})
    assert p["outcome"] == "acknowledged" and p["lost_since"] == "checkpoint", p
    assert p["beneficiary_name"] == "owner/eval"


def test_lost_gpu_time_shows_in_the_usage_report(cluster, tmp_path):
    from gpuplane.service.usage import UsageService

    (victim,) = borrow(cluster, tmp_path, ["exit"])
    time.sleep(0.5)
    owner = cluster.submit("owner", "train", [PY, "-c", "import time; time.sleep(600)"], gpus=2)
    cluster.run_until(lambda: cluster.get(owner.id).phase == Phase.RUNNING, what="owner runs")
    lost = dict(cluster.get(victim.id).tasks[0].preemption or {})["lost_gpu_s"]
    rows = {r["project"]: r for r in UsageService(cluster.store).usage(SYSTEM)}
    assert rows["borrower"]["real"]["lost_gpu_hours"] == pytest.approx(lost / 3600, abs=1e-6)
    assert rows["borrower"]["real"]["lost_gpu_hours"] > 0
    assert rows["owner"]["real"]["lost_gpu_hours"] == 0
