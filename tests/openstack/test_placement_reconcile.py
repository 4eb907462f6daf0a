"""The live plane keeps a real Placement converged (issue 9, item 1): the leader's loop syncs in
the background at once and every interval, repairs drift made behind its back, audits each
change, writes nothing when nothing changed, and goes on scheduling when Placement is down."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from gpuplane.control.loop import ControlLoop
from gpuplane.control.placement_sync import PROBLEM_ACTION, SYNC_ACTION, PlacementReconciler
from gpuplane.domain.workloads import WorkloadSpec
from gpuplane.drivers.openstack import tree
from gpuplane.drivers.openstack.model import Inventory, inventories_equal
from gpuplane.drivers.openstack.placement import PlacementClient
from gpuplane.drivers.openstack.sync import read_provider
from gpuplane.drivers.sim import SimDriver
from gpuplane.service import Services
from gpuplane.service.authz import Principal
from gpuplane.service.specs import HostSpec, SiteSpec
from gpuplane.store import Store

TOKEN = os.environ.get("GPUPLANE_TEST_PLACEMENT_TOKEN", "admin")
ADMIN = Principal.system()
INTERVAL = 30.0


class Plane:
    """A SQLite store with two sites and three hosts (whole GPUs with SEV-SNP, shared GPUs,
    MIG GPUs), a residency policy (so entries carry a policy hash), a loop on a virtual clock
    that syncs ``url`` under this test's marker."""

    def __init__(self, home: Path, scope: str, marker: str, url: str) -> None:
        self.t = [1_000_000.0]
        self.store = Store(f"sqlite:///{home / 'g.db'}")
        self.store.migrate()
        self.svc = Services(self.store, clock=lambda: self.t[0])
        self.svc.bootstrap_admin()
        inv = self.svc.inventory
        self.names = (f"w-{scope}", f"s-{scope}", f"m-{scope}")
        for site in (f"site-a-{scope}", f"site-b-{scope}"):
            inv.create_site(ADMIN, SiteSpec(name=site, jurisdiction="CH"))
        inv.register_host(ADMIN, HostSpec(
            name=self.names[0], site=f"site-a-{scope}", cpu=64, memory="512Gi", driver="sim",
            tee="sev-snp", gpus=[{"index": i, "model": "H100-80GB", "memory_mib": 81920,
                                  "numa": i // 2} for i in range(4)]))
        inv.register_host(ADMIN, HostSpec(
            name=self.names[1], site=f"site-b-{scope}", cpu=32, memory="256Gi", driver="sim",
            gpus=[{"index": i, "model": "L40S", "memory_mib": 49152, "mode": "shared"}
                  for i in range(2)]))
        inv.register_host(ADMIN, HostSpec(
            name=self.names[2], site=f"site-a-{scope}", cpu=96, memory="1Ti", driver="sim",
            gpus=[{"index": 0, "model": "A100-80GB", "memory_mib": 81920, "mode": "mig",
                   "mig_layout": [{"profile": "3g.40gb", "start": 0},
                                  {"profile": "3g.40gb", "start": 4}]},
                  {"index": 1, "model": "A100-80GB", "memory_mib": 81920, "numa": 1,
                   "mode": "mig",
                   "mig_layout": [{"profile": "1g.10gb", "start": s} for s in range(7)]}]))
        self.svc.governance.set_policy(ADMIN, "residency", {"classifications": {}})
        self.reconciler = PlacementReconciler(PlacementClient(url, TOKEN, timeout=10),
                                              interval_s=INTERVAL, marker=marker)
        self.loop = ControlLoop(self.store, {"sim": SimDriver(home, clock=self.now)},
                                holder="placement-test", lease_ttl_s=3600, clock=self.now,
                                placement=self.reconciler)

    def now(self) -> float:
        return self.t[0]

    def desired(self, marker: str) -> list:
        with self.store.read() as tx:
            return tree.fleet_tree(tx.hosts.list_all(), marker=marker)

    def entries(self, action: str) -> list:
        with self.store.read() as tx:
            return tx.audit.list(action=action)[0]

    def policy_hash(self) -> str:
        with self.store.read() as tx:
            return tx.audit.list(action="policy.set")[0][-1].policy_hash

    def tick_and_wait(self) -> None:
        self.loop.tick()
        assert self.reconciler.wait(120), "the placement sync did not finish"

    def close(self) -> None:
        self.loop.release()
        self.store.dispose()


@pytest.fixture
def plane(tmp_path, scope, marker, placement, placement_url, cleanup):
    cleanup(placement, marker)
    p = Plane(tmp_path, scope, marker, placement_url)
    yield p
    p.close()


def assert_holds(client: PlacementClient, marker: str, desired) -> None:
    held = {rp.uuid: read_provider(client, rp)
            for rp in client.list_resource_providers(required=marker)}
    assert set(held) == {p.uuid for p in desired}
    for want in desired:
        have = held[want.uuid]
        assert (have.name, have.parent_uuid) == (want.name, want.parent_uuid)
        assert inventories_equal(have.inventories, want.inventories), want.name
        assert have.traits == want.traits, want.name


def test_the_leader_syncs_repairs_drift_within_one_interval_and_audits_it(
        plane, placement, marker):
    desired = plane.desired(marker)
    by_name = {p.name: p for p in desired}
    w, s, m = plane.names
    # becoming the leader: a sync at once, in the background, every change audited
    plane.tick_and_wait()
    first = plane.reconciler.last_report
    assert first is not None and first.problems == [] and first.changes
    assert_holds(placement, marker, desired)
    entries = plane.entries(SYNC_ACTION)
    assert len(entries) == len(first.changes)
    assert {e.object_id for e in entries if e.detail["action"] == "create"} == set(by_name)
    policy = plane.policy_hash()
    assert policy
    for e in entries:
        assert (e.actor, e.object_kind, e.policy_hash) == ("scheduler", "placement_provider",
                                                          policy)
        assert e.detail["placement_url"] == placement.url
        assert set(e.detail) == {"action", "uuid", "detail", "placement_url"}

    # within the interval no new run starts
    plane.t[0] += INTERVAL / 2
    plane.loop.tick()
    assert not plane.reconciler.running and plane.reconciler.runs == 1

    # behind gpuplane's back: a GPU provider deleted, an inventory changed
    placement.delete_resource_provider(by_name[f"{m}/gpu1"].uuid)
    gpu = by_name[f"{s}/gpu0"]
    gen, _ = placement.get_inventories(gpu.uuid)
    placement.set_inventories(gpu.uuid, gen, {"CUSTOM_GPU_MILLI": Inventory(500)})

    plane.t[0] += INTERVAL / 2  # one interval after the first run
    plane.tick_and_wait()
    repair = plane.reconciler.last_report
    assert plane.reconciler.runs == 2 and repair.problems == []
    assert_holds(placement, marker, desired)
    new = plane.entries(SYNC_ACTION)[len(entries):]
    found = {(e.detail["action"], e.object_id) for e in new}
    assert {("create", f"{m}/gpu1"), ("inventory", f"{s}/gpu0")} <= found
    assert len(new) == len(repair.changes)
    assert any(e.detail["detail"] == "CUSTOM_GPU_MILLI=500 -> CUSTOM_GPU_MILLI=1000" for e in new)
    assert all(e.detail["uuid"] for e in new if e.detail["action"] != "create_trait")

    # nothing changed: a run, no write to Placement, no audit entry
    size = len(plane.entries(SYNC_ACTION))
    plane.t[0] += INTERVAL
    plane.tick_and_wait()
    steady = plane.reconciler.last_report
    assert plane.reconciler.runs == 3 and (steady.writes, steady.drift) == (0, 0)
    assert len(plane.entries(SYNC_ACTION)) == size
    assert plane.entries(PROBLEM_ACTION) == []

    # release stops it: no run after that, even when this loop leads again
    plane.loop.release()
    plane.t[0] += INTERVAL
    assert plane.loop.tick().leader
    assert not plane.reconciler.running and plane.reconciler.runs == 3


def test_a_problem_is_audited_once_while_it_lasts(plane, placement, marker):
    w, _, _ = plane.names
    foreign = placement.create_resource_provider(w, None, None)  # a name gpuplane does not own
    try:
        plane.tick_and_wait()
        assert any(p.startswith(f"{w}:") for p in plane.reconciler.last_report.problems)
        plane.t[0] += INTERVAL
        plane.tick_and_wait()
        assert plane.reconciler.runs == 2 and plane.reconciler.last_report.problems
        problems = plane.entries(PROBLEM_ACTION)
        assert [(e.object_id, e.outcome) for e in problems] == [(w, "failed")]
        assert "does not manage" in problems[0].detail["problem"]
    finally:
        placement.delete_resource_provider(foreign.uuid)


def test_placement_down_is_logged_and_counted_and_the_loop_still_schedules(
        tmp_path, scope, marker, caplog):
    p = Plane(tmp_path, scope, marker, "http://127.0.0.1:9")  # nothing listens there
    try:
        w = p.svc.workloads.submit_workload(ADMIN, WorkloadSpec(
            name="work", project="default",
            tasks=[{"resources": {"gpus": 1}, "command": ["x"]}]))
        with caplog.at_level(logging.WARNING, logger="gpuplane.control"):
            report = p.loop.tick()
            assert p.reconciler.wait(30)
        assert report.leader and report.errors == [] and report.admitted == 1
        assert p.reconciler.failures == 1 and p.reconciler.runs == 0
        assert p.loop.stats.step_failures == {"reconcile_placement": 1}
        assert any("placement sync" in r.getMessage() and "cannot reach Placement"
                   in r.getMessage() for r in caplog.records)
        caplog.clear()
        p.t[0] += INTERVAL  # retried every interval; the repeat is not warned again
        with caplog.at_level(logging.WARNING, logger="gpuplane.control"):
            p.loop.tick()
            assert p.reconciler.wait(30)
        assert p.reconciler.failures == 2 and not caplog.records
        assert p.svc.workloads.get_workload(ADMIN, w.id).tasks[0].handle
        assert p.entries(SYNC_ACTION) == []
    finally:
        p.close()
