"""MIG placement plugins (scheduling/placement/plugins/mig.py): filter reasons, scoring, choice."""

from __future__ import annotations

import numpy as np
import pytest

from gpuplane.domain.inventory import GpuDevice, Host
from gpuplane.domain.mig import (
    MigInstance,
    MigLayout,
    layout_from_profiles,
    layout_problems,
    occupy,
)
from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.scheduling.placement.framework import (
    CycleState,
    Status,
    Tally,
    Unschedulable,
    pick_host,
)
from gpuplane.scheduling.placement.plugins.mig import (
    REASON_NO_MIG_GPU,
    REASON_NO_SLOT,
    REASON_UNKNOWN_PROFILE,
    MigChooser,
    MigFit,
    MigPacking,
    best_on_layout,
)
from gpuplane.scheduling.snapshot import ClusterSnapshot

FIT, PACK, CHOOSE = MigFit(), MigPacking(), MigChooser()


def mig_host(name: str, *layouts: MigLayout | None, model: str = "H100-80GB",
             whole: int = 0) -> Host:
    gpus = [GpuDevice(index=i, model=model, mode="mig", mig_layout=lay)
            for i, lay in enumerate(layouts)]
    gpus += [GpuDevice(index=len(gpus) + i, model=model) for i in range(whole)]
    return Host(name=name, cpu_milli=64000, memory_mib=512 * 1024, gpus=tuple(gpus))


def mig_task(profile: str, models: frozenset[str] = frozenset()) -> TaskRequest:
    return TaskRequest(cpu_milli=1000, memory_mib=1024, gpus=1, mig_profile=profile,
                       gpu_models=models)


def decide(snap: ClusterSnapshot, task: TaskRequest, seed: int = 0):
    """The framework's steps with only the MIG plugins: filter, score, pick, choose."""
    state = CycleState(rng=np.random.default_rng(seed))
    res = FIT.filter(state, task, snap)
    passed = np.ones(snap.n_hosts, dtype=bool) if res is None else res.passed
    if not passed.any():
        tally = Tally()
        tally.record(FIT.name, res, ~passed)
        return tally.unschedulable(snap.n_hosts)
    hosts = np.nonzero(passed)[0]
    scores = PACK.score(state, task, snap, hosts)
    h = pick_host(np.asarray(scores), hosts, snap, "rank", state.rng)
    return CHOOSE.choose(state, task, snap, h)


def test_tasks_without_a_profile_are_left_to_other_plugins() -> None:
    snap = ClusterSnapshot.build([mig_host("h0", None)])
    task = TaskRequest(cpu_milli=1000, memory_mib=1024, gpus=1)
    state = CycleState(rng=np.random.default_rng(0))
    assert FIT.filter(state, task, snap) is None
    assert PACK.score(state, task, snap, np.array([0])).tolist() == [0]
    assert not CHOOSE.handles(task) and CHOOSE.handles(mig_task("1g.10gb"))


def test_reasons_separate_no_mig_gpu_from_no_free_slot() -> None:
    full = occupy(layout_from_profiles("H100-80GB", ["7g.80gb"]), 0)
    snap = ClusterSnapshot.build([
        Host(name="cpu", cpu_milli=8000, memory_mib=8192),
        mig_host("whole", whole=2),
        mig_host("a100", None, model="A100-40GB"),  # offers 3g.20gb, not 3g.40gb
        mig_host("full", full),
        mig_host("full2", full, full),
    ])
    out = decide(snap, mig_task("3g.40gb"))
    assert out.reasons == [("MigFit", REASON_NO_MIG_GPU, 3), ("MigFit", REASON_NO_SLOT, 2)]
    assert str(out) == ("0/5 hosts: 3 no GPU in MIG mode offering 3g.40gb, "
                        "2 no free 3g.40gb instance or slot")
    assert out.statuses == [Status.UNRESOLVABLE, Status.UNSCHEDULABLE]
    assert out.status == Status.UNSCHEDULABLE


def test_allowed_models_restrict_the_gpus_and_accept_vendor_aliases() -> None:
    snap = ClusterSnapshot.build([mig_host("a", None, model="A100-80GB"),
                                  mig_host("h", None, model="H100-80GB")])
    out = decide(snap, mig_task("3g.40gb", frozenset({"H100-SXM5-80GB"})))
    assert isinstance(out, Placement) and out.host == "h"
    out = decide(snap, mig_task("3g.40gb", frozenset({"H200"})))
    assert str(out) == "0/2 hosts: 2 no GPU in MIG mode of model H200 offering 3g.40gb"
    assert out.status == Status.UNRESOLVABLE


def test_unknown_profile_is_unresolvable_everywhere() -> None:
    snap = ClusterSnapshot.build([mig_host("h", None)])
    out = decide(snap, mig_task("5g.50gb"))
    assert out.reasons == [("MigFit", REASON_UNKNOWN_PROFILE, 1)]
    assert out.status == Status.UNRESOLVABLE


