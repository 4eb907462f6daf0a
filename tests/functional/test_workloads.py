"""Workload use-cases and the lifecycle the control loop drives, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from gpuplane.domain.errors import Conflict, InvalidInput, NotFound
from gpuplane.domain.workloads import Phase, RetryPolicy, TaskGroup, TaskPlacement, WorkloadSpec
from gpuplane.service import lifecycle


def spec(name="train", **kw) -> WorkloadSpec:
    base = dict(name=name, project="default",
                tasks=[TaskGroup(replicas=2, command=["python", "train.py"],
                                 resources={"gpus": 1, "gpu_models": ["H100-80GB"]})])
    base.update(kw)
    return WorkloadSpec(**base)


def test_submit_stores_a_pending_workload_with_one_task_per_replica(fleet, admin):
    wl = fleet.workloads.submit_workload(admin, spec())
    info = fleet.workloads.pending_info(admin, wl.name)
    assert info["queue_position"] == 1 and info["pending_tasks"] == 2
    assert info["reason"]["code"] == "gpuplane.pending.not_yet_scheduled"
    assert wl.phase is Phase.PENDING and wl.priority_class == "standard"
    assert [t.index for t in wl.tasks] == [0, 1]
    assert all(t.phase is Phase.PENDING and t.gpus == 1 for t in wl.tasks)
    events = fleet.workloads.list_events(admin, None, 10, workload=wl.id).items
    assert [e.reason for e in events] == ["Submitted"]
    entries, _ = fleet.audit.list_entries(admin, None, 100, action="workload.submit")
    assert [e.object_id for e in entries] == [wl.id]


def test_same_name_in_the_same_project_is_a_conflict(fleet, admin):
    fleet.workloads.submit_workload(admin, spec())
    with pytest.raises(Conflict) as err:
        fleet.workloads.submit_workload(admin, spec())
    assert err.value.code == "gpuplane.workload.exists"


def test_unknown_gpu_model_names_the_field_and_suggests_the_nearest(fleet, admin):
    bad = spec(tasks=[TaskGroup(resources={"gpus": 1, "gpu_models": ["H100-80GB", "A100-80"]})])
    with pytest.raises(InvalidInput) as err:
        fleet.workloads.submit_workload(admin, bad)
    (e,) = err.value.errors
    assert e.loc == "tasks[0].resources.gpu_models[1]"
    assert "A100-80GB" in e.msg


def test_unknown_priority_class_and_jurisdiction_are_field_errors(fleet, admin):
    with pytest.raises(InvalidInput) as err:
        fleet.workloads.submit_workload(admin, spec(priority_class="urgent"))
    assert err.value.errors[0].loc == "priority_class"
    with pytest.raises(InvalidInput) as err:
        fleet.workloads.submit_workload(admin, spec(residency={"jurisdictions": ["CH"]}))
    assert err.value.errors[0].loc == "residency.jurisdictions[0]"
    # a prefix of a known jurisdiction is fine
    fleet.workloads.submit_workload(admin, spec(residency={"jurisdictions": ["EU"]}))


def test_cancel_of_a_pending_workload_finishes_it_at_once_and_is_idempotent(fleet, admin):
    wl = fleet.workloads.submit_workload(admin, spec())
    after = fleet.workloads.cancel_workload(admin, wl.name)
    assert after.phase is Phase.CANCELLED and after.cancel_requested
    with pytest.raises(Conflict) as err:
        fleet.workloads.cancel_workload(admin, wl.id)
    assert err.value.code == "gpuplane.workload.finished"


def test_delete_needs_a_finished_workload(fleet, admin):
    wl = fleet.workloads.submit_workload(admin, spec())
    with pytest.raises(Conflict) as err:
        fleet.workloads.delete_workload(admin, wl.id)
    assert err.value.code == "gpuplane.workload.active"
    fleet.workloads.cancel_workload(admin, wl.id)
    fleet.workloads.delete_workload(admin, wl.id)
    with pytest.raises(NotFound):
        fleet.workloads.get_workload(admin, wl.id)


def _admit(svc, wl, clock):
    placements = {t.index: TaskPlacement("h100-a", (t.index,), 1000) for t in wl.tasks}
    with svc.store.read() as tx:
        gen = tx.hosts.get("h100-a").generation
    with svc.store.write() as tx:
        return lifecycle.admit_workload(tx, wl, placements, clock(), {"h100-a": gen})


def _run_all(svc, wl, clock):
    with svc.store.read() as tx:
        tasks = tx.workloads.get(wl.id).tasks
    with svc.store.write() as tx:
        for t in tasks:
            lifecycle.mark_task_running(tx, t.id, t.generation, clock(), {"pid": 1})


def test_a_workload_goes_pending_admitted_running_succeeded_and_is_accounted(fleet, admin, clock):
    wl = fleet.workloads.submit_workload(admin, spec())
    wl = _admit(fleet, wl, clock)
    assert wl.phase is Phase.ADMITTED
    assert {t.placement.host for t in wl.tasks} == {"h100-a"}
    clock.advance(5)
    _run_all(fleet, wl, clock)
    assert fleet.workloads.get_workload(admin, wl.id).phase is Phase.RUNNING
    clock.advance(3600)
    with fleet.store.read() as tx:
        tasks = tx.workloads.get(wl.id).tasks
    with fleet.store.write() as tx:
        for t in tasks:
            lifecycle.finish_task(tx, t.id, t.generation, Phase.SUCCEEDED, clock(), exit_code=0)
    done = fleet.workloads.get_workload(admin, wl.id)
    assert done.phase is Phase.SUCCEEDED and done.finished_at == clock()
    (usage,) = fleet.usage.usage(admin, project="default")
    # the fleet's hosts are simulated: their use is accounted apart from real use
    assert usage["simulated"]["gpu_hours"] == pytest.approx(2.0)
    assert usage["simulated"]["gpu_hours_by_model"] == {"H100-80GB": pytest.approx(2.0)}
    assert usage["real"]["gpu_hours"] == 0
    reasons = [e.reason for e in fleet.workloads.list_events(admin, None, 50, workload=wl.id).items]
    assert reasons[0] == "Submitted" and "Succeeded" in reasons


def test_a_failed_task_with_retries_left_waits_its_backoff_then_is_schedulable(fleet, admin, clock):
    wl = fleet.workloads.submit_workload(admin, spec(
        tasks=[TaskGroup(resources={"gpus": 1})],
        retries=RetryPolicy(limit=1, backoff_s=30, backoff_max_s=60)))
    wl = _admit(fleet, wl, clock)
    _run_all(fleet, wl, clock)
    with fleet.store.read() as tx:
        (t,) = tx.workloads.get(wl.id).tasks
    with fleet.store.write() as tx:
        lifecycle.finish_task(tx, t.id, t.generation, Phase.FAILED, clock(), exit_code=3)
    with fleet.store.read() as tx:
        again = tx.workloads.get(wl.id)
        assert again.phase is Phase.PENDING and again.tasks[0].not_before == clock() + 30
        assert tx.workloads.list_schedulable(clock()) == []
        assert [w.id for w in tx.workloads.list_schedulable(clock() + 30)] == [wl.id]
    info = fleet.workloads.pending_info(admin, wl.id)
    assert info["retry_after_s"] == pytest.approx(30)
    assert info["reason"]["code"] == "gpuplane.pending.backoff"
    # second failure: no retries left -> Failed
    clock.advance(31)
    with fleet.store.read() as tx:
        w2 = tx.workloads.get(wl.id)
    w2 = _admit(fleet, w2, clock)
    assert w2.tasks[0].attempt == 2
    _run_all(fleet, w2, clock)
    with fleet.store.read() as tx:
        (t,) = tx.workloads.get(wl.id).tasks
    with fleet.store.write() as tx:
        lifecycle.finish_task(tx, t.id, t.generation, Phase.FAILED, clock(), exit_code=3)
    assert fleet.workloads.get_workload(admin, wl.id).phase is Phase.FAILED


def test_admission_from_a_stale_read_is_refused(fleet, admin, clock):
    wl = fleet.workloads.submit_workload(admin, spec(name="a"))
    fleet.workloads.submit_workload(admin, spec(name="b"))
    fleet.workloads.cancel_workload(admin, "a")  # changes it after the loop "read" it
    with pytest.raises(Conflict):
        _admit(fleet, wl, clock)
    with fleet.store.read() as tx:
        assert tx.tasks.list_active() == []


def test_two_admissions_from_the_same_host_view_cannot_both_commit(fleet, admin, clock):
    a = fleet.workloads.submit_workload(admin, spec(name="a"))
    b = fleet.workloads.submit_workload(admin, spec(name="b"))
    with fleet.store.read() as tx:
        gen = tx.hosts.get("h100-a").generation
    place = {0: TaskPlacement("h100-a", (0,)), 1: TaskPlacement("h100-a", (1,))}
    with fleet.store.write() as tx:
        lifecycle.admit_workload(tx, a, place, clock(), {"h100-a": gen})
    with pytest.raises(Conflict), fleet.store.write() as tx:
        lifecycle.admit_workload(tx, b, place, clock(), {"h100-a": gen})


def test_preemption_requeues_and_is_audited(fleet, admin, clock):
    wl = _admit(fleet, fleet.workloads.submit_workload(admin, spec()), clock)
    _run_all(fleet, wl, clock)
    with fleet.store.read() as tx:
        t = tx.workloads.get(wl.id).tasks[0]
    with fleet.store.write() as tx:
        lifecycle.requeue_task(tx, t.id, t.generation, clock(), "Preempted",
                               "for prod/serve", preempted_by="wl-other")
    after = fleet.workloads.get_workload(admin, wl.id)
    assert after.tasks[0].phase is Phase.PENDING and after.tasks[0].placement is None
    assert after.phase is Phase.RUNNING  # the other task still runs
    entries, _ = fleet.audit.list_entries(admin, None, 100, action="task.preempt")
    assert entries[0].detail["beneficiary"] == "wl-other"


def test_illegal_transitions_are_refused(fleet, admin, clock):
    wl = fleet.workloads.submit_workload(admin, spec())
    t = wl.tasks[0]
    with pytest.raises(Conflict) as err, fleet.store.write() as tx:
        lifecycle.mark_task_running(tx, t.id, t.generation, clock())  # Pending -> Running
    assert err.value.code == "gpuplane.task.invalid_transition"


def test_ambiguous_names_need_a_project(fleet, admin):
    from gpuplane.service.specs import ProjectSpec

    fleet.tenancy.create_project(admin, ProjectSpec(name="other", organisation="default"))
    fleet.workloads.submit_workload(admin, spec())
    fleet.workloads.submit_workload(admin, spec(project="other"))
    with pytest.raises(Conflict) as err:
        fleet.workloads.get_workload(admin, "train")
    assert err.value.code == "gpuplane.workload.ambiguous"
    assert fleet.workloads.get_workload(admin, "train", project="other").project == "other"


def test_cancels_racing_batch_admissions_never_deadlock(fleet, admin, clock):
    """The loop admits several workloads in one transaction while users cancel some of them:
    only generation conflicts may happen (writers are serialised), never a deadlock."""
    import threading

    names = [f"w{i}" for i in range(12)]
    for n in names:
        fleet.workloads.submit_workload(admin, spec(name=n, tasks=[TaskGroup(
            resources={"gpus": 1})]))
    errors: list[Exception] = []

    def admitter() -> None:
        for _ in range(6):
            with fleet.store.read() as tx:
                pending = tx.workloads.list_schedulable(clock())
                gen = tx.hosts.get("h100-a").generation
            try:
                with fleet.store.write() as tx:
                    for w in pending[:3]:
                        lifecycle.admit_workload(tx, w, {0: TaskPlacement("h100-a", (0,))},
                                                 clock(), None)
                    tx.hosts.bump_generation("h100-a", gen)
            except Conflict:
                pass
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    def canceller() -> None:
        for n in reversed(names):
            try:
                fleet.workloads.cancel_workload(admin, n)
            except Conflict:
                pass
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=admitter), threading.Thread(target=canceller)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert fleet.audit.verify(admin) == []


def test_host_update_replaces_gpus_but_never_under_a_running_task(fleet, admin, clock):
    from gpuplane.service.specs import GpuSpec, HostSpec

    def host_spec(n: int) -> HostSpec:
        return HostSpec(name="h100-a", site="eu-de-1", cpu=96, memory="1Ti",
                        gpus=[GpuSpec(index=i, model="H100-80GB", memory_mib=81920)
                              for i in range(n)])

    wl = _admit(fleet, fleet.workloads.submit_workload(admin, spec()), clock)  # GPUs 0 and 1
    with pytest.raises(Conflict) as err:
        fleet.inventory.update_host(admin, "h100-a", host_spec(1))
    assert err.value.code == "gpuplane.host.in_use"
    before = fleet.inventory.get_host(admin, "h100-a")
    after = fleet.inventory.update_host(admin, "h100-a", host_spec(2))
    assert len(after.gpus) == 2 and after.cpu_milli == 96_000
    assert after.generation == before.generation + 1
    with pytest.raises(Conflict):  # a stale generation
        fleet.inventory.update_host(admin, "h100-a", host_spec(4), generation=before.generation)
    assert wl.phase is Phase.ADMITTED
