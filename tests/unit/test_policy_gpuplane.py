"""The default placement policy ``gpuplane`` (scheduling/placement/plugins/gpuplane.py)."""

from __future__ import annotations

import numpy as np
import pytest

from gpuplane.domain.inventory import GpuDevice, Host
from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.scheduling.placement import place, profiles
from gpuplane.scheduling.placement.framework import Profile
from gpuplane.scheduling.placement.fragmentation import (
    FragmentationModel,
    TaskType,
    TypicalWorkload,
)
from gpuplane.scheduling.placement.plugins.gpuplane import (
    Gpuplane,
    GpuplaneModel,
    cpu_appetite,
    cpu_price,
    hole_waste,
    scarcity,
)
from gpuplane.scheduling.snapshot import ClusterSnapshot


def host(name: str, cpu_cores: int, gpus: int, model: str = "G2") -> Host:
    return Host(name=name, cpu_milli=cpu_cores * 1000, memory_mib=512 * 1024,
                gpus=tuple(GpuDevice(index=i, model=model, mode="shared") for i in range(gpus)))


def wl(*types: tuple[int, int, int, float]) -> TypicalWorkload:
    """Types as (cpu milli, per-GPU milli, GPU count, frequency)."""
    return TypicalWorkload([TaskType(c, m, k, frozenset(), p) for c, m, k, p in types])


def snapshot(*hosts: Host) -> ClusterSnapshot:
    snap = ClusterSnapshot.build(hosts)
    snap.set_tie_rank(np.arange(len(hosts)))
    return snap


# -- the measure ---------------------------------------------------------------------------

def test_hole_waste_single_share_size():
    w = hole_waste(wl((1000, 470, 1, 1.0)))
    assert w[0] == 0 and w[1000] == 0
    assert w[400] == pytest.approx(400)      # nothing fits: all of it is lost
    assert w[530] == pytest.approx(60)       # one 470 fits, 60 left
    assert w[940] == pytest.approx(0)        # two 470s fill it exactly


def test_hole_waste_uses_combinations_of_common_sizes_only():
    w = hole_waste(wl((1000, 500, 1, 0.4), (1000, 300, 1, 0.4), (1000, 1000, 1, 0.195),
                      (1000, 100, 1, 0.005)))
    assert w[600] == pytest.approx(0)        # 300 + 300
    assert w[800] == pytest.approx(0)        # 500 + 300
    assert w[700] == pytest.approx(100)      # 600 at best: the rare 100 share does not count
    assert w[250] == pytest.approx(250)


def test_cpu_appetite_is_demand_weighted_and_ignores_cpu_only_types():
    w = wl((12000, 1000, 1, 0.5), (4000, 500, 1, 0.25), (32000, 0, 0, 0.25))
    # (12000*0.5 + 4000*0.25) / (1000*0.5 + 500*0.25)
    assert cpu_appetite(w) == pytest.approx(7000 / 625)
    assert cpu_appetite(wl((8000, 0, 0, 1.0))) == 0.0


def test_cpu_price_counts_cpu_only_tasks_only_under_cpu_pressure():
    # GPU types ask 10 CPU milli per milli-GPU; with the CPU-only type, 18 in all
    w = wl((10000, 1000, 1, 0.5), (8000, 0, 0, 0.5))
    assert cpu_appetite(w) == pytest.approx(10.0)
    assert cpu_price(w, 26.0) == pytest.approx(10.0 + 0.5 ** 2 * 8.0)  # half the surplus taken
    assert cpu_price(w, 14.0) == pytest.approx(18.0)                   # surplus exceeded: all
    assert cpu_price(w, 1000.0) == pytest.approx(10.0, abs=1e-3)       # plenty of CPU
    assert cpu_price(wl((10000, 1000, 1, 1.0)), 18.0) == pytest.approx(10.0)


