"""The placement fast path (``placement/fastpath.py``) decides exactly as the general path.

On random snapshots (host sizes, CPU/memory, whole/shared/MIG modes, models, labels, taints,
random occupancy with shares and whole GPUs, random tie ranks) and random whole-GPU requests,
``place_whole`` returns either ``None`` (it does not apply, or nothing fits) or the very
``Placement`` of ``place(..., fast=False)``; when it declines a request it applies to, the
general path finds no host. ``place`` with and without the fast path gives equal results,
failures (and their explanations) included, also restricted to some hosts. The snapshot's ``free_whole`` / ``free_milli``
counts, which the fast path reads, equal a recount after every assign, undo and release.
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuplane.domain.inventory import GpuDevice, Host, Taint
from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.scheduling.placement import Profile, Unschedulable, Within, place, profiles
from gpuplane.scheduling.placement import fastpath
from gpuplane.scheduling.placement.fastpath import place_whole
from gpuplane.scheduling.snapshot import ClusterSnapshot

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
MODELS = ("G2", "T4")


@st.composite
def hosts(draw, mig=False, extras=False):
    n = draw(st.integers(1, 8))
    out = []
    for i in range(n):
        g = draw(st.sampled_from([0, 1, 2, 4, 8, 8]))
        model = draw(st.sampled_from(MODELS))
        mode = draw(st.sampled_from(["whole", "shared", "shared"]))
        devs = [GpuDevice(j, model, mode=mode) for j in range(g)]
        if mig and g and draw(st.booleans()):
            devs[0] = GpuDevice(0, "A100-40GB", mode="mig")
        labels = {"zone": draw(st.sampled_from(["a", "b"]))} if extras else {}
        taints = (Taint("dedicated"),) if extras and draw(st.booleans()) else ()
        out.append(Host(f"h{i}", draw(st.integers(0, 32)) * 1000, draw(st.integers(0, 32)) * 1024,
                        gpus=tuple(devs), labels=labels, taints=taints))
    return out


def background():
    """Tasks occupying the cluster first: shares and whole GPUs, some CPU and memory."""
    share = st.builds(lambda c, m, milli: TaskRequest(c * 1000, m * 1024, gpus=1, gpu_milli=milli),
                      st.integers(0, 4), st.integers(0, 4), st.integers(1, 999))
    whole = st.builds(lambda c, m, g: TaskRequest(c * 1000, m * 1024, gpus=g),
                      st.integers(0, 4), st.integers(0, 4), st.sampled_from([1, 1, 2, 4]))
    return st.lists(st.one_of(share, whole), max_size=20)


def whole_requests(extras=False):
    """Whole-GPU requests (the fast path's kind), with CPU and memory or without."""
    models = st.sampled_from([frozenset(), frozenset({"T4"})]) if extras else st.just(frozenset())
    selector = st.sampled_from([{}, {"zone": "a"}]) if extras else st.just({})
    return st.builds(lambda c, m, g, ms, sel: TaskRequest(c * 1000, m * 1024, gpus=g,
                                                          gpu_models=ms, selector=sel),
                     st.sampled_from([0, 0, 1, 8]), st.sampled_from([0, 0, 1, 8]),
                     st.sampled_from([1, 1, 2, 3, 4, 8]), models, selector)


def _profile(weight: int) -> Profile:
    base = profiles.get("bestfit")
    if weight == 1:
        return base
    return Profile("bestfit-weighted", base.filters, ((base.scores[0][0], weight),),
                   base.choosers)


def _occupy(snap: ClusterSnapshot, tasks, rng) -> list:
    booked = []
    prof = profiles.get("bestfit")
    for t in tasks:
        res = place(snap, t, prof, rng, fast=False)
        if isinstance(res, Placement):
            snap.assign(t, res)
            booked.append((t, res))
    return booked


def _both_ways(snap: ClusterSnapshot, task: TaskRequest, prof: Profile) -> Placement | None:
    """``place_whole`` scoring the candidates as arrays and as plain floats: the same answer."""
    small = fastpath.SMALL
    try:
        fastpath.SMALL = 0
        arrays = place_whole(snap, task, prof)
        fastpath.SMALL = 10_000
        floats = place_whole(snap, task, prof)
    finally:
        fastpath.SMALL = small
    assert arrays == floats
    return arrays


def _counts_match(snap: ClusterSnapshot) -> None:
    if snap.max_gpus:
        assert np.array_equal(snap.free_whole, (snap.gpu_free >= 1000).sum(axis=1))
        assert np.array_equal(snap.free_milli, np.maximum(snap.gpu_free, 0).sum(axis=1))


@SETTINGS
@given(hosts(), background(), st.lists(whole_requests(), min_size=1, max_size=8),
       st.sampled_from([1, 1, 3]), st.integers(0, 2**32 - 1))
def test_fast_path_places_exactly_as_the_general_path(hs, busy, asks, weight, seed):
    rng = np.random.default_rng(seed)
    snap = ClusterSnapshot.build(hs)
    snap.shuffle_tie_rank(rng)
    _occupy(snap, busy, rng)
    prof = _profile(weight)
    for task in asks:
        fast = _both_ways(snap, task, prof)
        general = place(snap, task, prof, rng, fast=False)
        if fast is None:
            assert isinstance(general, Unschedulable)   # it applies here: declines only a miss
        else:
            assert fast == general
            snap.assign(task, fast)                     # the next request sees this one
            _counts_match(snap)


@SETTINGS
@given(hosts(mig=True, extras=True), background(),
       st.lists(whole_requests(extras=True), min_size=1, max_size=6),
       st.sampled_from(["bestfit", "bestfit", "packing", "random"]), st.integers(0, 2**32 - 1),
       st.one_of(st.none(), st.lists(st.booleans(), min_size=8, max_size=8)))
def test_place_gives_the_same_result_with_and_without_the_fast_path(hs, busy, asks, policy,
                                                                     seed, among):
    """Also restricted to some hosts (``within`` without devices: the cycle's lanes)."""
    snap = ClusterSnapshot.build(hs)
    snap.shuffle_tie_rank(np.random.default_rng(seed))
    _occupy(snap, busy, np.random.default_rng(seed))
    prof = profiles.get(policy)
    within = None if among is None else Within(np.array(among[:len(hs)]))
    for task in asks:
        a = place(snap, task, prof, np.random.default_rng(seed), within=within)
        b = place(snap, task, prof, np.random.default_rng(seed), fast=False, within=within)
        if isinstance(a, Placement) and within is not None:
            assert within.hosts[snap.index[a.host]]
        assert a == b
        if isinstance(a, Unschedulable):
            assert str(a) == str(b) and a.as_dict() == b.as_dict()
        else:
            snap.assign(task, a)


@SETTINGS
@given(hosts(mig=True), background(), st.integers(0, 2**32 - 1))
def test_free_counts_follow_every_assign_undo_and_release(hs, busy, seed):
    rng = np.random.default_rng(seed)
    snap = ClusterSnapshot.build(hs)
    _counts_match(snap)
    booked = _occupy(snap, busy, rng)
    _counts_match(snap)
    copy = snap.copy()                     # its own counts: unchanged by what follows
    for t, p in booked[::2]:
        snap.release(t, p)
        _counts_match(snap)
    _counts_match(copy)
    trial = [snap.assign(t, p) for t, p in booked[::2]]
    _counts_match(snap)
    for u in reversed(trial):
        u()
        _counts_match(snap)
