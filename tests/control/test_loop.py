"""The control loop against a real store and real drivers (SQLite, and PostgreSQL when given)."""

from __future__ import annotations

import sys
import time

from gpuplane.domain.workloads import Phase

from .conftest import make_plane

PY = sys.executable
LOCAL = {"gpuplane.io/driver": "local"}


def test_a_job_on_the_local_host_runs_for_real_and_succeeds(plane):
    w = plane.submit(name="hello", tasks=[{"command": [PY, "-c", "print('hi from gpuplane')"],
                                           "selector": LOCAL}])
    done = plane.run_until(w.id, {"Succeeded", "Failed"})
    assert done.phase == Phase.SUCCEEDED, done.tasks[0].message
    t = done.tasks[0]
    assert t.placement.host == "local" and t.exit_code == 0
    log = (plane.home / "logs" / f"{w.id}.0.{t.attempt}.log").read_bytes()
    assert b"hi from gpuplane" in log


def test_a_gang_lands_whole_on_simulated_hosts_and_finishes(plane):
    w = plane.submit(name="train", gang=True, labels={"gpuplane.io/sim-duration-s": "0.2"},
                     tasks=[{"replicas": 2, "resources": {"gpus": 4}, "command": ["train"]}])
    done = plane.run_until(w.id, {"Succeeded", "Failed"})
    assert done.phase == Phase.SUCCEEDED
    assert sorted(t.placement.host for t in done.tasks) == ["sim-0", "sim-1"]


def test_a_failing_command_fails_with_its_exit_code_and_retries_per_policy(plane):
    w = plane.submit(name="boom", retries={"limit": 1, "backoff_s": 0},
                     tasks=[{"command": [PY, "-c", "raise SystemExit(7)"], "selector": LOCAL}])
    done = plane.run_until(w.id, {"Succeeded", "Failed"})
    assert done.phase == Phase.FAILED
    assert done.tasks[0].exit_code == 7 and done.tasks[0].attempt == 2


def test_cancelling_a_running_task_stops_its_process(plane):
    from gpuplane.service.authz import Principal

    w = plane.submit(name="sleeper", tasks=[{"command": ["sleep", "60"], "selector": LOCAL}])
    plane.run_until(w.id, {"Running"})
    plane.workloads.cancel_workload(Principal.system(), w.id)
    done = plane.run_until(w.id, {"Cancelled"})
    assert done.tasks[0].phase == Phase.CANCELLED


def test_an_unplaceable_workload_stays_pending_with_a_reason(plane):
    for i in range(2):  # both simulated hosts' 4 GPUs busy (8 at once is refused at submit)
        plane.submit(name=f"busy{i}", tasks=[{"resources": {"gpus": 4}, "command": ["sleep 600"]}])
    plane.loop.tick()
    w = plane.submit(name="waits", tasks=[{"resources": {"gpus": 4}, "command": ["x"]}])
    for _ in range(3):
        plane.loop.tick()
    got = plane.get(w.id)
    assert got.phase == Phase.PENDING
    assert got.pending_reason is not None and got.pending_reason.message


def test_a_restarted_loop_adopts_running_tasks_and_marks_vanished_ones_lost(db_url, tmp_path):
    import os
    import signal

    first = make_plane(db_url, tmp_path, holder="first")
    keep = first.submit(name="keep", tasks=[{"command": ["sleep", "60"], "selector": LOCAL}])
    gone = first.submit(name="gone", tasks=[{"command": ["sleep", "60"], "selector": LOCAL}])
    first.run_until(keep.id, {"Running"})
    first.run_until(gone.id, {"Running"})
    pid = first.get(gone.id).tasks[0].handle["data"]["pid"]
    first.loop.release()  # "crash": a new process with new drivers takes over
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    second = make_plane(db_url, tmp_path, holder="second")
    second.loop.tick()
    second.loop.tick()
    assert second.get(keep.id).phase == Phase.RUNNING
    assert second.get(gone.id).phase == Phase.LOST
    from gpuplane.service.authz import Principal

    second.workloads.cancel_workload(Principal.system(), keep.id)
    second.run_until(keep.id, {"Cancelled"})


