"""One table per plugin: scores and GPU choices on hand-built hosts (FGD_PROTOCOL §6)."""

import numpy as np
import pytest

from gpuplane.domain.inventory import uniform_host
from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.scheduling.placement.framework import CycleState
from gpuplane.scheduling.placement.plugins.bestfit import BestFit
from gpuplane.scheduling.placement.plugins.choosers import BestFitGpus, RandomGpus
from gpuplane.scheduling.placement.plugins.clustering import Clustering
from gpuplane.scheduling.placement.plugins.dotprod import DotProd
from gpuplane.scheduling.placement.plugins.fgd import Fgd, sigmoid_score
from gpuplane.scheduling.placement.plugins.gpu_fit import GpuFit
from gpuplane.scheduling.placement.plugins.packing import Packing
from gpuplane.scheduling.placement.plugins.resources import ResourceFit
from gpuplane.scheduling.placement.fragmentation import TaskType, TypicalWorkload
from gpuplane.scheduling.snapshot import ClusterSnapshot

SHARE = TaskRequest(8000, 100, gpus=1, gpu_milli=500)
WHOLE2 = TaskRequest(16000, 100, gpus=2)
CPU = TaskRequest(4000, 100)


def snap_with(*uses):
    """Hosts: 0 = idle 8-GPU G2 (96 cores), 1 = 2-GPU T4 (16 cores), 2 = 1-GPU P100
    (8 cores), 3 = 8-GPU G2 with ``uses`` applied (list of (task, gpus, milli))."""
    s = ClusterSnapshot.build([
        uniform_host("idle8", 96000, 393216, 8, "G2"),
        uniform_host("two", 16000, 65536, 2, "T4"),
        uniform_host("one", 8000, 32768, 1, "P100"),
        uniform_host("used8", 96000, 393216, 8, "G2"),
    ])
    for task, gpus, milli in uses:
        s.assign(task, Placement("used8", gpus, milli))
    return s


def score(plugin, s, task, hosts=(0, 1, 2, 3)):
    return plugin.score(CycleState(np.random.default_rng(0)), task, s, np.array(hosts)).tolist()


def test_resource_fit_blames_cpu_before_memory():
    s = snap_with()
    res = ResourceFit().filter(CycleState(np.random.default_rng(0)), TaskRequest(10000, 70000), s)
    assert res.passed.tolist() == [True, False, False, True]
    reasons, which = res.explain(~res.passed)
    assert [reasons[i].code for i in which[[1, 2]]] == ["insufficient_memory", "insufficient_cpu"]


def test_gpu_fit_counts_free_gpus_and_fitting_shares():
    s = snap_with((TaskRequest(1000, 1, gpus=1, gpu_milli=600), (0,), 600),
                  (TaskRequest(1000, 1, gpus=7), (1, 2, 3, 4, 5, 6, 7), 1000))
    st = CycleState(np.random.default_rng(0))
    assert GpuFit().filter(st, TaskRequest(1, 1, gpus=1, gpu_milli=400), s).passed.tolist() == [True] * 4
    st = CycleState(np.random.default_rng(0))
    assert GpuFit().filter(st, TaskRequest(1, 1, gpus=1, gpu_milli=500), s).passed.tolist() == [True, True, True, False]
    st = CycleState(np.random.default_rng(0))
    assert GpuFit().filter(st, WHOLE2, s).passed.tolist() == [True, True, False, False]
    assert GpuFit().filter(st, CPU, s) is None


def test_dotprod_prefers_little_free_capacity():
    s = snap_with()
    # idle8: 100*(1 - .5*(96/128*8/128 + 8000/8000*500/8000)) = 94.5 -> 94
    assert score(DotProd(), s, SHARE) == [94, 98, 99, 94]
    assert score(DotProd(), s, CPU) == [98, 99, 99, 98]


def test_bestfit_prefers_least_leftover():
    s = snap_with()
    # idle8: 1 - (.5*88/128 + .5*7500/8000) = 0.1875 -> 18 ; one: 1 - (0 + .5*500/8000) -> 96
    assert score(BestFit(), s, SHARE) == [18, 87, 96, 18]


def test_packing_scores_follow_the_protocol_table():
    s = snap_with((TaskRequest(1000, 1, gpus=1, gpu_milli=650), (0,), 650))
    assert score(Packing(), s, SHARE) == [25, 31, 32, 49]            # used8 GPU0 has 350 < 500
    s2 = snap_with((TaskRequest(1000, 1, gpus=1, gpu_milli=350), (0,), 350))
    assert score(Packing(), s2, SHARE) == [25, 31, 32, 94]           # 100 - 650 // 100
    assert score(Packing(), s2, WHOLE2) == [25, 31, 32, 48]          # 50 - 2
    assert score(Packing(), s2, CPU) == [0, 0, 0, 0]


def test_clustering_groups_same_kind_tasks():
    s = snap_with((TaskRequest(1000, 1, gpus=1, gpu_milli=500), (0,), 500))
    # used8: base trunc(25*(8000-7500)/8000)=1, +75 (only shares) ; idle hosts +25
    assert score(Clustering(), s, SHARE) == [25, 18 + 25, 21 + 25, 76]
    assert score(Clustering(), s, WHOLE2) == [25, 43, 46, 1]
    s.assign(WHOLE2, Placement("used8", (1, 2), 1000))
    assert score(Clustering(), s, SHARE)[3] == 7 + 50
    assert score(Clustering(), s, CPU) == [0, 0, 0, 0]


