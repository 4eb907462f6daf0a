"""DESIGN invariants 1 and 2 for placement, over random hosts and request streams.

1. No CPU, memory or GPU share is ever allocated beyond capacity: after every
   placement the snapshot's free amounts equal capacity minus what the accepted
   tasks asked for, and none is negative.
2. A gang is placed whole or not at all; a rolled-back trial leaves the
   snapshot exactly as before; a gang with a required topology (host, NVLink
   domain, rack) is wholly inside one domain or not placed.
"""

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gpuplane.domain.inventory import GpuDevice, Host
from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.scheduling.placement import Unschedulable, place, place_gang, profiles
from gpuplane.scheduling.placement.fragmentation import TypicalWorkload
from gpuplane.scheduling.placement.topology import domain_of, place_gang_within
from gpuplane.scheduling.snapshot import ClusterSnapshot

MODELS = ("G2", "T4", "A10")
POLICIES = ("random", "dotprod", "clustering", "packing", "bestfit", "fgd", "gpuplane")


@st.composite
def hosts(draw):
    n = draw(st.integers(1, 6))
    out = []
    for i in range(n):
        g = draw(st.sampled_from([0, 1, 2, 4, 8]))
        model = draw(st.sampled_from(MODELS))
        mode = draw(st.sampled_from(["shared", "shared", "whole"]))
        out.append(Host(f"h{i}", draw(st.integers(0, 64)) * 1000, draw(st.integers(0, 64)) * 1024,
                        gpus=tuple(GpuDevice(j, model, mode=mode) for j in range(g))))
    return out


@st.composite
def requests(draw):
    kind = draw(st.sampled_from(["cpu", "share", "whole"]))
    cpu = draw(st.integers(0, 16)) * 1000
    mem = draw(st.integers(0, 16)) * 1024
    models = frozenset(draw(st.sets(st.sampled_from(MODELS), max_size=2)))
    if kind == "cpu":
        return TaskRequest(cpu, mem)
    if kind == "share":
        return TaskRequest(cpu, mem, gpus=1, gpu_milli=draw(st.integers(1, 999)), gpu_models=models)
    return TaskRequest(cpu, mem, gpus=draw(st.sampled_from([1, 2, 4, 8])), gpu_models=models)


def check_books(snap: ClusterSnapshot, booked: list[tuple[TaskRequest, Placement]]) -> None:
    cpu = snap.cpu_cap.copy()
    mem = snap.mem_cap.copy()
    gpu = np.where(snap.gpu_free >= 0, 1000, -1) if snap.max_gpus else snap.gpu_free.copy()
    for task, p in booked:
        h = snap.index[p.host]
        cpu[h] -= task.cpu_milli
        mem[h] -= task.memory_mib
        for g in p.gpu_indices:
            gpu[h, g] -= p.gpu_milli
    assert (snap.cpu_free >= 0).all() and (snap.mem_free >= 0).all()
    assert np.array_equal(snap.cpu_free, cpu) and np.array_equal(snap.mem_free, mem)
    assert np.array_equal(snap.gpu_free, gpu)
    exists = snap.gpu_free >= 0
    assert (snap.gpu_free[exists] <= 1000).all()


def valid_placement(snap: ClusterSnapshot, task: TaskRequest, p: Placement) -> None:
    h = snap.index[p.host]
    host = snap.hosts[h]
    assert len(p.gpu_indices) == task.gpus
    for g in p.gpu_indices:
        dev = host.gpus[g]
        assert not task.gpu_models or dev.model in task.gpu_models
        if task.gpu_milli < 1000:
            assert dev.mode == "shared"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hosts(), st.lists(requests(), min_size=1, max_size=25), st.sampled_from(POLICIES),
       st.integers(0, 2**32 - 1))
def test_no_over_allocation_for_any_policy(hs, stream, policy, seed):
    snap = ClusterSnapshot.build(hs)
    rng = np.random.default_rng(seed)
    snap.shuffle_tie_rank(rng)
    prof = profiles.get(policy, workload=TypicalWorkload.from_tasks(stream))
    booked = []
    for task in stream:
        res = place(snap, task, prof, rng)
        if isinstance(res, Placement):
            valid_placement(snap, task, res)
            snap.assign(task, res)
            booked.append((task, res))
        else:
            assert isinstance(res, Unschedulable) and str(res).startswith(f"0/{len(hs)} hosts")
            assert sum(n for _p, _c, n in res.reasons) == len(hs)
        check_books(snap, booked)
    for task, p in reversed(booked):
        snap.release(task, p)
    assert snap.state_equal(ClusterSnapshot.build(hs))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hosts(), st.lists(requests(), max_size=10),
       st.lists(st.lists(requests(), min_size=1, max_size=6), min_size=1, max_size=4),
       st.sampled_from(POLICIES), st.integers(0, 2**32 - 1))