def test_a_free_existing_instance_beats_creating_one() -> None:
    spare = layout_from_profiles("H100-80GB", ["3g.40gb", "4g.40gb"])  # both free
    busy4 = occupy(spare, 0)  # 4g at 0 in use, 3g at 4 free
    snap = ClusterSnapshot.build([mig_host("empty", None), mig_host("spare", busy4)])
    out = decide(snap, mig_task("3g.40gb"))
    assert out == Placement(host="spare", gpu_indices=(0,), gpu_milli=428,
                            mig=(out.mig[0],))
    assert (out.mig[0].start, out.mig[0].created, out.mig[0].profile) == (4, False, "3g.40gb")


def test_creation_packs_onto_partly_used_gpus_and_keeps_large_slots() -> None:
    snap = ClusterSnapshot.build([mig_host("h", None, None)])
    first = decide(snap, mig_task("1g.10gb"))
    # on an empty GPU the 1g goes to slice 6, which keeps the 4g.40gb creatable
    assert (first.gpu_indices, first.mig[0].start, first.mig[0].created) == ((0,), 6, True)
    snap.assign(mig_task("1g.10gb"), first)
    second = decide(snap, mig_task("1g.10gb"))
    assert second.gpu_indices == (0,)  # same GPU, GPU 1 stays whole for a 7g
    assert best_on_layout(MigLayout.empty("H100-80GB"), "3g.40gb").start == 4


def test_seven_1g_tasks_fill_one_gpu_then_the_next_and_a_7g_still_fits() -> None:
    snap = ClusterSnapshot.build([mig_host("h", None, None, None)])
    task = mig_task("1g.10gb")
    for _ in range(7):
        p = decide(snap, task)
        assert p.gpu_indices == (0,)
        snap.assign(task, p)
    lay = snap.mig_layouts[(0, 0)]
    assert len(lay.instances) == 7 and all(i.occupied for i in lay.instances)
    assert layout_problems(lay) == []
    p = decide(snap, task)
    assert p.gpu_indices == (1,)
    snap.assign(task, p)
    big = decide(snap, mig_task("7g.80gb"))
    assert big.gpu_indices == (2,) and big.gpu_milli == 1000


def test_released_instances_are_reused_without_reconfiguration() -> None:
    snap = ClusterSnapshot.build([mig_host("h", None)])
    task = mig_task("2g.20gb")
    p = decide(snap, task)
    assert p.mig[0].created
    snap.assign(task, p)
    snap.release(task, p)
    again = decide(snap, task)
    assert again.mig[0].start == p.mig[0].start and not again.mig[0].created


def test_undo_restores_the_layout_and_the_cached_choice_follows() -> None:
    snap = ClusterSnapshot.build([mig_host("h", None)])
    task = mig_task("4g.40gb")
    p = decide(snap, task)
    undo = snap.assign(task, p)
    blocked = decide(snap, task)
    assert isinstance(blocked, Unschedulable) and blocked.reasons[0][1] == REASON_NO_SLOT
    undo()
    assert snap.mig_layouts[(0, 0)] is None
    assert decide(snap, task) == p


def test_existing_layout_from_inventory_is_respected() -> None:
    # 2g@0 and 2g@2 held; 3g@4 idle. A 3g reuses it; a 2g fits only by destroying the idle 3g,
    # which is offered as a last resort (score at most half of a plain creation).
    lay = MigLayout("H100-80GB", (MigInstance(0, "2g.20gb", True), MigInstance(2, "2g.20gb", True),
                                  MigInstance(4, "3g.40gb")))
    snap = ClusterSnapshot.build([mig_host("h", lay)])
    assert decide(snap, mig_task("3g.40gb")).mig[0].start == 4
    ref = decide(snap, mig_task("2g.20gb")).mig[0]
    assert (ref.start, ref.created, ref.reclaims) == (4, True, (4,))
    assert best_on_layout(lay, "2g.20gb").score <= 50
    held = occupy(lay, 4)
    out = decide(ClusterSnapshot.build([mig_host("h", held)]), mig_task("2g.20gb"))
    assert out.reasons == [("MigFit", REASON_NO_SLOT, 1)]


def test_creating_in_free_slots_beats_destroying_idle_instances() -> None:
    idle = layout_from_profiles("H100-80GB", ["1g.10gb"] * 7)  # seven idle 1g instances
    half = occupy(layout_from_profiles("H100-80GB", ["4g.40gb"]), 0)  # slots 4..7 free
    snap = ClusterSnapshot.build([mig_host("idle", idle), mig_host("half", half)])
    p = decide(snap, mig_task("3g.40gb"))
    assert (p.host, p.mig[0].start, p.mig[0].reclaims) == ("half", 4, ())
    only_idle = ClusterSnapshot.build([mig_host("idle", idle)])
    ref = decide(only_idle, mig_task("3g.40gb")).mig[0]
    # slot 4 destroys three idle 1g (slices 4, 5, 6); slot 0 would destroy four
    assert (ref.start, ref.created, ref.reclaims) == (4, True, (4, 5, 6))