def test_model_reduces_to_fgd_without_extra_terms():
    w = wl((6000, 465, 1, 0.4), (12000, 1000, 1, 0.4), (8000, 0, 0, 0.2))
    base = FragmentationModel(w, ["G2"])
    ours = GpuplaneModel(w, ["G2"], alpha=0.0, beta=0.0)
    for key in [(1000, (200, 500, 1000, 1000), 0), (64000, (1000,) * 8, 0), (0, (0, 300), 0)]:
        assert ours.fragment(key) == pytest.approx(base.fragment(key))


def test_model_adds_stranded_gpu_and_hole_waste():
    w = wl((12000, 1000, 1, 1.0))            # rho = 12 CPU milli per milli-GPU
    ours = GpuplaneModel(w, ["G2"], alpha=2.0, beta=0.0)
    base = FragmentationModel(w, ["G2"])
    key = (48000, (1000,) * 8, 0)            # CPU for 4 of the 8 free GPUs
    assert ours.fragment(key) - base.fragment(key) == pytest.approx(2.0 * 4000)
    holes = GpuplaneModel(wl((1000, 470, 1, 1.0)), ["G2"], alpha=0.0, beta=0.5)
    plain = FragmentationModel(wl((1000, 470, 1, 1.0)), ["G2"])
    k2 = (96000, (530, 400, 1000), 0)
    assert holes.fragment(k2) - plain.fragment(k2) == pytest.approx(0.5 * (60 + 400))


def test_scarcity_of_model_constrained_demand():
    types = [TaskType(8000, 1000, 1, frozenset({"T4"}), 0.25),
             TaskType(8000, 1000, 1, frozenset(), 0.75)]
    pi = scarcity(TypicalWorkload(types), ["G2", "T4"], [6.0, 2.0])
    # T4 gets 0.25*1000 demand over 2 GPUs, relative to 1000 demand over 8 GPUs
    assert pi.tolist() == pytest.approx([0.0, (250 / 2) / (1000 / 8), 0.0])
    assert not scarcity(wl((8000, 1000, 1, 1.0)), ["G2", "T4"], [6.0, 2.0]).any()
    with_term = GpuplaneModel(TypicalWorkload(types), ["G2", "T4"], alpha=0, beta=0, gamma=0.5,
                              capacity=[6.0, 2.0])
    without = GpuplaneModel(TypicalWorkload(types), ["G2", "T4"], alpha=0, beta=0, gamma=0)
    key = (96000, (1000, 500), 1)   # a T4 host with 1500 milli free
    assert with_term.fragment(key) - without.fragment(key) == pytest.approx(-0.5 * pi[1] * 1500)
    g2 = (96000, (1000, 500), 0)
    assert with_term.fragment(g2) == pytest.approx(without.fragment(g2))


# -- decisions -----------------------------------------------------------------------------

def test_cpu_hungry_task_goes_to_cpu_rich_host_where_fgd_follows_the_rank():
    w = wl((12000, 1000, 1, 1.0))
    hungry = TaskRequest(cpu_milli=40000, memory_mib=1024, gpus=1, gpu_milli=1000)
    # host a (rank 0): 8 GPUs / 96 cores; host b (rank 1): 2 GPUs / 104 cores
    snap = snapshot(host("a", 96, 8), host("b", 104, 2))
    rng = np.random.default_rng(0)
    fgd = place(snap, hungry, profiles.get("fgd", workload=w), rng)
    ours = place(snap, hungry, profiles.get("gpuplane", workload=w), rng)
    assert isinstance(fgd, Placement) and isinstance(ours, Placement)
    assert fgd.host == "a"       # FGD: F unchanged on both -> tie -> rank
    assert ours.host == "b"      # 40 cores on a would strand 2.3 of its 7 remaining GPUs


