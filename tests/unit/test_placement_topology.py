"""Gangs inside one topology domain (placement.topology) and through the cycle."""

import numpy as np
import pytest

from gpuplane.domain.errors import InvalidInput
from gpuplane.domain.inventory import GpuDevice, Host
from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.domain.tenancy import FlavorQuota, Project, QuotaTree
from gpuplane.scheduling.admission import reasons as R
from gpuplane.scheduling.cycle import CycleOptions, run_cycle
from gpuplane.scheduling.placement import Unschedulable, profiles
from gpuplane.scheduling.placement.topology import (MIG_NO_NVLINK, NO_DOMAIN,
                                                    TopologyUnschedulable, domain_of,
                                                    place_gang_within)
from gpuplane.scheduling.queueing import PendingWorkload
from gpuplane.scheduling.snapshot import ClusterSnapshot


def host(name, rack="", gpus=8, nvlink=None, mode="whole"):
    """``nvlink(g)`` names GPU g's NVLink domain (``None``: no NVLink)."""
    return Host(name, 64_000, 512_000, tuple(
        GpuDevice(g, "H100-80GB", mode=mode, nvlink_domain=nvlink(g) if nvlink else None)
        for g in range(gpus)), rack=rack)


def whole(n, cpu=1000):
    return TaskRequest(cpu, 1024, gpus=n)


def rng():
    return np.random.default_rng(0)


def racks(per_rack=(3, 3, 2)):
    return [host(f"r{r}h{i}", rack=f"r{r}") for r, n in enumerate(per_rack) for i in range(n)]


def fill(snap, name, gpus):
    snap.assign(whole(len(gpus)), Placement(name, tuple(gpus), 1000))


@pytest.mark.parametrize("policy", ["bestfit", "fgd", "gpuplane", "packing"])
def test_required_rack_puts_every_member_in_one_rack_tightest_first(policy):
    snap = ClusterSnapshot.build(racks())
    fill(snap, "r0h0", range(8))                      # r0 has 2 free hosts, r1 3, r2 2
    before = snap.copy()
    res = place_gang_within(snap, [whole(8)] * 2, profiles.get(policy), rng(), "rack")
    assert isinstance(res, list) and len(res) == 2
    assert domain_of(snap, "rack", res) == {"r0"}     # tightest rack that fits (r0 < r2 by name)
    assert snap.state_equal(before)                   # keep=False: trials undone
    res = place_gang_within(snap, [whole(8)] * 3, profiles.get(policy), rng(), "rack")
    assert domain_of(snap, "rack", res) == {"r1"}     # only r1 has 3 free hosts


def test_required_rack_failure_reason_names_the_level_and_the_closest_rack():
    snap = ClusterSnapshot.build(racks())
    before = snap.copy()
    res = place_gang_within(snap, [whole(8)] * 4, profiles.get("bestfit"), rng(), "rack")
    assert isinstance(res, TopologyUnschedulable) and isinstance(res, Unschedulable)
    assert res.reasons == [("topology", NO_DOMAIN, 3)]
    assert str(res) == ("no rack can hold the gang whole (4 x 8 GPUs): 3 racks; "
                        "closest: rack r0 with room for 3 of 4 members")
    assert res.closest == "rack r0" and res.tried == 0 and res.domains == 3
    assert snap.state_equal(before)
    # 4 hosts with 8 GPUs exist in total: without topology the gang would fit
    assert isinstance(place_gang_within(snap, [whole(8)] * 4, profiles.get("bestfit"), rng(),
                                        "rack", required=False), list)


def test_a_rack_that_passes_the_capacity_check_but_not_placement_is_explained():
    snap = ClusterSnapshot.build(racks((2,)))
    fill(snap, "r0h0", range(4))
    fill(snap, "r0h1", range(4, 8))                   # 8 GPUs free in r0, but 4 per host
    res = place_gang_within(snap, [whole(4), whole(6)], profiles.get("bestfit"), rng(), "rack")
    assert isinstance(res, TopologyUnschedulable) and res.tried == 0
    res = place_gang_within(snap, [whole(4), whole(4)], profiles.get("bestfit"), rng(), "rack")
    assert domain_of(snap, "rack", res) == {"r0"}


