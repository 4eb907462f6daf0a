"""State changes the control loop applies, inside its short write transaction.

These functions are the single place where task and workload phases move (always through
``domain.workloads.check_task_transition``), where events and audit entries for them are written
and where usage is accounted. They take a ``Tx`` from ``Store.write()`` and the loop's ``now``;
they never call a driver. Every update is generation-guarded: a ``Conflict`` means something
changed since the loop read it (for example a user cancelled), so the loop should roll back,
reload and rerun its cycle.

Typical use by the control loop::

    with store.write() as tx:
        for admit in result.placements:
            lifecycle.admit_tasks(tx, workloads[admit.workload_id], placements, now)
    # after commit: driver.start(...) for each admitted task, then
    with store.write() as tx:
        lifecycle.mark_task_running(tx, task_id, seen_generation, now, handle)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gpuplane.domain.errors import Conflict
from gpuplane.domain.workloads import (Phase, Task, TaskPlacement, Workload, aggregate_phase,
                                       check_task_transition)
from gpuplane.governance import audit
from gpuplane.store.records import UsageRecord, WorkloadPhaseState


def _phase_values(state: WorkloadPhaseState, now: float) -> tuple[Phase, dict[str, Any]]:
    """The phase a workload's tasks imply and the columns to write for it (empty: unchanged)."""
    phase = aggregate_phase((Phase(p) for p in state.task_phases), state.cancel_requested)
    values: dict[str, Any] = {}
    if phase.value == state.phase:
        return phase, values
    values["phase"] = phase
    if phase is Phase.ADMITTED and state.admitted_at is None:
        values["admitted_at"] = now
    if phase is Phase.RUNNING and state.started_at is None:
        values["started_at"] = now
    if phase.terminal:
        values["finished_at"] = now
        values["pending_reason"] = None
    return phase, values


def _phase_event(tx, workload_id: str, old: str, new: Phase, now: float) -> None:  # noqa: ANN001
    tx.events.add(now, "Warning" if new in (Phase.FAILED, Phase.LOST) else "Normal",
                  new.value, f"workload is {new.value} (was {old})", workload_uid=workload_id)


def _refresh_phase(tx, workload_id: str, now: float) -> Phase:  # noqa: ANN001
    """Recompute and store a workload's phase from its tasks (generation-guarded against the
    row just read); returns the phase. Reads only phases, never the whole workload."""
    state = tx.workloads.phase_state(workload_id)
    phase, values = _phase_values(state, now)
    if values:
        tx.workloads.update(workload_id, state.generation, **values)
        _phase_event(tx, workload_id, state.phase, phase, now)
    return phase


def refresh_workload_phase(tx, workload_id: str, now: float) -> Workload:  # noqa: ANN001
    """Recompute a workload's phase from its tasks and store it (with start/finish times)."""
    _refresh_phase(tx, workload_id, now)
    return tx.workloads.get(workload_id)


def admit_tasks(tx, workload: Workload, placements: Mapping[int, TaskPlacement],  # noqa: ANN001
                now: float, host_generations: Mapping[str, int] | None = None) -> Phase:
    """Bind tasks (by index) to placements: Pending -> Admitted, all in this transaction;
    returns the workload's new phase. What ``admit_workload`` does, without reading the
    workload back (the control loop rereads the store on its next tick anyway).

    Guards (STYLE habit 7): each task update needs the task's generation in ``workload``;
    the workload update needs ``workload.generation`` (so a cancel since the read is a
    Conflict); with ``host_generations`` (host name -> generation the loop saw) each host is
    claimed with a generation-guarded bump, so two writers can never both allocate from a
    stale view. A gang is admitted whole: the caller passes every task of it."""
    tasks = {t.index: t for t in workload.tasks}
    for index, placement in placements.items():
        task = tasks.get(index)
        if task is None:
            raise Conflict(f"workload {workload.id} has no task {index}",
                           code="gpuplane.task.not_found")
        check_task_transition(task.phase, Phase.ADMITTED)
        tx.tasks.update(task.id, task.generation, phase=Phase.ADMITTED, placement=placement,
                        host=placement.host, attempt=task.attempt + 1, exit_code=None,
                        reason=None, message=None, handle=None, not_before=None)
    for host, generation in (host_generations or {}).items():
        tx.hosts.bump_generation(host, generation)
    state = tx.workloads.phase_state(workload.id)
    phase, values = _phase_values(state, now)
    # One guarded update against the generation the caller read: nobody changed it meanwhile.
    tx.workloads.update(workload.id, workload.generation, **{**values, "pending_reason": None})
    hosts = sorted({p.host for p in placements.values()})
    tx.events.add(now, "Normal", "Admitted",
                  f"{len(placements)} task(s) placed on {', '.join(hosts)}",
                  workload_uid=workload.id)
    audit.record(tx, at=now, actor="scheduler", action="workload.admit", object_kind="workload",
                 object_id=workload.id, project_id=state.project_id, org_id=state.org_id,
                 detail={"placements": {str(i): {"host": p.host,
                                                 "gpu_indices": list(p.gpu_indices),
                                                 "gpu_milli": p.gpu_milli}
                                        for i, p in sorted(placements.items())}})
    if values:
        _phase_event(tx, workload.id, state.phase, phase, now)
    return phase


