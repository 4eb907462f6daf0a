"""The online workload model (scheduling/placement/online.py) and how ``gpuplane`` uses it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuplane.domain.inventory import GpuDevice, Host
from gpuplane.domain.requests import TaskRequest
from gpuplane.scheduling.placement import profiles
from gpuplane.scheduling.placement.fragmentation import TypicalWorkload
from gpuplane.scheduling.placement.online import OnlineWorkload
from gpuplane.scheduling.snapshot import ClusterSnapshot
from gpuplane.sim.openb_run import place_in_order

SHAPES = [TaskRequest(cpu_milli=4000, memory_mib=0, gpus=1, gpu_milli=500),
          TaskRequest(cpu_milli=8000, memory_mib=0, gpus=2, gpu_milli=1000),
          TaskRequest(cpu_milli=2000, memory_mib=0, gpus=0),
          TaskRequest(cpu_milli=6000, memory_mib=0, gpus=1, gpu_milli=250),
          TaskRequest(cpu_milli=8000, memory_mib=0, gpus=1, gpu_milli=1000,
                      gpu_models=frozenset({"T4"})),
          TaskRequest(cpu_milli=16000, memory_mib=0, gpus=8, gpu_milli=1000)]
MIG = TaskRequest(cpu_milli=1000, memory_mib=0, gpus=1, mig_profile="1g.10gb")


def types(m: OnlineWorkload) -> list | None:
    wl = m.workload
    return None if wl is None else [(t.cpu_milli, t.gpu_milli, t.gpus, t.models, t.freq)
                                    for t in wl.types]


def sequential(tasks: list[TaskRequest]) -> OnlineWorkload:
    m = OnlineWorkload()
    for k, t in enumerate(tasks):
        m.arrive(f"w{k}", float(k), [t])
    return m


tasks_st = st.lists(st.sampled_from(SHAPES), min_size=1, max_size=200)


# -- counting once ---------------------------------------------------------------------------
def test_a_workload_seen_again_is_not_counted_again():
    m = OnlineWorkload()
    assert m.arrive("a", 1.0, [SHAPES[0], SHAPES[1]])
    for _ in range(5):  # the loop re-reads the same pending workload every tick
        m.arrive_many([("a", 1.0, [SHAPES[0], SHAPES[1]]), ("b", 2.0, [SHAPES[2]])])
    assert m.count == 3


def test_mig_requests_are_not_counted():
    m = OnlineWorkload()
    m.arrive("a", 0, [MIG])
    assert m.count == 0 and m.workload is None and m.version == 0


def test_the_model_is_rebuilt_exactly_when_the_count_doubles():
    m = OnlineWorkload()
    builds = []
    for k in range(1, 100):
        if m.observe(SHAPES[k % len(SHAPES)]):
            builds.append(k)
    assert builds == [1, 2, 4, 8, 16, 32, 64]
    assert m.version == 7 and m.built_at == 64


def test_the_learned_distribution_is_the_fgd_cut_of_the_first_arrivals():
    tasks = [SHAPES[i] for i in (0, 0, 0, 1, 1, 2, 0, 1, 3, 0, 0, 1, 4, 0, 0, 1, 5, 5)]
    m = sequential(tasks)
    ref = TypicalWorkload.from_tasks(tasks[:16])  # in force: built at count 16
    assert sorted(types(m)) == sorted((t.cpu_milli, t.gpu_milli, t.gpus, t.models, t.freq)
                                      for t in ref.types)


@settings(max_examples=60, deadline=None)
@given(tasks_st, st.lists(st.integers(1, 7), min_size=1, max_size=60), st.integers(0, 5))
def test_batching_arrivals_into_ticks_changes_nothing_but_when_they_are_seen(tasks, cuts, reads):
    """Ticks of any size, each re-reading the still-pending ones: same model as one by one."""
    m = OnlineWorkload()
    arrivals = [(f"w{k}", float(k), [t]) for k, t in enumerate(tasks)]
    i = 0
    for c in cuts * (len(tasks) // max(1, sum(cuts)) + 1):
        if i >= len(arrivals):
            break
        i = min(len(arrivals), i + c)
        batch = arrivals[max(0, i - c - reads):i]  # some already seen: re-read every tick
        m.arrive_many(reversed(batch))
    m.arrive_many(arrivals)
    ref = sequential(tasks)
    assert (m.count, m.version, m.built_at, types(m)) == (ref.count, ref.version, ref.built_at,
                                                          types(ref))


# -- memory bound ------------------------------------------------------------------------------
def test_remembered_keys_stay_bounded_and_forgotten_ones_are_not_recounted():
    m = OnlineWorkload(grace=10.0, max_recent=50)
    for k in range(5000):
        m.arrive(f"w{k}", float(k), [SHAPES[k % 3]])
        assert len(m._recent) <= 50 and len(m._heap) <= 51
    assert m.count == 5000
    for k in range(5000):  # every one of them pending again (a retry): none counts
        assert not m.arrive(f"w{k}", float(k), [SHAPES[0]])
    assert m.count == 5000


def test_max_recent_bounds_a_burst_within_the_grace_period():
    m = OnlineWorkload(grace=1e9, max_recent=10)
    for k in range(100):
        m.arrive(f"w{k:03d}", 5.0, [SHAPES[0]])  # same second
    assert len(m._recent) == 10 and m.count == 100
    assert all(not m.arrive(f"w{k:03d}", 5.0, [SHAPES[0]]) for k in range(100))


def test_a_late_commit_within_grace_counts_and_one_beyond_grace_does_not():
    m = OnlineWorkload(grace=60.0)
    m.arrive("a", 1000.0, [SHAPES[0]])
    assert m.arrive("late", 950.0, [SHAPES[0]])       # committed late, within a minute
    assert not m.arrive("ancient", 900.0, [SHAPES[0]])  # beyond grace: taken as seen
    assert m.count == 2


def test_distinct_types_are_bounded():
    m = OnlineWorkload(max_types=64)
    for k in range(1000):
        m.observe(TaskRequest(cpu_milli=1000 + k, memory_mib=0, gpus=1, gpu_milli=100))
    assert len(m._counts) <= 64 and m.count == 1000


# -- persistence -------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(tasks_st, st.integers(0, 200))
def test_round_trip_through_json_resumes_exactly(tasks, cut):
    cut = min(cut, len(tasks))
    a = OnlineWorkload(grace=20.0, max_recent=16)
    arrivals = [(f"w{k}", float(k), [t]) for k, t in enumerate(tasks)]
    a.arrive_many(arrivals[:cut])
    b = OnlineWorkload.from_dict(json.loads(json.dumps(a.to_dict())))
    assert b.to_dict() == a.to_dict()
    for m in (a, b):
        m.arrive_many(arrivals)  # the new leader re-reads what is pending, plus new arrivals
    assert b.to_dict() == a.to_dict()


def test_restore_in_place_keeps_profiles_pointing_at_it():
    src = sequential(SHAPES * 3)
    m = OnlineWorkload()
    profile = profiles.get("gpuplane", online=m)
    m.restore(src.to_dict())
    assert profile.scores[0][0].online is m and types(m) == types(src) and m.count == 18


@pytest.mark.parametrize("bad, field", [({}, "format"), ({"format": 1}, "coverage"),
                                        ({**OnlineWorkload().to_dict(), "counts": [[1]]},
                                         "malformed")])
def test_from_dict_names_what_is_wrong(bad, field):
    with pytest.raises(ValueError, match=field):
        OnlineWorkload.from_dict(bad)


def test_an_empty_model_round_trips():
    d = OnlineWorkload().to_dict()
    assert json.loads(json.dumps(d)) == d
    m = OnlineWorkload.from_dict(d)
    assert m.workload is None and m._floor == (-math.inf, "")


# -- the policy reads the scheduler's model ----------------------------------------------------
def cluster(n: int = 12) -> list[Host]:
    hosts = []
    for i in range(n):
        model, k, cpu = (("T4", 2, 96), ("V100", 8, 64), ("G2", 4, 32))[i % 3]
        hosts.append(Host(name=f"h{i:02d}", cpu_milli=cpu * 1000, memory_mib=1 << 20,
                          gpus=tuple(GpuDevice(index=g, model=model, mode="shared")
                                     for g in range(k))))
    return hosts


def arrivals(n: int, seed: int = 7) -> list[TaskRequest]:
    rng = np.random.default_rng(seed)
    return [SHAPES[int(i)] for i in rng.choice(5, size=n, p=[0.45, 0.15, 0.15, 0.15, 0.1])]


def test_the_fragmentation_model_survives_new_snapshots_until_the_version_changes():
    m = OnlineWorkload()
    profile = profiles.get("gpuplane", online=m)
    gp = profile.scores[0][0]
    tasks = arrivals(3)
    m.arrive_many((f"w{k}", k, [t]) for k, t in enumerate(tasks))  # builds at counts 1, 2
    for _ in range(3):  # a new snapshot every tick, same model version
        snap = ClusterSnapshot.build(cluster())
        place_in_order(snap, tasks, profile, None, np.random.default_rng(0))
    assert gp.builds == 1
    m.arrive("w3", 3, [SHAPES[0]])  # count 4: a new version
    place_in_order(ClusterSnapshot.build(cluster()), tasks, profile, None, np.random.default_rng(0))
    assert gp.builds == 2
    place_in_order(ClusterSnapshot.build(cluster(15)), tasks, profile, None,
                   np.random.default_rng(0))  # the cluster grew: its shape changed
    assert gp.builds == 3


def test_a_restored_model_places_exactly_like_the_uninterrupted_one():
    hosts, tasks = cluster(), arrivals(150)
    whole = OnlineWorkload()
    snap = ClusterSnapshot.build(hosts)
    ref = place_in_order(snap, tasks, profiles.get("gpuplane", online=whole), whole,
                         np.random.default_rng(0))
    first = OnlineWorkload()
    snap2 = ClusterSnapshot.build(hosts)
    got = place_in_order(snap2, tasks[:70], profiles.get("gpuplane", online=first), first,
                         np.random.default_rng(0))
    # a new leader: the persisted model, fresh plugins, a fresh snapshot of the same state
    resumed = OnlineWorkload.from_dict(json.loads(json.dumps(first.to_dict())))
    profile = profiles.get("gpuplane", online=resumed)
    rest = []
    for k, t in enumerate(tasks[70:], start=70):
        resumed.arrive(str(k), float(k), (t,))
        rest.extend(place_in_order(snap2, [t], profile, None, np.random.default_rng(0)))
    assert got + rest == ref
    assert resumed.to_dict() == whole.to_dict()
    assert sum(p is not None for p in ref) > 50