def test_hosts_without_a_rack_never_hold_a_required_rack_gang():
    snap = ClusterSnapshot.build([host("a"), host("b")])
    res = place_gang_within(snap, [whole(1)] * 2, profiles.get("bestfit"), rng(), "rack")
    assert isinstance(res, TopologyUnschedulable) and res.status.name == "UNRESOLVABLE"
    assert "no host has a rack set" in str(res)


def test_required_nvlink_stays_inside_one_domain_of_a_host():
    halves = host("h0", nvlink=lambda g: f"h0-{g // 4}")
    snap = ClusterSnapshot.build([halves])
    fill(snap, "h0", [0])                             # h0-0 has 3 free GPUs, h0-1 has 4
    res = place_gang_within(snap, [whole(2)] * 2, profiles.get("fgd"), rng(), "nvlink")
    assert domain_of(snap, "nvlink", res) == {"h0-1"}
    assert sorted(g for p in res for g in p.gpu_indices) == [4, 5, 6, 7]
    res = place_gang_within(snap, [whole(1)] * 3, profiles.get("fgd"), rng(), "nvlink")
    assert domain_of(snap, "nvlink", res) == {"h0-0"}  # tightest domain that fits
    # 5 GPUs: no domain has them although the host has 7 free
    res = place_gang_within(snap, [whole(5)], profiles.get("fgd"), rng(), "nvlink")
    assert isinstance(res, TopologyUnschedulable)
    assert "closest: NVLink domain h0-1 with room for 0 of 1 members" in str(res)


def test_required_nvlink_may_span_hosts_of_one_multi_node_domain():
    nvl72 = lambda g: "nvl72"  # noqa: E731
    snap = ClusterSnapshot.build([host("a", nvlink=nvl72), host("b", nvlink=nvl72),
                                  host("c", nvlink=lambda g: "c")])
    res = place_gang_within(snap, [whole(8)] * 2, profiles.get("bestfit"), rng(), "nvlink")
    assert {p.host for p in res} == {"a", "b"} and domain_of(snap, "nvlink", res) == {"nvl72"}


def test_shared_gpu_members_use_only_devices_of_the_domain():
    h = host("h0", mode="shared", nvlink=lambda g: f"d{g // 4}")
    snap = ClusterSnapshot.build([h])
    snap.assign(TaskRequest(0, 0, gpus=1, gpu_milli=700), Placement("h0", (0,), 700))
    share = TaskRequest(1000, 1024, gpus=1, gpu_milli=500)
    for policy in ("fgd", "gpuplane", "bestfit", "random"):
        res = place_gang_within(snap, [share] * 3, profiles.get(policy), rng(), "nvlink")
        assert isinstance(res, list) and len(domain_of(snap, "nvlink", res)) == 1


@pytest.mark.parametrize("level", ["rack", "nvlink", "host"])
def test_same_inputs_same_placements(level):
    hs = [host(f"r{i % 3}h{i}", rack=f"r{i % 3}", nvlink=lambda g, i=i: f"{i}-{g // 4}")
          for i in range(9)]
    gang = [whole(2), whole(1), TaskRequest(500, 64, gpus=0)]
    runs = []
    for _ in range(2):
        snap = ClusterSnapshot.build(hs, tie_rank=[(7 * i) % 9 for i in range(9)])
        fill(snap, "r0h0", [0, 5])
        runs.append(place_gang_within(snap, gang, profiles.get("gpuplane"), rng(), level))
    assert isinstance(runs[0], list) and runs[0] == runs[1]


def test_mig_members_cannot_be_inside_an_nvlink_domain():
    snap = ClusterSnapshot.build([host("h0", nvlink=lambda g: "d")])
    mig = TaskRequest(1000, 1024, gpus=1, mig_profile="1g.10gb")
    res = place_gang_within(snap, [mig, whole(1)], profiles.get("bestfit"), rng(), "nvlink")
    assert isinstance(res, TopologyUnschedulable) and res.reasons[0][1] == MIG_NO_NVLINK
    assert res.status.name == "UNRESOLVABLE"


