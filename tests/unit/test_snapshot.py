"""ClusterSnapshot: arrays, assign/undo/release, over-allocation refused."""

import numpy as np
import pytest

from gpuplane.domain.errors import Conflict, InvalidInput
from gpuplane.domain.inventory import GpuDevice, Host, Taint, uniform_host
from gpuplane.domain.requests import Placement, TaskRequest, Toleration
from gpuplane.scheduling.snapshot import MODE_MIG, MODE_SHARED, MODE_WHOLE, ClusterSnapshot


def cluster():
    return ClusterSnapshot.build([
        uniform_host("a", 16000, 64000, 2, "T4"),
        uniform_host("b", 96000, 393216, 8, "G2", mode="whole"),
        Host("c", 8000, 32000),
    ])


def test_arrays_describe_hosts_and_missing_gpus_are_minus_one():
    s = cluster()
    assert s.gpu_free.shape == (3, 8)
    assert s.gpu_free[0].tolist() == [1000, 1000] + [-1] * 6
    assert s.gpu_free[2].tolist() == [-1] * 8
    assert s.gpu_mode[0, 0] == MODE_SHARED and s.gpu_mode[1, 3] == MODE_WHOLE
    assert s.models == ["G2", "T4"] and s.host_model.tolist() == [1, 0, -1]
    assert s.tie_rank.tolist() == [0, 1, 2]


def test_assign_books_resources_and_undo_restores_exactly():
    s = cluster()
    before = s.copy()
    t = TaskRequest(4000, 1000, gpus=1, gpu_milli=300)
    undo = s.assign(t, Placement("a", (1,), 300))
    assert s.cpu_free[0] == 12000 and s.mem_free[0] == 63000 and s.gpu_free[0, 1] == 700
    assert s.kind_count[0, 0] == 1 and not s.state_equal(before)
    undo()
    assert s.state_equal(before)
    undo()  # twice is a no-op
    assert s.state_equal(before)


def test_release_is_the_inverse_of_assign():
    s = cluster()
    before = s.copy()
    t = TaskRequest(8000, 1000, gpus=4)
    p = Placement("b", (0, 1, 2, 3), 1000)
    s.assign(t, p)
    s.release(t, p)
    assert s.state_equal(before)


@pytest.mark.parametrize("task, placement", [
    (TaskRequest(17000, 1), Placement("a")),
    (TaskRequest(1000, 70000), Placement("a")),
    (TaskRequest(1000, 1, gpus=1, gpu_milli=600), Placement("a", (0,), 600)),
    (TaskRequest(1000, 1, gpus=1), Placement("a", (5,), 1000)),
], ids=["too much cpu", "too much memory", "second share overflows a GPU", "no such GPU"])
def test_over_allocation_is_refused_and_changes_nothing(task, placement):
    s = cluster()
    s.assign(TaskRequest(1000, 1, gpus=1, gpu_milli=500), Placement("a", (0,), 500))
    before = s.copy()
    with pytest.raises(Conflict) as e:
        s.assign(task, placement)
    assert e.value.code == "gpuplane.placement.overcommit"
    assert s.state_equal(before)


def test_release_beyond_capacity_is_refused():
    s = cluster()
    with pytest.raises(Conflict):
        s.release(TaskRequest(1000, 1), Placement("a"))


def test_unknown_host_names_the_field():
    with pytest.raises(InvalidInput) as e:
        cluster().assign(TaskRequest(1, 1), Placement("zzz"))
    assert e.value.errors[0].loc == "placement.host"


def test_lifo_undo_of_several_trials_restores_the_start():
    s = cluster()
    before = s.copy()
    undos = [s.assign(TaskRequest(1000, 10, gpus=1, gpu_milli=200), Placement("a", (0,), 200))
             for _ in range(4)]
    undos.append(s.assign(TaskRequest(1000, 10, gpus=2), Placement("b", (6, 7), 1000)))
    for u in reversed(undos):
        u()
    assert s.state_equal(before)
    assert s.version[0] > 0  # versions only grow (caches stay valid)


def test_copy_is_independent():
    s = cluster()
    c = s.copy()
    s.assign(TaskRequest(1000, 10), Placement("c"))
    assert c.cpu_free[2] == 8000 and c.uid != s.uid


def test_tie_rank_must_be_a_permutation():
    s = cluster()
    s.set_tie_rank([2, 0, 1])
    assert s.tie_rank.tolist() == [2, 0, 1]
    with pytest.raises(InvalidInput):
        s.set_tie_rank([0, 0, 1])
    s.shuffle_tie_rank(np.random.default_rng(1))
    assert sorted(s.tie_rank.tolist()) == [0, 1, 2]


def test_gpu_view_respects_modes_and_models():
    s = cluster()
    share = TaskRequest(1000, 1, gpus=1, gpu_milli=500)
    whole = TaskRequest(1000, 1, gpus=1)
    assert (s.gpu_view(share)[1] == -1).all()          # passthrough GPUs take no shares
    assert (s.gpu_view(whole)[1] == 1000).all()
    t4 = TaskRequest(1000, 1, gpus=1, gpu_models=frozenset({"T4"}))
    assert (s.gpu_view(t4)[1] == -1).all() and (s.gpu_view(t4)[0, :2] == 1000).all()
    assert s.eligible_gpus(TaskRequest(1000, 1)) is None


def test_mig_gpus_are_excluded_from_whole_and_shared_requests():
    h = Host("m", 32000, 1000, gpus=(GpuDevice(0, "A100-40GB", mode="mig"),
                                     GpuDevice(1, "A100-40GB", mode="shared")))
    s = ClusterSnapshot.build([h])
    assert s.gpu_mode[0, 0] == MODE_MIG and (0, 0) in s.mig_layouts
    assert s.gpu_view(TaskRequest(1, 1, gpus=1))[0].tolist() == [-1, 1000]
    assert s.used_gpu_milli() == 0


def test_label_and_taint_masks():
    s = ClusterSnapshot.build([
        uniform_host("a", 1000, 1, 1, "T4", labels={"zone": "eu"}),
        uniform_host("b", 1000, 1, 1, "T4", taints=(Taint("dedicated", "x"),)),
        uniform_host("c", 1000, 1, 1, "T4", taints=(Taint("soft", effect="PreferNoSchedule"),)),
    ])
    assert s.label_mask({"zone": "eu"}).tolist() == [True, False, False]
    assert s.label_mask({}) is None
    assert s.toleration_mask(()).tolist() == [True, False, True]
    assert s.toleration_mask((Toleration("dedicated", "Equal", "x"),)).tolist() == [True] * 3