@pytest.mark.parametrize("model,profile", [("A100-40GB", "3g.20gb"), ("H200", "3g.71gb"),
                                           ("H100-NVL", "1g.24gb"), ("A100-80GB", "7g.80gb")])
def test_every_model_is_served_by_its_own_profile_names(model: str, profile: str) -> None:
    snap = ClusterSnapshot.build([mig_host("h", None, model=model)])
    p = decide(snap, mig_task(profile))
    assert isinstance(p, Placement) and p.mig[0].profile == profile
    snap.assign(mig_task(profile), p)
    assert layout_problems(snap.mig_layouts[(0, 0)]) == []


def _profile():
    from gpuplane.scheduling.placement import Profile
    from gpuplane.scheduling.placement.profiles import base_filters
    from gpuplane.scheduling.placement.registry import make_plugin
    return Profile(name="mig-test", filters=base_filters() + (MigFit(),),
                   scores=((MigPacking(), 1),),
                   choosers=(MigChooser(), make_plugin("bestfit_gpus")))


def test_through_place_with_the_shared_filters_and_a_gang() -> None:
    from gpuplane.scheduling.placement import place, place_gang
    snap = ClusterSnapshot.build([
        Host(name="small", cpu_milli=500, memory_mib=1024, gpus=(
            GpuDevice(index=0, model="H100-80GB", mode="mig"),)),
        mig_host("big", None, None),
    ])
    rng = np.random.default_rng(7)
    out = place(snap, mig_task("7g.80gb"), _profile(), rng)
    assert isinstance(out, Placement) and out.host == "big"  # "small" lacks CPU
    gang = [mig_task("3g.40gb")] * 4
    placed = place_gang(snap, gang, _profile(), rng)
    assert [p.gpu_indices for p in placed] == [(0,), (0,), (1,), (1,)]
    assert snap.mig_layouts[(1, 0)] is None  # place_gang leaves the snapshot unchanged
    too_big = place_gang(snap, [mig_task("3g.40gb")] * 5, _profile(), rng)
    assert isinstance(too_big, Unschedulable) and too_big.member == 4
    assert "1 no free 3g.40gb instance or slot" in str(too_big)
    assert snap.mig_layouts[(1, 0)] is None and snap.mig_layouts[(1, 1)] is None


def test_request_mix_weights_are_validated_and_normalized() -> None:
    from gpuplane.domain.errors import InvalidInput
    from gpuplane.scheduling.placement.plugins.mig import mig_weights, profile_mix
    assert mig_weights(None) == () and mig_weights({}) == ()
    assert mig_weights({"MIG 3g.40gb": 3, "1g.10gb": 1, "7g.80gb": 0}) == (
        ("1g.10gb", 0.25), ("3g.40gb", 0.75))
    with pytest.raises(InvalidInput) as err:
        mig_weights({"3g.41gb": 1, "1g.10gb": -1, "2g.20gb": "x"})
    assert err.value.code == "gpuplane.mig.invalid_weights"
    assert [e.loc for e in err.value.errors] == ["weights.3g.41gb", "weights.1g.10gb",
                                                 "weights.2g.20gb"]
    tasks = [mig_task("1g.10gb"), mig_task("1g.10gb"), mig_task("3g.40gb"),
             TaskRequest(cpu_milli=1, memory_mib=1)]
    assert profile_mix(tasks) == {"1g.10gb": 2 / 3, "3g.40gb": 1 / 3}


def test_the_request_mix_changes_which_slot_is_cheapest() -> None:
    empty = MigLayout.empty("H100-80GB")
    # unweighted, a 1g goes to slot 6 to keep the 4g.40gb creatable ...
    assert best_on_layout(empty, "1g.10gb").start == 6
    # ... but when nobody asks for 4g.40gb there is nothing to keep: the lowest slot wins
    no_4g = mig_weights_for({"1g.10gb": 1, "3g.40gb": 1})
    assert best_on_layout(empty, "1g.10gb", no_4g).start == 0
    # a 3g keeps slot 0 free for the 4g whether or not the mix says so
    assert best_on_layout(empty, "3g.40gb", mig_weights_for({"4g.40gb": 1})).start == 4
    # the chooser uses the same weights as the score
    from gpuplane.scheduling.placement.plugins.mig import mig_plugins
    fit, pack, choose = mig_plugins({"1g.10gb": 1, "3g.40gb": 1})
    snap = ClusterSnapshot.build([mig_host("h", None)])
    state = CycleState(rng=np.random.default_rng(0))
    task = mig_task("1g.10gb")
    assert fit.filter(state, task, snap).passed.tolist() == [True]
    assert choose.choose(state, task, snap, 0).mig[0].start == 0
    assert MigChooser().choose(CycleState(rng=np.random.default_rng(0)), task, snap,
                               0).mig[0].start == 6


def mig_weights_for(mix: dict[str, float]):
    from gpuplane.scheduling.placement.plugins.mig import mig_weights
    return mig_weights(mix)