def test_higher_priority_work_preempts_and_the_victim_goes_back_to_the_queue(plane):
    low = [plane.submit(name=f"low-{i}", priority_class="preemptible",
                        tasks=[{"resources": {"gpus": 4}, "command": ["sleep", "600"]}])
           for i in range(2)]
    for w in low:
        plane.run_until(w.id, {"Running"})
    high = plane.submit(name="urgent", priority_class="production",
                        tasks=[{"resources": {"gpus": 4}, "command": ["sleep", "600"]}])
    plane.run_until(high.id, {"Running"})
    phases = sorted(plane.get(w.id).phase.value for w in low)
    assert phases == ["Pending", "Running"]
    victim = next(plane.get(w.id) for w in low if plane.get(w.id).phase == Phase.PENDING)
    assert victim.tasks[0].reason == "Preempted" and victim.tasks[0].placement is None


def test_residency_keeps_work_in_its_jurisdiction(db_url, tmp_path):
    from gpuplane.service.authz import Principal
    from gpuplane.service.specs import HostSpec, SiteSpec

    p = make_plane(db_url, tmp_path)
    inv = __import__("gpuplane.service.inventory", fromlist=["x"]).InventoryService(p.store)
    inv.create_site(Principal.system(), SiteSpec(name="fr", jurisdiction="EU/FR"))
    inv.register_host(Principal.system(), HostSpec(
        name="fr-0", site="fr", cpu=8, memory="64Gi", driver="sim",
        gpus=[{"index": 0, "model": "H100-80GB", "memory_mib": 81920}]))
    w = p.submit(name="eu-only", residency={"jurisdictions": ["EU"]},
                 tasks=[{"resources": {"gpus": 1}, "command": ["sleep", "600"]}])
    got = p.run_until(w.id, {"Running"})
    assert got.tasks[0].placement.host == "fr-0"  # the CH hosts have more room, but not in EU
    p.loop.release()


def test_draining_a_host_moves_its_running_work_elsewhere(plane):
    from gpuplane.service.authz import Principal
    from gpuplane.service.specs import HostStateSpec

    w = plane.submit(name="mover", tasks=[{"resources": {"gpus": 4}, "command": ["sleep", "600"]}])
    first = plane.run_until(w.id, {"Running"}).tasks[0].placement.host
    from gpuplane.service.inventory import InventoryService

    InventoryService(plane.store).set_host_state(Principal.system(), first,
                                                 HostStateSpec(state="draining"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        plane.loop.tick()
        t = plane.get(w.id).tasks[0]
        if t.phase == Phase.RUNNING and t.placement.host != first:
            break
    assert t.phase == Phase.RUNNING and t.placement.host != first, t
    reasons = [e.reason for e in plane.workloads.list_events(Principal.system(), None, 500,
                                                             w.id).items]
    assert "Drained" in reasons, reasons


def test_a_tick_reads_the_active_workloads_once_until_the_loop_writes(plane, monkeypatch):
    """observe's read of the active workloads and hosts serves recheck_attestation, schedule
    and launch while the loop writes nothing; after a write (an admission) the next step
    reads again, and sees what was written."""
    from gpuplane.store.repos_workloads import WorkloadRepo

    reads = []
    real = WorkloadRepo.list_active
    monkeypatch.setattr(WorkloadRepo, "list_active", lambda self: reads.append(1) or real(self))
    for name, gpus in (("long-4", 4), ("long-2", 2)):  # of 2 hosts x 4 GPUs, 2 stay free
        running = plane.submit(name=name, labels={"gpuplane.io/sim-duration-s": "3600"},
                               tasks=[{"resources": {"gpus": gpus}}])
        plane.run_until(running.id, {"Running"})
    waiting = plane.submit(name="too-big", tasks=[{"resources": {"gpus": 4}}])
    plane.loop.tick()
    assert plane.get(waiting.id).phase is Phase.PENDING
    reads.clear()
    plane.loop.tick()                     # nothing to write: one read serves the tick
    assert len(reads) == 1
    fits = plane.submit(name="fits", labels={"gpuplane.io/sim-duration-s": "3600"},
                        tasks=[{"resources": {"gpus": 2}}])
    reads.clear()
    plane.loop.tick()                     # schedule admits: launch reads again and starts it
    assert len(reads) == 2
    assert plane.get(fits.id).tasks[0].handle is not None
