"""DESIGN invariant 1 for MIG slices: random create/occupy/vacate/destroy sequences never overlap
memory slices, never exceed the compute slices, never exceed a profile's instance count, and never
hand one instance to two tasks. Checked against an independent slice-by-slice model."""

from __future__ import annotations

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gpuplane.domain.errors import Conflict
from gpuplane.domain.inventory import GpuDevice, Host
from gpuplane.domain.mig import (
    MIG_MODELS,
    MIG_PROFILES,
    MigLayout,
    creatable_starts,
    find_profile,
    free_instances,
    layout_problems,
    obtainable_counts,
    occupy,
    placement_options,
    vacate,
    with_instance,
    without_instance,
)
from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.scheduling.placement import profiles
from gpuplane.scheduling.placement.framework import CycleState, pick_host
from gpuplane.scheduling.placement.plugins.mig import mig_plugins
from gpuplane.scheduling.snapshot import ClusterSnapshot


def _grid(layout: MigLayout) -> list[int]:
    """Independent model: how many instances cover each of the 8 memory slices."""
    grid = [0] * 8
    for inst in layout.instances:
        prof = MIG_PROFILES[layout.model][inst.profile]
        for s in range(inst.start, inst.start + prof.memory_slices):
            grid[s] += 1
    return grid


def _fits(layout: MigLayout, name: str, start: int) -> bool:
    """Independent reference for 'an instance of name can be created at start'."""
    prof = MIG_PROFILES[layout.model][name]
    if start not in prof.starts or start + prof.memory_slices > 8:
        return False
    grid = _grid(layout)
    if any(grid[s] for s in range(start, start + prof.memory_slices)):
        return False
    compute = sum(MIG_PROFILES[layout.model][i.profile].compute_slices for i in layout.instances)
    if compute + prof.compute_slices > 7:
        return False
    same = sum(1 for i in layout.instances if i.profile == name)
    return same < prof.max_instances


def _check(layout: MigLayout) -> None:
    assert layout_problems(layout) == []
    assert max(_grid(layout), default=0) <= 1, "memory slice used twice"
    compute = sum(MIG_PROFILES[layout.model][i.profile].compute_slices for i in layout.instances)
    assert compute <= 7 and compute == layout.compute_used
    for name, prof in MIG_PROFILES[layout.model].items():
        assert sum(1 for i in layout.instances if i.profile == name) <= prof.max_instances
    assert len({i.start for i in layout.instances}) == len(layout.instances)
    assert sum(MIG_PROFILES[layout.model][i.profile].usage_milli for i in layout.instances) <= 1000


