"""Sync into a live Placement (SQLite, serial): what lands there, zero writes the second time,
drift detected by ``check`` and repaired by ``sync``, import round trip."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gpuplane.drivers.openstack import tree
from gpuplane.drivers.openstack.model import Inventory, inventories_equal
from gpuplane.drivers.openstack.placement import Conflict, PlacementClient
from gpuplane.drivers.openstack.sync import PlacementSync, read_provider


def read_back(client: PlacementClient, marker: str) -> dict[str, object]:
    return {rp.uuid: read_provider(client, rp)
            for rp in client.list_resource_providers(required=marker)}


def assert_holds(client: PlacementClient, marker: str, desired) -> None:
    held = read_back(client, marker)
    assert set(held) == {p.uuid for p in desired}
    for want in desired:
        have = held[want.uuid]
        assert (have.name, have.parent_uuid) == (want.name, want.parent_uuid)
        assert inventories_equal(have.inventories, want.inventories), want.name
        assert have.traits == want.traits, want.name
        if want.parent_uuid is None:
            assert have.aggregates == want.aggregates, want.name


@pytest.fixture
def synced(placement, fleet_docs, marker, cleanup):
    """The small fleet synced once: (syncer, desired, first report)."""
    cleanup(placement, marker)
    desired = tree.fleet_tree(fleet_docs, marker=marker)
    syncer = PlacementSync(placement, marker=marker)
    report = syncer.sync(desired)
    return syncer, desired, report


def test_first_sync_creates_the_trees_as_mapped(placement, marker, synced):
    syncer, desired, report = synced
    assert report.problems == []
    assert report.providers == len(desired) == 3 + 2 + 1 + 2 + 4 + 2 + 3
    assert report.writes > len(desired)
    assert_holds(placement, marker, desired)
    # the custom classes and traits exist, the site aggregates group the hosts
    assert {"CUSTOM_GPU_MILLI", "CUSTOM_MIG_3G_40GB"} <= set(placement.list_resource_classes())
    roots = [p for p in desired if p.parent_uuid is None]
    members = placement.list_resource_providers(member_of=sorted(roots[0].aggregates))
    assert {rp.uuid for rp in members} >= {roots[0].uuid, roots[2].uuid}


def test_second_sync_writes_nothing_warm_or_cold(placement, marker, synced):
    syncer, desired, _ = synced
    warm = syncer.sync(desired)
    assert (warm.writes, warm.drift, warm.problems) == (0, 0, [])
    assert warm.reads <= 3  # the catalogue and one listing: nothing moved
    cold = PlacementSync(placement, marker=marker).sync(desired)
    assert (cold.writes, cold.drift) == (0, 0)
    assert cold.providers == len(desired)


def test_drift_is_reported_by_check_and_repaired_by_sync(placement, marker, synced, fleet_docs):
    syncer, desired, _ = synced
    by_name = {p.name: p for p in desired}
    w, s, m = (d["name"] for d in fleet_docs)
    # behind gpuplane's back: a GPU provider deleted, an inventory changed, a trait removed
    placement.delete_resource_provider(by_name[f"{m}/gpu2"].uuid)
    gpu = by_name[f"{s}/gpu0"]
    gen, _ = placement.get_inventories(gpu.uuid)
    placement.set_inventories(gpu.uuid, gen, {"CUSTOM_GPU_MILLI": Inventory(500)})
    root = by_name[w]
    gen, traits = placement.get_provider_traits(root.uuid)
    placement.set_provider_traits(root.uuid, gen, traits - {"HW_CPU_X86_AMD_SEV_SNP"})

    check = PlacementSync(placement, marker=marker).check(desired)
    assert check.writes == 0
    found = {(c.action, c.target) for c in check.changes}
    assert {("create", f"{m}/gpu2"), ("inventory", f"{s}/gpu0"), ("traits", w)} <= found
    assert check.drift == 4  # gpu2: create + its traits; one inventory; one root's traits
    assert "CUSTOM_GPU_MILLI=500 -> CUSTOM_GPU_MILLI=1000" in {c.detail for c in check.changes}

    repair = syncer.sync(desired)  # the warm syncer notices the moved generations
    assert repair.problems == [] and repair.drift == check.drift
    assert_holds(placement, marker, desired)
    again = syncer.sync(desired)
    assert (again.writes, again.drift) == (0, 0)


def test_a_provider_that_lost_the_marker_is_adopted_back(placement, marker, synced):
    syncer, desired, _ = synced
    gpu = next(p for p in desired if p.kind == "gpu")
    gen, traits = placement.get_provider_traits(gpu.uuid)
    placement.set_provider_traits(gpu.uuid, gen, traits - {marker})
    assert syncer.check(desired).drift == 1
    report = syncer.sync(desired)
    assert [(c.action, c.target) for c in report.changes] == [("traits", gpu.name)]
    assert report.writes == 1
    assert_holds(placement, marker, desired)


def test_hosts_that_left_the_fleet_are_deleted_children_first(placement, marker, synced):
    syncer, desired, _ = synced
    keep = [p for p in desired if not p.name.startswith("m-")]
    report = syncer.sync(keep)
    assert report.problems == []
    assert {c.action for c in report.changes} == {"delete"}
    assert report.providers == len(keep)
    assert_holds(placement, marker, keep)


def test_a_changed_host_moves_gpus_between_numa_nodes(placement, marker, synced, fleet_docs):
    syncer, _, _ = synced
    docs = [dict(d) for d in fleet_docs]
    docs[0] = {**docs[0], "gpus": [{**g, "numa": 0} for g in docs[0]["gpus"]]}
    desired = tree.fleet_tree(docs, marker=marker)
    report = syncer.sync(desired)
    assert report.problems == []
    actions = sorted(c.action for c in report.changes)
    assert actions == ["delete", "move", "move"]  # gpu2, gpu3 to numa0; numa1 goes
    assert_holds(placement, marker, desired)


def test_a_name_taken_by_a_foreign_provider_is_a_problem_not_a_crash(
        placement, marker, scope, cleanup):
    cleanup(placement, marker)
    foreign = placement.create_resource_provider(f"taken-{scope}")
    try:
        desired = tree.fleet_tree([{"name": f"taken-{scope}", "cpu": 4, "memory": 1024},
                                   {"name": f"free-{scope}", "cpu": 4, "memory": 1024}],
                                  marker=marker)
        report = PlacementSync(placement, marker=marker).sync(desired)
        assert len(report.problems) == 1
        assert "placement.duplicate_name" in report.problems[0]
        assert report.providers == 1
    finally:
        placement.delete_resource_provider(foreign.uuid)


def test_inventory_in_use_cannot_be_removed_and_is_reported(placement, marker, synced):
    syncer, desired, _ = synced
    gpu = next(p for p in desired if p.inventories.get("VGPU"))
    consumer = "5b4e6a1e-0000-4000-8000-000000000001"
    placement.put_allocations(consumer, {gpu.uuid: {"VGPU": 1}}, project_id="p", user_id="u",
                              consumer_generation=None)
    try:
        shrunk = [replace(p, inventories={}) if p.uuid == gpu.uuid else p for p in desired]
        report = syncer.sync(shrunk)
        assert len(report.problems) == 1 and "placement.inventory.inuse" in report.problems[0]
        assert placement.get_inventories(gpu.uuid)[1] == {"VGPU": Inventory(1).normalised()}
    finally:
        placement.delete_allocations(consumer)


def test_stale_generations_raise_a_typed_conflict(placement, marker, synced):
    _, desired, _ = synced
    gpu = next(p for p in desired if p.kind == "gpu")
    gen, inv = placement.get_inventories(gpu.uuid)
    placement.set_inventories(gpu.uuid, gen, inv)
    with pytest.raises(Conflict) as err:
        placement.set_inventories(gpu.uuid, gen, inv)
    assert err.value.placement_code == "placement.concurrent_update"
    assert err.value.code == "gpuplane.openstack.conflict"


def test_placement_answers_gpu_requests_on_the_synced_trees(placement, synced, fleet_docs):
    """What the trees are for: Placement's own candidate search finds the GPUs gpuplane
    pushed (two GPUs on one NUMA node, MIG slices, a TEE), restricted to this test's site."""
    _, desired, _ = synced
    site_a = tree.site_aggregate(fleet_docs[0]["site"])
    numa_of = {p.uuid: p.parent_uuid for p in desired if p.kind == "gpu"}
    pair = placement.allocation_candidates({
        "resources": "VCPU:4", "member_of": site_a,
        "root_required": "HW_CPU_X86_AMD_SEV_SNP",
        "resources_G1": "VGPU:1", "required_G1": "CUSTOM_GPU_H100_80GB",
        "resources_G2": "VGPU:1", "required_G2": "CUSTOM_GPU_H100_80GB",
        "required_NUMA": "HW_NUMA_ROOT", "same_subtree": "_NUMA,_G1,_G2",
        "group_policy": "isolate"})
    assert pair.allocation_requests
    for req in pair.allocation_requests:
        g1, g2 = req["mappings"]["_G1"][0], req["mappings"]["_G2"][0]
        assert g1 != g2 and numa_of[g1] == numa_of[g2] == req["mappings"]["_NUMA"][0]
    mig = placement.allocation_candidates({
        "resources": "VCPU:1", "member_of": site_a,
        "resources_M": "CUSTOM_MIG_1G_10GB:2", "required_M": "CUSTOM_GPU_MIG_MODE"})
    [only] = mig.allocation_requests
    gpu1 = tree.provider_uuid(f"{fleet_docs[2]['name']}/gpu1")
    assert only["allocations"][gpu1]["resources"] == {"CUSTOM_MIG_1G_10GB": 2}
    assert mig.provider_summaries[gpu1]["resources"]["CUSTOM_MIG_1G_10GB"]["capacity"] == 7
