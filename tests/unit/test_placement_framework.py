"""place(), explanations, tie-breaking, registry/profiles and gangs."""

import numpy as np
import pytest

from gpuplane.domain.errors import InvalidInput
from gpuplane.domain.inventory import Host, Taint, uniform_host
from gpuplane.domain.requests import Placement, TaskRequest, Toleration
from gpuplane.scheduling.placement import Status, Unschedulable, place, place_gang, profiles
from gpuplane.scheduling.placement.registry import make_plugin
from gpuplane.scheduling.snapshot import ClusterSnapshot

RNG = np.random.default_rng


def fleet(n_g2=3, n_t4=2):
    hosts = [uniform_host(f"g2-{i}", 96000, 393216, 8, "G2") for i in range(n_g2)]
    hosts += [uniform_host(f"t4-{i}", 8000, 65536, 2, "T4") for i in range(n_t4)]
    return ClusterSnapshot.build(hosts)


def test_unschedulable_summary_counts_hosts_per_reason():
    s = fleet()
    for h in range(3):  # fill every G2 GPU
        s.assign(TaskRequest(1000, 1, gpus=8), Placement(f"g2-{h}", tuple(range(8)), 1000))
    res = place(s, TaskRequest(16000, 1024, gpus=1), profiles.get("bestfit"), RNG(0))
    assert isinstance(res, Unschedulable)
    assert str(res) == "0/5 hosts: 3 too few free GPUs of model G2, 2 too little CPU"
    assert res.reasons == [("gpu_fit", "insufficient_gpu", 3), ("resource_fit", "insufficient_cpu", 2)]
    assert res.status == Status.UNSCHEDULABLE
    assert res.as_dict()["reasons"][0]["hosts"] == 3
    assert res.hints == ["closest: t4-0 has 8000 of 16000 milli-CPU free",
                         "closest: g2-0 has 0 of 1 GPUs free"]
    assert res.detail.startswith(str(res) + "; closest: t4-0")


def test_constraint_rejections_are_unresolvable():
    s = fleet()
    res = place(s, TaskRequest(1000, 1, gpus=1, gpu_models=frozenset({"A100-80GB"})),
                profiles.get("fgd"), RNG(0))
    assert str(res) == "0/5 hosts: 5 without a GPU of model A100-80GB"
    assert res.status == Status.UNRESOLVABLE


def test_explain_false_skips_reasons():
    res = place(fleet(), TaskRequest(10**9, 1), profiles.get("packing"), RNG(0), explain=False)
    assert isinstance(res, Unschedulable) and res.reasons == []


def test_place_does_not_change_the_snapshot():
    s = fleet()
    before = s.copy()
    for name in profiles.BASELINES:
        res = place(s, TaskRequest(4000, 100, gpus=1, gpu_milli=500), profiles.get(name), RNG(1))
        assert isinstance(res, Placement)
    assert s.state_equal(before)


def test_ties_go_to_the_lowest_fixed_rank():
    s = fleet(n_g2=4, n_t4=0)
    s.set_tie_rank([3, 1, 0, 2])
    p = profiles.get("packing")
    for _ in range(3):  # packing ties on idle identical hosts: always the same winner
        assert place(s, TaskRequest(1000, 1), p, RNG(5)).host == "g2-2"


def test_random_tie_break_is_seeded():
    s = fleet(n_g2=6, n_t4=0)
    a = [place(s, TaskRequest(1000, 1), profiles.get("random"), RNG(3)).host for _ in range(3)]
    b = [place(s, TaskRequest(1000, 1), profiles.get("random"), RNG(3)).host for _ in range(3)]
    assert a == b
    rng = RNG(3)
    hosts = {place(s, TaskRequest(1000, 1), profiles.get("random"), rng).host for _ in range(40)}
    assert len(hosts) > 1