OPS = st.lists(st.tuples(st.sampled_from(["create", "occupy", "vacate", "destroy"]),
                         st.integers(0, 6), st.integers(0, 7)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(model=st.sampled_from(MIG_MODELS), ops=OPS)
def test_random_operation_sequences_keep_the_layout_valid(model: str,
                                                          ops: list[tuple[str, int, int]]) -> None:
    layout = MigLayout.empty(model)
    names = list(MIG_PROFILES[layout.model])
    held: set[int] = set()  # starts a "task" holds, tracked independently
    for op, pi, start in ops:
        name = names[pi]
        before = layout
        try:
            if op == "create":
                expected = _fits(layout, name, start)
                assert (start in creatable_starts(layout, name)) == expected
                if expected:
                    layout = with_instance(layout, name, start)
                else:
                    try:
                        with_instance(layout, name, start)
                    except Conflict:
                        pass
                    else:
                        raise AssertionError(f"{name}@{start} created where it does not fit")
            elif op == "occupy":
                layout = occupy(layout, start)
                assert start not in held
                held.add(start)
            elif op == "vacate":
                layout = vacate(layout, start)
                assert start in held
                held.discard(start)
            else:
                layout = without_instance(layout, start)
                assert start not in held, "destroyed an instance a task holds"
        except Conflict:
            assert layout == before  # a refused operation changes nothing
        _check(layout)
        assert {i.start for i in layout.instances if i.occupied} == held


@settings(max_examples=200, deadline=None)
@given(model=st.sampled_from(MIG_MODELS), ops=OPS)
def test_obtainable_counts_are_achievable(model: str, ops: list[tuple[str, int, int]]) -> None:
    """obtainable_counts[p] instances of p can really be obtained, and not one more."""
    layout = MigLayout.empty(model)
    names = list(MIG_PROFILES[layout.model])
    for op, pi, start in ops:
        try:
            if op == "create":
                layout = with_instance(layout, names[pi], start)
            elif op == "occupy":
                layout = occupy(layout, start)
        except Conflict:
            pass
    counts = obtainable_counts(layout)
    assert placement_options(layout) <= placement_options(MigLayout.empty(model))
    for name in names:
        got = 0
        trial = layout
        while True:
            free = free_instances(trial, name)
            if free:
                trial = occupy(trial, free[0].start)
            elif starts := creatable_starts(trial, name):
                trial = occupy(with_instance(trial, name, starts[0]), starts[0])
            else:
                break
            got += 1
            _check(trial)
        assert got == counts[name], name


# -- placement level: the MIG plugins + ClusterSnapshot ----------------------------------------

_PLACE_MODELS = ("A100-40GB", "A100-80GB", "H100-80GB", "H200")
_REQ_PROFILES = sorted({n for m in _PLACE_MODELS for n in MIG_PROFILES[MigLayout.empty(m).model]})


def _servable(snap: ClusterSnapshot, profile: str) -> bool:
    """Independent check: some MIG GPU has a free instance or a fitting start for profile."""
    for (h, g), lay in snap.mig_layouts.items():
        lay = lay or MigLayout.empty(snap.hosts[h].gpus[g].model)
        prof = find_profile(lay.model, profile)
        if prof is None:
            continue
        if any(i.profile == prof.name and not i.occupied for i in lay.instances):
            return True
        if any(_fits(lay, prof.name, s) for s in range(8)):
            return True
        for s in prof.starts:  # by destroying idle instances in the way
            span = set(range(s, s + prof.memory_slices))
            hit = [i for i in lay.instances if span & set(range(
                i.start, i.start + MIG_PROFILES[lay.model][i.profile].memory_slices))]
            if hit and not any(i.occupied for i in hit) and _fits(
                    MigLayout(lay.model, tuple(i for i in lay.instances if i not in hit)),
                    prof.name, s):
                return True
    return False


@st.composite
def _fleet(draw) -> list[Host]:
    hosts = []
    for h in range(draw(st.integers(1, 4))):
        model = draw(st.sampled_from(_PLACE_MODELS))
        n = draw(st.integers(1, 3))
        hosts.append(Host(name=f"h{h}", cpu_milli=10**6, memory_mib=10**7, gpus=tuple(
            GpuDevice(index=i, model=model, mode="mig") for i in range(n))))
    return hosts


@settings(max_examples=150, deadline=None)
@given(hosts=_fleet(), stream=st.lists(st.tuples(st.sampled_from(_REQ_PROFILES), st.booleans(),
                                                 st.booleans()), max_size=40),
       weights=st.one_of(st.none(), st.dictionaries(st.sampled_from(_REQ_PROFILES),
                                                    st.floats(0, 10), max_size=4)))
def test_placements_never_overallocate_and_miss_nothing(
        hosts: list[Host], stream: list[tuple[str, bool, bool]],
        weights: dict[str, float] | None) -> None:
    snap = ClusterSnapshot.build(hosts)
    fit, pack, choose = mig_plugins(weights)
    running: list[tuple[TaskRequest, Placement]] = []
    for profile, release_first, trial in stream:
        if release_first and running:
            task, p = running.pop(0)
            snap.release(task, p)
        task = TaskRequest(cpu_milli=1, memory_mib=1, gpus=1, mig_profile=profile)
        state = CycleState(rng=np.random.default_rng(0))
        res = fit.filter(state, task, snap)
        if not res.passed.any():
            assert not _servable(snap, profile), f"{profile} rejected but a GPU could serve it"
            continue
        hosts_ok = np.nonzero(res.passed)[0]
        h = pick_host(np.asarray(pack.score(state, task, snap, hosts_ok)), hosts_ok, snap,
                      "rank", state.rng)
        p = choose.choose(state, task, snap, h)
        ref = p.mig[0]
        event("reclaim" if ref.reclaims else "create" if ref.created else "reuse")
        before = snap.mig_layouts[(h, ref.gpu_index)]
        if not ref.created:
            assert before.at(ref.start) is not None and not before.at(ref.start).occupied
        if trial:  # a trial assignment undone leaves the snapshot exactly as it was
            copy = snap.copy()
            snap.assign(task, p)()
            assert snap.state_equal(copy)
        snap.assign(task, p)  # raises Conflict on any over-allocation
        running.append((task, p))
        for (hh, g), lay in snap.mig_layouts.items():
            if lay is not None:
                _check(lay)
        occupied = sum(1 for lay in snap.mig_layouts.values() if lay
                       for i in lay.instances if i.occupied)
        assert occupied == len(running), "an instance is held by two tasks or leaked"


# -- mixed fleets through the shared profiles: whole, shared and MIG GPUs side by side ---------

_MIXED_POLICIES = ("random", "bestfit", "fgd", "gpuplane")


@st.composite
def _mixed_fleet(draw) -> list[Host]:
    out = []
    for h in range(draw(st.integers(1, 5))):
        modes = draw(st.lists(st.sampled_from(["whole", "shared", "mig"]), min_size=0, max_size=4))
        model = draw(st.sampled_from(["A100-80GB", "H100-80GB"]))
        out.append(Host(name=f"h{h}", cpu_milli=draw(st.integers(1, 32)) * 1000,
                        memory_mib=draw(st.integers(1, 64)) * 1024,
                        gpus=tuple(GpuDevice(index=i, model=model, mode=m)
                                   for i, m in enumerate(modes))))
    return out


@st.composite
def _any_task(draw) -> TaskRequest:
    kind = draw(st.sampled_from(["cpu", "share", "whole", "mig", "mig"]))
    cpu, mem = draw(st.integers(0, 8)) * 1000, draw(st.integers(0, 8)) * 1024
    if kind == "cpu":
        return TaskRequest(cpu, mem)
    if kind == "share":
        return TaskRequest(cpu, mem, gpus=1, gpu_milli=draw(st.integers(1, 999)))
    if kind == "whole":
        return TaskRequest(cpu, mem, gpus=draw(st.sampled_from([1, 2])))
    return TaskRequest(cpu, mem, gpus=1, mig_profile=draw(st.sampled_from(
        ["1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"])))


def _books(snap: ClusterSnapshot, booked: list[tuple[TaskRequest, Placement]]) -> None:
    """Invariant 1 over every resource kind, recomputed from the accepted placements."""
    cpu, mem = snap.cpu_cap.copy(), snap.mem_cap.copy()
    milli: dict[tuple[int, int], int] = {}
    held: dict[tuple[int, int], set[int]] = {}
    for task, p in booked:
        h = snap.index[p.host]
        cpu[h] -= task.cpu_milli
        mem[h] -= task.memory_mib
        for g in p.gpu_indices:
            dev = snap.hosts[h].gpus[g]
            if task.mig_profile is not None:
                assert dev.mode == "mig"
            else:
                assert dev.mode != "mig", "a non-MIG task landed on a MIG GPU"
                milli[(h, g)] = milli.get((h, g), 0) + p.gpu_milli
        for ref in p.mig:
            starts = held.setdefault((h, ref.gpu_index), set())
            assert ref.start not in starts, "one MIG instance given to two tasks"
            starts.add(ref.start)
    assert (cpu >= 0).all() and (mem >= 0).all()
    assert np.array_equal(snap.cpu_free, cpu) and np.array_equal(snap.mem_free, mem)
    for (h, g), used in milli.items():
        assert used <= 1000 and snap.gpu_free[h, g] == 1000 - used
    for (h, g), lay in snap.mig_layouts.items():
        lay = lay or MigLayout.empty(snap.hosts[h].gpus[g].model)
        _check(lay)
        assert {i.start for i in lay.instances if i.occupied} == held.get((h, g), set())


def _place_each(snap, tasks, prof, rng, check: bool = False) -> list[tuple[TaskRequest, Placement]]:
    """Place and book each task in turn (skipping unplaceable ones); with ``check``, verify the
    books after every task. Returns what was booked."""
    from gpuplane.scheduling.placement import place
    booked: list[tuple[TaskRequest, Placement]] = []
    for task in tasks:
        out = place(snap, task, prof, rng)
        if isinstance(out, Placement):
            snap.assign(task, out)
            booked.append((task, out))
        if check:
            _books(snap, booked)
    return booked


@settings(max_examples=100, deadline=None)
@given(hosts=_mixed_fleet(), stream=st.lists(_any_task(), min_size=1, max_size=25),
       policy=st.sampled_from(_MIXED_POLICIES), seed=st.integers(0, 2**32 - 1))
def test_mixed_fleets_never_overallocate_any_resource(hosts, stream, policy, seed) -> None:
    snap = ClusterSnapshot.build(hosts)
    prof = profiles.get(policy)  # every profile has the MIG filter and chooser
    _place_each(snap, stream, prof, np.random.default_rng(seed), check=True)


@settings(max_examples=100, deadline=None)
@given(hosts=_mixed_fleet(), background=st.lists(_any_task(), max_size=10),
       gang=st.lists(_any_task(), min_size=2, max_size=6), seed=st.integers(0, 2**32 - 1))
def test_gangs_with_mig_members_are_whole_or_nothing(hosts, background, gang, seed) -> None:
    from gpuplane.scheduling.placement import place_gang
    snap = ClusterSnapshot.build(hosts)
    prof = profiles.get("gpuplane")
    rng = np.random.default_rng(seed)
    booked = _place_each(snap, background, prof, rng)
    before = snap.copy()
    out = place_gang(snap, gang, prof, rng, keep=True)
    if isinstance(out, list):
        assert len(out) == len(gang)
        _books(snap, booked + list(zip(gang, out)))
    else:
        assert snap.state_equal(before), "a failed gang left part of itself behind"
        _books(snap, booked)