def test_preferred_tries_domains_first_then_falls_back_to_anywhere():
    snap = ClusterSnapshot.build(racks((2, 2)))
    fill(snap, "r0h0", range(8))
    prof = profiles.get("bestfit")
    res = place_gang_within(snap, [whole(8)] * 2, prof, rng(), "rack", required=False)
    assert domain_of(snap, "rack", res) == {"r1"}     # a rack holds it: used
    res = place_gang_within(snap, [whole(8)] * 3, prof, rng(), "rack", required=False)
    assert isinstance(res, list) and domain_of(snap, "rack", res) == {"r0", "r1"}
    res = place_gang_within(snap, [whole(8)] * 4, prof, rng(), "rack", required=False)
    assert isinstance(res, Unschedulable) and not isinstance(res, TopologyUnschedulable)


def test_keep_leaves_the_placements_assigned_and_bad_input_names_the_field():
    snap = ClusterSnapshot.build(racks())
    res = place_gang_within(snap, [whole(8)] * 2, profiles.get("bestfit"), rng(), "rack",
                            keep=True)
    assert int((snap.gpu_free == 1000).sum()) == 8 * 8 - 16 and len(res) == 2
    with pytest.raises(InvalidInput) as e:
        place_gang_within(snap, [whole(1)], profiles.get("bestfit"), rng(), "row")
    assert e.value.errors[0].loc == "topology"
    with pytest.raises(InvalidInput):
        place_gang_within(snap, [], profiles.get("bestfit"), rng(), "rack")


def test_snapshot_exposes_racks_and_nvlink_domains_lazily():
    snap = ClusterSnapshot.build([host("a", rack="r1", gpus=2, nvlink=lambda g: "x"),
                                  host("b", gpus=2)])
    assert "_host_rack" not in snap.__dict__
    assert snap.host_rack.tolist() == [0, -1] and snap.rack_names == ["r1"]
    assert snap.gpu_nvlink.tolist() == [[0, 0], [-1, -1]] and snap.nvlink_names == ["x"]
    assert snap.copy().host_rack.tolist() == [0, -1]


# -- through the cycle ---------------------------------------------------------------------------
def _quotas():
    return QuotaTree([Project("p0", cohort="c", quotas={"gpu": FlavorQuota(1000 * 1000)})])


def _cycle(snap, pending):
    return run_cycle(snap, pending, [], _quotas(), 0.0, rng(),
                     options=CycleOptions(profile="bestfit"))


def test_cycle_admits_a_rack_gang_inside_one_rack_and_explains_a_blocked_one():
    snap = ClusterSnapshot.build(racks())
    w = PendingWorkload("g", "p0", [whole(8)] * 3, topology="rack")
    res = _cycle(snap, [w])
    [a] = res.placements
    assert domain_of(snap, "rack", a.placements) == {"r0"}
    big = PendingWorkload("big", "p0", [whole(8)] * 3, topology="rack")
    res = _cycle(snap, [big])                         # r1 still has 3 hosts free
    assert domain_of(snap, "rack", res.placements[0].placements) == {"r1"}
    snap = ClusterSnapshot.build(racks((2, 2)))
    fill(snap, "r0h0", range(8))
    fill(snap, "r1h0", range(8))                      # two free hosts, in different racks
    res = _cycle(snap, [PendingWorkload("x", "p0", [whole(8)] * 2, topology="rack")])
    assert not res.placements
    reason = res.pending["x"]
    assert reason.code == R.NO_TOPOLOGY == "capacity.topology"
    assert reason.message == ("no rack can hold the gang whole (2 x 8 GPUs): 2 racks; "
                              "closest: rack r0 with room for 1 of 2 members")
    assert reason.detail["topology"] == "rack" and reason.detail["closest"] == "rack r0"
    pref = PendingWorkload("y", "p0", [whole(8)] * 2, topology="rack", topology_required=False)
    res = _cycle(snap, [pref])
    assert [a.workload_id for a in res.placements] == ["y"]
    assert domain_of(snap, "rack", res.placements[0].placements) == {"r0", "r1"}


def test_cycle_keeps_a_host_gang_of_shared_members_on_one_host():
    hs = [host(f"h{i}", gpus=2, mode="shared") for i in range(3)]
    snap = ClusterSnapshot.build(hs)
    share = TaskRequest(1000, 1024, gpus=1, gpu_milli=600)
    res = _cycle(snap, [PendingWorkload("s", "p0", [share] * 2, topology="host")])
    assert len({p.host for p in res.placements[0].placements}) == 1
    res = _cycle(snap, [PendingWorkload("t", "p0", [share] * 3, topology="host")])
    assert not res.placements and res.pending["t"].code == R.NO_TOPOLOGY