def test_bestfit_chooser_takes_the_tightest_gpu_and_lowest_free_whole_gpus():
    s = snap_with((TaskRequest(1, 1, gpus=1, gpu_milli=300), (2,), 300),
                  (TaskRequest(1, 1, gpus=1, gpu_milli=400), (5,), 400),
                  (TaskRequest(1, 1, gpus=1), (0,), 1000))
    st = CycleState(np.random.default_rng(0))
    assert BestFitGpus().choose(st, SHARE, s, 3).gpu_indices == (5,)     # 600 free is tightest
    st = CycleState(np.random.default_rng(0))
    assert BestFitGpus().choose(st, WHOLE2, s, 3).gpu_indices == (1, 3)
    assert BestFitGpus().choose(st, CPU, s, 3).gpu_indices == ()


def test_random_chooser_picks_a_fitting_gpu_reproducibly():
    s = snap_with((TaskRequest(1, 1, gpus=1, gpu_milli=800), (0,), 800))
    picks = {RandomGpus().choose(CycleState(np.random.default_rng(i)), SHARE, s, 3).gpu_indices
             for i in range(30)}
    assert (0,) not in picks and len(picks) > 2
    a = RandomGpus().choose(CycleState(np.random.default_rng(9)), SHARE, s, 3)
    assert a == RandomGpus().choose(CycleState(np.random.default_rng(9)), SHARE, s, 3)


def test_sigmoid_score_is_truncated():
    assert sigmoid_score(0) == 50
    assert sigmoid_score(-10_000) == 0
    assert sigmoid_score(1000) == 73   # 100 * 0.731


def _wl():
    return TypicalWorkload([TaskType(4000, 500, 1, frozenset(), 0.5),
                            TaskType(8000, 1000, 1, frozenset(), 0.5)])


def test_fgd_scores_by_fragmentation_change():
    s = snap_with((TaskRequest(1000, 1, gpus=1, gpu_milli=500), (0,), 500))
    fgd = Fgd(_wl())
    sc = score(fgd, s, SHARE)
    # used8: 500 onto GPU0 (500 free) removes the 500 that the 1000-milli type could
    # not use: F drops by 0.5 * 500 -> sigmoid(0.25) -> 56
    assert sc[3] == sigmoid_score(250) == 56
    # idle8: a fresh GPU goes 1000 -> 500: the 1000-milli type loses it (+250 frag) -> 43
    assert sc[0] == sigmoid_score(-250)
    ch = fgd.choose(CycleState(np.random.default_rng(0)), SHARE, s, 3)
    assert ch.gpu_indices == (0,)


def test_fgd_cache_follows_snapshot_changes():
    s = snap_with()
    fgd = Fgd(_wl())
    first = score(fgd, s, SHARE)
    s.assign(TaskRequest(1000, 1, gpus=1, gpu_milli=500), Placement("used8", (0,), 500))
    second = score(fgd, s, SHARE)
    assert first[:3] == second[:3] and (first[3], second[3]) == (43, 56)
    fresh = score(Fgd(_wl()), s, SHARE)
    assert fresh == second


def test_fgd_without_workload_uses_the_task_itself():
    s = snap_with()
    assert len(score(Fgd(), s, SHARE)) == 4


def test_fgd_vectorised_and_memo_paths_agree():
    from gpuplane.scheduling.placement.plugins.fgd import Fgd as F

    rng = np.random.default_rng(4)
    hosts = [uniform_host(f"h{i}", 32000, 131072, int(rng.choice([1, 2, 4, 8])),
                          str(rng.choice(["G2", "T4"]))) for i in range(40)]
    s = ClusterSnapshot.build(hosts)
    for h in range(40):
        for g in range(s.gpu_count[h]):
            if rng.random() < 0.6:
                milli = int(rng.integers(1, 1000))
                s.assign(TaskRequest(1000, 1, gpus=1, gpu_milli=milli), Placement(f"h{h}", (g,), milli))
    wl = TypicalWorkload([TaskType(2000, 250, 1, frozenset(), 0.4),
                          TaskType(4000, 1000, 2, frozenset({"G2"}), 0.3),
                          TaskType(1000, 0, 0, frozenset(), 0.3)])
    fgd = F(wl)
    fm = fgd.model(s)
    for task in (TaskRequest(4000, 1, gpus=1, gpu_milli=300), TaskRequest(8000, 1, gpus=1),
                 TaskRequest(3000, 1), TaskRequest(1000, 1, gpus=1, gpu_milli=100,
                                                   gpu_models=frozenset({"T4"}))):
        feas = np.flatnonzero((s.gpu_view(task) >= task.gpu_milli).sum(1) >= task.gpus) \
            if task.gpus else np.arange(40)
        vec, gpu = fgd.evaluate_hosts(fm, s, feas, task)
        el, shape = fgd._shape_key(s, task)
        memo = [r[0] for r in fgd._evaluate(fm, fgd._keys(s, feas, el), task, shape)]
        assert vec.tolist() == memo
        if task.is_shared:
            for i, h in enumerate(feas):
                st = CycleState(np.random.default_rng(0))
                assert fgd.choose(st, task, s, int(h)).gpu_indices == (gpu[i],)


def test_fgd_unchanged_fragmentation_scores_exactly_50():
    s = snap_with()
    # a CPU-only task that leaves every type's category unchanged on the big idle hosts
    assert score(Fgd(_wl()), s, TaskRequest(1000, 1))[0] == 50
