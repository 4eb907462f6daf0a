"""MIG through the live loop: requests for a MIG profile land on MIG instances of a simulated
host in MIG mode, fill its slots one after the other and get a freed slot back."""

from __future__ import annotations

import pytest

from gpuplane.domain.workloads import Phase
from gpuplane.service.authz import Principal
from gpuplane.service.inventory import InventoryService
from gpuplane.service.specs import HostSpec

MIG_3G = {"resources": {"gpus": 1, "mig_profile": "3g.40gb"}, "command": ["serve"]}


@pytest.fixture
def mig_plane(plane):
    InventoryService(plane.store).register_host(Principal.system(), HostSpec(
        name="mig-0", site="here", cpu=32, memory="256Gi", driver="sim",
        gpus=[{"index": 0, "model": "H100-80GB", "memory_mib": 81920, "mode": "mig"}]))
    return plane


def _mig(w):
    t = w.tasks[0]
    assert t.placement is not None and t.placement.host == "mig-0", t.placement
    (ref,) = t.placement.mig
    return ref


def test_a_mig_request_gets_an_instance_and_a_second_one_fills_the_next_slot(mig_plane):
    first = mig_plane.run_until(mig_plane.submit(name="mig-a", tasks=[MIG_3G]).id, {"Running"})
    a = _mig(first)
    assert (a["gpu_index"], a["profile"]) == (0, "3g.40gb") and a["start"] in (0, 4)
    assert first.tasks[0].placement.gpu_indices == (0,)
    second = mig_plane.run_until(mig_plane.submit(name="mig-b", tasks=[MIG_3G]).id, {"Running"})
    b = _mig(second)
    assert (b["gpu_index"], b["profile"]) == (0, "3g.40gb")
    assert {a["start"], b["start"]} == {0, 4}


def test_a_full_mig_gpu_keeps_the_next_request_pending_until_a_slot_frees(mig_plane):
    running = [mig_plane.run_until(mig_plane.submit(name=f"mig-{i}", tasks=[MIG_3G]).id,
                                   {"Running"}) for i in range(2)]
    third = mig_plane.submit(name="mig-third", tasks=[MIG_3G])
    for _ in range(3):
        mig_plane.loop.tick()
    waiting = mig_plane.get(third.id)
    assert waiting.phase == Phase.PENDING
    assert "3g.40gb" in waiting.pending_reason.message, waiting.pending_reason
    mig_plane.workloads.cancel_workload(Principal.system(), running[0].id)
    mig_plane.run_until(running[0].id, {"Cancelled"})
    got = mig_plane.run_until(third.id, {"Running"})
    assert _mig(got)["start"] == _mig(running[0])["start"]


def test_a_mig_layout_changed_under_running_tasks_does_not_stop_scheduling(mig_plane):
    running = mig_plane.run_until(mig_plane.submit(name="mig-a", tasks=[MIG_3G]).id, {"Running"})
    held = _mig(running)
    # The operator re-registers the GPU cut into seven idle 1g.10gb instances: the stored
    # layout no longer has room for the instance the running task holds.
    InventoryService(mig_plane.store).update_host(Principal.system(), "mig-0", HostSpec(
        name="mig-0", site="here", cpu=32, memory="256Gi", driver="sim",
        gpus=[{"index": 0, "model": "H100-80GB", "memory_mib": 81920, "mode": "mig",
               "mig_layout": [{"profile": "1g.10gb", "start": s} for s in range(7)]}]))
    whole = mig_plane.run_until(mig_plane.submit(
        name="whole", tasks=[{"resources": {"gpus": 1}, "command": ["x"]}]).id, {"Running"})
    assert whole.tasks[0].placement.host in ("sim-0", "sim-1")
    small = mig_plane.run_until(mig_plane.submit(name="mig-small", tasks=[
        {"resources": {"gpus": 1, "mig_profile": "1g.10gb"}, "command": ["x"]}]).id, {"Running"})
    ref = _mig(small)
    assert ref["created"] is False  # an idle registered instance outside the running 3g one
    assert not held["start"] <= ref["start"] < held["start"] + 4
    assert mig_plane.get(running.id).phase == Phase.RUNNING