def test_unconstrained_task_leaves_the_scarce_model_to_constrained_ones():
    w = TypicalWorkload([TaskType(8000, 1000, 1, frozenset({"T4"}), 0.3),
                         TaskType(8000, 1000, 1, frozenset(), 0.7)])
    snap = snapshot(host("t4", 96, 2, "T4"), host("g2", 96, 2, "G2"))   # t4 has rank 0
    free_task = TaskRequest(cpu_milli=8000, memory_mib=1024, gpus=1, gpu_milli=1000)
    rng = np.random.default_rng(0)
    assert place(snap, free_task, profiles.get("gpuplane", workload=w), rng).host == "g2"
    bound = TaskRequest(cpu_milli=8000, memory_mib=1024, gpus=1, gpu_milli=1000,
                        gpu_models=frozenset({"T4"}))
    assert place(snap, bound, profiles.get("gpuplane", workload=w), rng).host == "t4"


def test_share_completes_a_partly_used_gpu():
    w = wl((1000, 470, 1, 0.6), (1000, 1000, 1, 0.4))
    snap = snapshot(host("a", 96, 2), host("b", 96, 2))
    first = TaskRequest(cpu_milli=1000, memory_mib=1024, gpus=1, gpu_milli=470)
    prof = profiles.get("gpuplane", workload=w)
    rng = np.random.default_rng(0)
    p1 = place(snap, first, prof, rng)
    snap.assign(first, p1)
    p2 = place(snap, first, prof, rng)
    assert (p2.host, p2.gpu_indices) == (p1.host, p1.gpu_indices)  # 470 + 470 on one GPU


def test_default_profile_is_gpuplane():
    prof = profiles.get()
    assert prof.name == "gpuplane"
    assert isinstance(prof.scores[0][0], Gpuplane)
    assert isinstance(prof.chooser_for(TaskRequest(cpu_milli=1000, memory_mib=1, gpus=1,
                                                   gpu_milli=300)), Gpuplane)


def _stream():
    rng = np.random.default_rng(7)
    shapes = [(2000, 1, 470), (4000, 1, 320), (12000, 1, 1000), (8000, 0, 0),
              (16000, 2, 1000), (3000, 1, 810)]
    for _ in range(60):
        c, k, m = shapes[int(rng.integers(len(shapes)))]
        yield TaskRequest(cpu_milli=c, memory_mib=1024, gpus=k, gpu_milli=m if k else 1000)


@pytest.mark.parametrize("workload", ["trace", "online"])
def test_stream_is_deterministic_and_never_overallocates(workload):
    tasks = list(_stream())
    w = TypicalWorkload.from_tasks(tasks) if workload == "trace" else None

    def run():
        snap = snapshot(host("a", 96, 8), host("b", 104, 2), host("c", 16, 2, "P100"),
                        host("d", 32, 4, "V100M16"))
        prof = profiles.get("gpuplane", workload=w)
        rng = np.random.default_rng(1)
        out = []
        for t in tasks:
            r = place(snap, t, prof, rng)
            if isinstance(r, Placement):
                snap.assign(t, r)
                out.append((r.host, r.gpu_indices))
            else:
                out.append(None)
        assert (snap.cpu_free >= 0).all() and (snap.mem_free >= 0).all()
        assert (snap.gpu_free[snap.gpu_free != -1] >= 0).all()
        return out

    a, b = run(), run()
    assert a == b
    assert sum(x is not None for x in a) > 20


def test_online_mode_learns_the_distribution_seen():
    plugin = Gpuplane(workload=None)
    snap = snapshot(host("a", 96, 8), host("b", 96, 8))
    prof = Profile(name="t", filters=profiles.base_filters(), scores=((plugin, 1),),
                            choosers=(plugin,))
    share = TaskRequest(cpu_milli=2000, memory_mib=1, gpus=1, gpu_milli=500)
    whole = TaskRequest(cpu_milli=8000, memory_mib=1, gpus=1, gpu_milli=1000)
    rng = np.random.default_rng(0)
    for t in [share, share, share, whole]:
        assert isinstance(place(snap, t, prof, rng), Placement)
    learned = {(t.cpu_milli, t.gpu_milli): t.freq for t in plugin.learned().types}
    assert learned == {(2000, 500): pytest.approx(0.75), (8000, 1000): pytest.approx(0.25)}
