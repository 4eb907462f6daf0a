"""The host -> provider tree mapping, its reverse (import) and the sync plan: pure, no Placement."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from gpuplane.domain.errors import InvalidInput
from gpuplane.drivers.openstack import tree
from gpuplane.drivers.openstack.model import Inventory, ProviderState
from gpuplane.drivers.openstack.plan import plan
from gpuplane.service.specs import HostSpec


def by_name(providers):
    return {p.name: p for p in providers}


def test_root_carries_cpu_memory_tee_traits_and_the_site_aggregate(fleet_docs):
    providers = by_name(tree.fleet_tree(fleet_docs))
    root = providers[fleet_docs[0]["name"]]
    assert root.parent_uuid is None and root.kind == "host"
    assert root.inventories == {"VCPU": Inventory(64), "MEMORY_MB": Inventory(512 * 1024)}
    assert root.traits == {tree.MANAGED_TRAIT, "HW_CPU_X86_AMD_SEV", "HW_CPU_X86_AMD_SEV_SNP"}
    assert root.aggregates == {tree.site_aggregate(fleet_docs[0]["site"])}
    assert providers[fleet_docs[1]["name"]].traits == {tree.MANAGED_TRAIT, "HW_CPU_X86_INTEL_TDX"}
    assert providers[fleet_docs[2]["name"]].traits == {tree.MANAGED_TRAIT}


def test_gpus_hang_under_their_numa_node_with_class_per_mode(fleet_docs):
    providers = by_name(tree.fleet_tree(fleet_docs))
    w, s, m = (d["name"] for d in fleet_docs)
    numa1 = providers[f"{w}/numa1"]
    assert numa1.traits == {tree.MANAGED_TRAIT, "HW_NUMA_ROOT"} and not numa1.inventories
    whole = providers[f"{w}/gpu3"]
    assert whole.parent_uuid == numa1.uuid
    assert whole.inventories == {"VGPU": Inventory(1)}
    assert whole.traits == {tree.MANAGED_TRAIT, "CUSTOM_GPU_H100_80GB",
                            "CUSTOM_GPU_MEMORY_MIB_81920"}
    assert providers[f"{s}/gpu1"].inventories == {"CUSTOM_GPU_MILLI": Inventory(1000)}
    mig0, mig1, mig2 = (providers[f"{m}/gpu{i}"] for i in range(3))
    assert mig0.inventories == {"CUSTOM_MIG_3G_40GB": Inventory(2)}
    assert mig1.inventories == {"CUSTOM_MIG_1G_10GB": Inventory(7)}
    assert mig2.inventories == {}
    assert all(tree.MIG_MODE_TRAIT in g.traits for g in (mig0, mig1, mig2))
    assert f"{s}/numa1" not in providers  # NUMA nodes only where GPUs are


def test_every_tree_lists_parents_before_children(fleet_docs):
    seen = set()
    for p in tree.fleet_tree(fleet_docs):
        assert p.parent_uuid is None or p.parent_uuid in seen
        seen.add(p.uuid)


def test_uuids_are_deterministic_per_name_and_sites_share_one_aggregate(fleet_docs):
    a, b = tree.fleet_tree(fleet_docs), tree.fleet_tree(fleet_docs)
    assert [p.uuid for p in a] == [p.uuid for p in b]
    assert a[0].uuid == tree.provider_uuid(fleet_docs[0]["name"])
    roots = [p for p in a if p.parent_uuid is None]
    assert roots[0].aggregates == roots[2].aggregates != roots[1].aggregates


@pytest.mark.parametrize("text, expected", [
    ("H100-80GB", "CUSTOM_GPU_H100_80GB"),
    ("nvidia a100 (sxm4) 40gb", "CUSTOM_GPU_NVIDIA_A100_SXM4_40GB"),
    ("L40S", "CUSTOM_GPU_L40S"),
])
def test_model_traits_follow_placement_name_rules(text, expected):
    assert tree.model_trait(text) == expected


@pytest.mark.parametrize("profile, rc", [
    ("1g.10gb", "CUSTOM_MIG_1G_10GB"), ("1g.10gb+me", "CUSTOM_MIG_1G_10GB_ME"),
    ("7g.141gb", "CUSTOM_MIG_7G_141GB")])
def test_mig_classes_name_the_profile_and_read_back(profile, rc):
    assert tree.mig_class(profile) == rc
    assert tree.mig_profile_of_class(rc) == profile


def test_whole_gpus_may_be_modelled_as_pci_passthrough(fleet_docs):
    gpu = by_name(tree.fleet_tree(fleet_docs, whole_class="PGPU"))[f"{fleet_docs[0]['name']}/gpu0"]
    assert gpu.inventories == {"PGPU": Inventory(1)}
    with pytest.raises(InvalidInput):
        tree.host_tree(fleet_docs[0], whole_class="GPU")


def test_api_host_items_and_spec_documents_map_alike(fleet_docs):
    doc = fleet_docs[0]
    api_item = {**{k: v for k, v in doc.items() if k != "memory"}, "memory_mib": 512 * 1024,
                "cpu": 64.0, "state": "ready"}
    assert tree.host_tree(doc) == tree.host_tree(api_item)


def test_bad_hosts_are_refused_naming_every_field():
    with pytest.raises(InvalidInput) as err:
        tree.fleet_tree([{"name": "a", "cpu": 1, "memory": "lots", "tee": "sgx",
                          "gpus": [{"index": 0, "model": "X", "mode": "half"}]},
                         {"name": "b", "cpu": 1, "memory": 1}, {"name": "b", "cpu": 1,
                                                                "memory": 1}])
    locs = {e.loc for e in err.value.errors}
    assert {"hosts[0].memory", "hosts[0].tee", "hosts[0].gpus[0].mode", "hosts[2].name"} <= locs


def test_very_long_host_names_still_give_valid_provider_names():
    name = "h" * 250
    for p in tree.host_tree({"name": name, "cpu": 1, "memory": 1,
                             "gpus": [{"index": 0, "model": "T4", "memory_mib": 1}]}):
        assert len(p.name) <= tree.MAX_NAME


def _comparable(doc):
    h = tree.host_view(doc)
    return (h.name, h.site, h.cpu_cores, h.memory_mib, h.tee,
            tuple((g.index, g.model, g.memory_mib, g.numa, g.mode, tuple(sorted(g.mig_profiles)))
                  for g in h.gpus))


def test_import_reads_back_what_the_mapping_wrote(fleet_docs):
    sites = {d["site"] for d in fleet_docs}
    result = tree.import_trees(tree.fleet_tree(fleet_docs), sites)
    assert not result.problems and not result.skipped
    assert sorted(map(_comparable, result.hosts)) == sorted(map(_comparable, fleet_docs))
    for doc in result.hosts:  # what `gpuplane apply -f` takes
        HostSpec.model_validate({k: v for k, v in doc.items() if k != "kind"})


def test_import_of_the_demo_fleet_round_trips():
    docs = [d for d in yaml.safe_load_all(open("examples/fleet-demo.yaml")) if d["kind"] == "Host"]
    sites = {d["site"] for d in docs}
    result = tree.import_trees(tree.fleet_tree(docs), sites)
    assert sorted(map(_comparable, result.hosts)) == sorted(map(_comparable, docs))


def test_import_reads_foreign_trees_nova_style():
    node = ProviderState("r", "Compute_1.example", None,
                         {"VCPU": Inventory(32), "MEMORY_MB": Inventory(65536)},
                         frozenset({"COMPUTE_STATUS_DISABLED"}), frozenset({"agg-uuid-1"}))
    pgpu = ProviderState("g", "Compute_1.example_pci_0000_84_00_0", "r",
                         {"VGPU": Inventory(16)}, frozenset({"CUSTOM_NVIDIA_11"}))
    storage = ProviderState("s", "shared-storage", None, {"DISK_GB": Inventory(1000)})
    result = tree.import_trees([node, pgpu, storage])
    assert result.skipped and "shared-storage" in result.skipped[0]
    [host] = result.hosts
    assert host["name"] == "compute-1.example" and host["site"] == "agg-agg-uuid"
    assert host["gpus"][0]["mode"] == "shared" and host["gpus"][0]["model"] == "unknown"
    assert result.problems  # memory unknown: said, not guessed silently


def test_plan_of_an_unchanged_fleet_is_empty(fleet_docs):
    desired = tree.fleet_tree(fleet_docs)
    observed = {p.uuid: replace(p, generation=1) for p in desired}
    assert plan(desired, observed) == []


def test_plan_names_each_difference_and_deletes_deepest_first(fleet_docs):
    desired = tree.fleet_tree(fleet_docs)
    observed = {p.uuid: replace(p, generation=1) for p in desired}
    w = fleet_docs[0]["name"]
    gpu = next(p for p in desired if p.name == f"{w}/gpu0")
    observed[gpu.uuid] = replace(gpu, inventories={"VGPU": Inventory(2)},
                                 traits=gpu.traits - {"CUSTOM_GPU_H100_80GB"})
    del observed[next(p.uuid for p in desired if p.name == f"{w}/gpu1")]
    # a host gpuplane no longer has: its tree goes, children before the root
    gone = tree.host_tree({"name": "gone", "cpu": 1, "memory": 1,
                           "gpus": [{"index": 0, "model": "T4", "memory_mib": 1}]})
    observed.update({p.uuid: replace(p, generation=3) for p in gone})
    plans = {hp.host: hp for hp in plan(desired, observed)}
    assert set(plans) == {w, "gone"}
    actions = [(c.action, c.target) for c in plans[w].changes]
    assert actions == [("inventory", f"{w}/gpu0"), ("traits", f"{w}/gpu0"),
                       ("create", f"{w}/gpu1"), ("inventory", f"{w}/gpu1"),
                       ("traits", f"{w}/gpu1")]
    assert "+CUSTOM_GPU_H100_80GB" in plans[w].changes[1].detail
    assert [p.name for p in plans["gone"].deletes] == ["gone/gpu0", "gone/numa0", "gone"]