def test_gangs_are_placed_whole_or_not_at_all(hs, background, gangs, policy, seed):
    snap = ClusterSnapshot.build(hs)
    rng = np.random.default_rng(seed)
    prof = profiles.get(policy)
    booked = []
    for task in background:
        res = place(snap, task, prof, rng)
        if isinstance(res, Placement):
            snap.assign(task, res)
            booked.append((task, res))
    for gang in gangs:
        before = snap.copy()
        res = place_gang(snap, gang, prof, rng)
        assert snap.state_equal(before)          # trials rolled back either way
        if isinstance(res, Unschedulable):
            continue
        assert len(res) == len(gang)
        for task, p in zip(gang, res):          # every member fits together
            snap.assign(task, p)
            booked.append((task, p))
        check_books(snap, booked)


@settings(max_examples=150, deadline=None)
@given(hosts(), st.lists(requests(), min_size=1, max_size=20), st.integers(0, 2**32 - 1))
def test_a_rolled_back_trial_leaves_the_snapshot_equal_to_before(hs, stream, seed):
    snap = ClusterSnapshot.build(hs)
    rng = np.random.default_rng(seed)
    prof = profiles.get("bestfit")
    for task in stream[: len(stream) // 2]:
        res = place(snap, task, prof, rng)
        if isinstance(res, Placement):
            snap.assign(task, res)
    before = snap.copy()
    undos = []
    for task in stream[len(stream) // 2:]:
        res = place(snap, task, prof, rng)
        if isinstance(res, Placement):
            undos.append(snap.assign(task, res))
    for u in reversed(undos):
        u()
    assert snap.state_equal(before)


# -- gangs with a topology (placement.topology) ---------------------------------------------------
@st.composite
def topo_hosts(draw):
    """Hosts with racks (some without) and NVLink domains: none, one per host, two halves per
    host, or one domain spanning hosts (multi-node NVLink)."""
    n = draw(st.integers(1, 6))
    out = []
    for i in range(n):
        g = draw(st.sampled_from([0, 2, 4, 8, 8]))
        model = draw(st.sampled_from(MODELS[:2]))
        mode = draw(st.sampled_from(["shared", "whole"]))
        scheme = draw(st.sampled_from(["none", "host", "halves", "halves", "shared"]))
        nv = {"none": lambda j: None, "host": lambda j: f"h{i}",
              "halves": lambda j: f"h{i}-{j * 2 // max(g, 1)}", "shared": lambda j: "nvl"}[scheme]
        out.append(Host(f"h{i}", draw(st.integers(0, 96)) * 1000, draw(st.integers(0, 96)) * 1024,
                        gpus=tuple(GpuDevice(j, model, mode=mode, nvlink_domain=nv(j))
                                   for j in range(g)),
                        rack=draw(st.sampled_from(["", "r0", "r1", "r2"]))))
    return out


def gangs():
    """Identical members (the usual gang) or a mix."""
    same = st.builds(lambda r, n: [r] * n, requests(), st.integers(1, 4))
    return st.one_of(same, st.lists(requests(), min_size=1, max_size=5))


_HALVES = [Host("h0", 64_000, 65_536, gpus=tuple(
    GpuDevice(j, "T4", mode="whole", nvlink_domain=f"h0-{j // 4}") for j in range(8)), rack="r0")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(_HALVES, [(0, 0), (0, 1), (0, 2)], [], [TaskRequest(0, 0, gpus=2)], "nvlink", True,
         "bestfit", 0)                            # the tighter domain h0-0 has 1 GPU free
@given(topo_hosts(), st.lists(st.tuples(st.integers(0, 5), st.integers(0, 7)), max_size=16),
       st.lists(requests(), max_size=8), gangs(), st.sampled_from(["host", "nvlink", "rack"]),
       st.booleans(), st.sampled_from(POLICIES), st.integers(0, 2**32 - 1))
def test_a_required_topology_gang_is_inside_one_domain_or_not_placed(
        hs, used, background, gang, level, required, policy, seed):
    snap = ClusterSnapshot.build(hs)
    rng = np.random.default_rng(seed)
    prof = profiles.get(policy)
    booked = []
    one = TaskRequest(0, 0, gpus=1)
    for h, g in used:                             # scattered busy GPUs fragment the domains
        if h < len(hs) and g < hs[h].gpu_count and snap.gpu_free[h, g] == 1000:
            p = Placement(hs[h].name, (g,), 1000)
            snap.assign(one, p)
            booked.append((one, p))
    for task in background:
        res = place(snap, task, prof, rng)
        if isinstance(res, Placement):
            snap.assign(task, res)
            booked.append((task, res))
    before = snap.copy()
    res = place_gang_within(snap, gang, prof, rng, level, required)
    assert snap.state_equal(before)              # trials rolled back either way
    if isinstance(res, Unschedulable):
        return
    assert len(res) == len(gang)
    if required:
        doms = domain_of(snap, level, res)
        if level == "nvlink" and all(t.gpus == 0 for t in gang):
            assert doms == set()                  # CPU-only members use no NVLink
        else:
            assert len(doms) == 1 and None not in doms, doms
    for task, p in zip(gang, res):                # every member fits together
        snap.assign(task, p)
        booked.append((task, p))
    check_books(snap, booked)