def test_label_selector_and_taints_filter_hosts():
    s = ClusterSnapshot.build([
        uniform_host("eu", 8000, 1000, 1, "T4", labels={"region": "eu"}),
        uniform_host("us", 8000, 1000, 1, "T4", labels={"region": "us"},
                     taints=(Taint("team", "ml"),)),
    ])
    p = profiles.get("bestfit")
    res = place(s, TaskRequest(1000, 1, selector={"region": "us"}), p, RNG(0))
    assert str(res) == "0/2 hosts: 1 not matching labels region=us, 1 with an untolerated taint"
    ok = place(s, TaskRequest(1000, 1, selector={"region": "us"},
                              tolerations=(Toleration("team", "Equal", "ml"),)), p, RNG(0))
    assert ok.host == "us"


def test_registry_and_profiles_list_valid_names():
    with pytest.raises(InvalidInput) as e:
        make_plugin("nope")
    assert "fgd" in str(e.value) and e.value.code == "gpuplane.placement.unknown_plugin"
    with pytest.raises(InvalidInput) as e:
        profiles.get("nope")
    assert "bestfit" in str(e.value)
    for name in profiles.BASELINES:
        assert profiles.get(name).name == name
    assert profiles.DEFAULT == "gpuplane" and "gpuplane" in profiles.names()


def test_cpu_only_tasks_get_no_gpus():
    res = place(fleet(), TaskRequest(2000, 10), profiles.get("fgd"), RNG(0))
    assert res.gpu_indices == () and res.gpu_milli == 0


def test_gang_is_placed_whole_and_snapshot_unchanged_by_default():
    s = fleet(n_g2=2, n_t4=0)
    before = s.copy()
    gang = [TaskRequest(8000, 100, gpus=4)] * 4
    res = place_gang(s, gang, profiles.get("bestfit"), RNG(0))
    assert isinstance(res, list) and len(res) == 4
    used = {}
    for p in res:
        for g in p.gpu_indices:
            assert (p.host, g) not in used
            used[(p.host, g)] = True
    assert s.state_equal(before)
    kept = place_gang(s, gang, profiles.get("bestfit"), RNG(0), keep=True)
    assert len(kept) == 4 and (s.gpu_free == 0).all()


def test_gang_that_does_not_fit_leaves_nothing_behind():
    s = fleet(n_g2=2, n_t4=0)
    before = s.copy()
    res = place_gang(s, [TaskRequest(8000, 100, gpus=4)] * 5, profiles.get("fgd"), RNG(0))
    assert isinstance(res, Unschedulable) and res.member == 4
    assert "too few free GPUs of model G2" in str(res)
    assert s.state_equal(before)


def test_host_without_gpus_is_reported():
    s = ClusterSnapshot.build([Host("cpu", 64000, 1000)])
    res = place(s, TaskRequest(1000, 1, gpus=1), profiles.get("bestfit"), RNG(0))
    assert str(res) == "0/1 hosts: 1 without a usable GPU"


def test_a_profile_without_a_mig_chooser_says_so():
    import dataclasses
    full = profiles.get("bestfit")
    bare = dataclasses.replace(full, choosers=(make_plugin("bestfit_gpus"),),
                               filters=tuple(f for f in full.filters if f.name != "MigFit"))
    res = place(fleet(), TaskRequest(1000, 1, gpus=1, mig_profile="1g.10gb"), bare, RNG(0))
    assert isinstance(res, Unschedulable) and res.status == Status.ERROR
    assert "no chooser for MIG requests" in str(res)


def test_every_registered_profile_places_mig_requests():
    from gpuplane.domain.inventory import GpuDevice
    host = Host(name="m0", cpu_milli=8000, memory_mib=8192,
                gpus=tuple(GpuDevice(index=i, model="H100-80GB", mode="mig") for i in range(2)))
    for name in profiles.names():
        res = place(ClusterSnapshot.build([host]),
                    TaskRequest(1000, 1, gpus=1, mig_profile="3g.40gb"), profiles.get(name), RNG(0))
        assert not isinstance(res, Unschedulable), (name, str(res))
        assert res.mig and res.mig[0].profile == "3g.40gb"