def admit_workload(tx, workload: Workload, placements: Mapping[int, TaskPlacement],  # noqa: ANN001
                   now: float, host_generations: Mapping[str, int] | None = None) -> Workload:
    """``admit_tasks``, then the workload as stored now.

    ``workload`` is what the loop read; if it changed since (generation), Conflict. With
    ``host_generations`` (host name -> generation the loop saw) each host is claimed with a
    generation-guarded bump, so two writers can never both allocate from a stale view.
    A gang is admitted whole: the caller passes every task of it."""
    admit_tasks(tx, workload, placements, now, host_generations)
    return tx.workloads.get(workload.id)


def mark_task_running(tx, task_id: int, seen_generation: int, now: float,  # noqa: ANN001
                      handle: Mapping[str, Any] | None = None) -> Task:
    """A driver started the task: Admitted -> Running; ``handle`` is kept for adoption."""
    task = tx.tasks.get(task_id)
    check_task_transition(task.phase, Phase.RUNNING)
    stored_handle = dict(handle) if handle is not None else task.handle
    generation = tx.tasks.update(task_id, seen_generation, phase=Phase.RUNNING, started_at=now,
                                 handle=stored_handle)
    # the local driver records "sandbox": "none" for a task it ran without bubblewrap
    unsandboxed = ((stored_handle or {}).get("data") or {}).get("sandbox") == "none"
    tx.events.add(now, "Normal", "Started",
                  f"task {task.index} started (attempt {task.attempt})"
                  + (f" on {task.placement.host}" if task.placement else "")
                  + (" unsandboxed" if unsandboxed else ""),
                  workload_uid=task.workload_id, task_index=task.index,
                  host=task.placement.host if task.placement else None)
    _refresh_phase(tx, task.workload_id, now)
    # The guarded update proved the row was ``task`` (read in this transaction) until now.
    return replace(task, phase=Phase.RUNNING, generation=generation, started_at=now,
                   handle=stored_handle)


def _account(tx, task: Task, now: float, outcome: str,  # noqa: ANN001
             lost_gpu_s: float = 0.0) -> None:
    if task.placement is None or not task.phase.holds_resources:
        return
    start = task.started_at if task.started_at is not None and task.phase is Phase.RUNNING else None
    if start is None:
        return
    host = None
    try:
        host = tx.hosts.get(task.placement.host)
    except Exception:  # noqa: BLE001 - host deleted since; account without a model
        pass
    model = None
    if host is not None and task.placement.gpu_indices:
        model = next((g.model for g in host.gpus if g.index == task.placement.gpu_indices[0]),
                     None)
    wl = tx.workloads.get(task.workload_id)
    tx.usage.add(UsageRecord(
        project_id=tx.projects.get(wl.project).id, workload_uid=task.workload_id,
        task_index=task.index, attempt=task.attempt, host=task.placement.host, gpu_model=model,
        simulated=bool(host.simulated) if host else task.simulated,
        gpu_milli=task.placement.total_milli,
        cpu_milli=task.cpu_milli, memory_mib=task.memory_mib, started_at=start,
        finished_at=max(now, start), outcome=outcome,
        lost_gpu_s=lost_gpu_s))


