"""The live plane keeps a real Placement converged (issue 9, item 1): the leader's loop syncs in
the background at once and every interval, repairs drift made behind its back, audits each
change, writes nothing when nothing changed, and goes on scheduling when Placement is down
(but starts nothing it could not claim there)."""

from __future__ import annotations

import logging

from live_plane import ADMIN, INTERVAL, Plane

from gpuplane.control.placement_sync import PROBLEM_ACTION, SYNC_ACTION
from gpuplane.domain.workloads import Phase, WorkloadSpec
from gpuplane.drivers.openstack.model import Inventory, inventories_equal
from gpuplane.drivers.openstack.placement import PlacementClient
from gpuplane.drivers.openstack.sync import read_provider


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


def test_placement_down_is_logged_and_counted_and_nothing_starts_unclaimed(
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
        task = p.svc.workloads.get_workload(ADMIN, w.id).tasks[0]
        assert task.phase == Phase.ADMITTED and task.handle is None  # the ledger comes first
        assert p.loop.stats.failures["claim"] == 2
        assert p.entries(SYNC_ACTION) == []
    finally:
        p.close()