def finish_task(tx, task_id: int, seen_generation: int, phase: Phase, now: float,  # noqa: ANN001
                exit_code: int | None = None, reason: str | None = None,
                message: str | None = None) -> Task:
    """A task ended (Succeeded, Failed, Cancelled or Lost). A Failed task with retries left (and
    no cancel requested) goes back to Pending with a backoff (``not_before``) instead. Its
    allocation ends here; usage is recorded for the attempt."""
    if phase not in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED, Phase.LOST):
        raise ValueError(f"finish_task needs a terminal phase, not {phase.value}")
    task = tx.tasks.get(task_id)
    wl = tx.workloads.get(task.workload_id)
    _account(tx, task, now, phase.value)
    retry = (phase is Phase.FAILED and not wl.cancel_requested
             and task.attempt <= wl.spec.retries.limit)
    if retry:
        check_task_transition(task.phase, Phase.PENDING)
        delay = wl.spec.retries.delay_s(task.attempt)
        tx.tasks.update(task_id, seen_generation, phase=Phase.PENDING, placement=None, host=None,
                        exit_code=exit_code, reason=reason or "Failed", message=message,
                        not_before=now + delay, started_at=None, handle=None)
        tx.events.add(now, "Warning", "Retrying",
                      f"task {task.index} failed (exit {exit_code}); retry "
                      f"{task.attempt}/{wl.spec.retries.limit} in {delay:.0f}s",
                      workload_uid=wl.id, task_index=task.index)
    else:
        check_task_transition(task.phase, phase)
        tx.tasks.update(task_id, seen_generation, phase=phase, exit_code=exit_code,
                        reason=reason or phase.value, message=message, finished_at=now)
        tx.events.add(now, "Normal" if phase is Phase.SUCCEEDED else "Warning",
                      f"Task{phase.value}",
                      f"task {task.index} {phase.value.lower()}"
                      + (f" (exit {exit_code})" if exit_code is not None else "")
                      + (f": {message}" if message else ""),
                      workload_uid=wl.id, task_index=task.index)
    _refresh_phase(tx, wl.id, now)
    return tx.tasks.get(task_id)


def requeue_task(tx, task_id: int, seen_generation: int, now: float, reason: str,  # noqa: ANN001
                 message: str, preempted_by: str | None = None,
                 preemption: Mapping[str, Any] | None = None) -> Task:
    """Take a task's allocation away and put it back in the queue (preemption, drain, a host
    that went down before the task started). Does not count as a retry.

    ``preemption`` (the control loop's record of a finished preemption: ``beneficiary``,
    ``grace_s``, ``outcome``, ``lost_gpu_s`` ...) is stored on the task, its ``lost_gpu_s`` on
    the attempt's usage record, and it goes to the audit chain as ``workload.preempt``; a bare
    ``preempted_by`` (no protocol details) is audited as ``task.preempt``."""
    task = tx.tasks.get(task_id)
    check_task_transition(task.phase, Phase.PENDING)
    lost = float((preemption or {}).get("lost_gpu_s") or 0.0)
    _account(tx, task, now, "Preempted" if preempted_by or preemption else reason, lost)
    extra: dict[str, Any] = {"preemption": dict(preemption)} if preemption is not None else {}
    tx.tasks.update(task_id, seen_generation, phase=Phase.PENDING, placement=None, host=None,
                    reason=reason, message=message, started_at=None, handle=None,
                    attempt=max(0, task.attempt - 1) if task.phase is Phase.ADMITTED
                    else task.attempt, **extra)
    tx.events.add(now, "Warning", reason, f"task {task.index}: {message}",
                  workload_uid=task.workload_id, task_index=task.index)
    if preempted_by is not None or preemption is not None:
        wl = tx.workloads.get(task.workload_id)
        project = tx.projects.get(wl.project)
        if preemption is not None:
            audit.record(tx, at=now, actor="scheduler", action="workload.preempt",
                         object_kind="workload", object_id=task.workload_id,
                         project_id=project.id, org_id=project.org_id,
                         detail={"task": task.index, "attempt": task.attempt,
                                 "message": message, **dict(preemption)})
        else:
            audit.record(tx, at=now, actor="scheduler", action="task.preempt",
                         object_kind="task", object_id=f"{task.workload_id}/{task.index}",
                         project_id=project.id, org_id=project.org_id,
                         detail={"beneficiary": preempted_by, "message": message})
    _refresh_phase(tx, task.workload_id, now)
    return tx.tasks.get(task_id)
