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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gpuplane.domain.errors import Conflict
from gpuplane.domain.workloads import (Phase, Task, TaskPlacement, Workload, aggregate_phase,
                                       can_transition, check_task_transition)
from gpuplane.governance import audit
from gpuplane.store.records import LockedWorkload, UsageRecord, WorkloadPhaseState


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
                 detail=_admit_detail(placements, placement_facts(tx, placements.values(), now)))
    if values:
        _phase_event(tx, workload.id, state.phase, phase, now)
    return phase


def placement_facts(tx, placements: Iterable[TaskPlacement],  # noqa: ANN001
                    now: float) -> dict[str, dict[str, Any]]:
    """What an admission's audit entry records of each host it uses (issue: residency with
    evidence): its site, the site's jurisdiction, and the identity its passing, unexpired
    attestation results vouch for (kind -> chip id / device id / measurement)."""
    names = {p.host for p in placements}
    where = tx.hosts.locations(names)
    attested: dict[str, dict[str, str]] = {}
    for (host, kind), r in tx.attestation.latest(names).items():
        if r.valid_at(now):
            claims = r.claims
            ident = claims.get("chip_id") or claims.get("fwid") or claims.get("measurement")
            attested.setdefault(host, {})[kind] = str(ident or r.id)
    return {h: {"site": where.get(h, ("", ""))[0], "jurisdiction": where.get(h, ("", ""))[1],
                "attested": attested.get(h, {})} for h in sorted(names)}


def _admit_detail(placements: Mapping[int, TaskPlacement],
                  facts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {"placements": {str(i): {"host": p.host, "gpu_indices": list(p.gpu_indices),
                                    "gpu_milli": p.gpu_milli, **facts.get(p.host, {})}
                           for i, p in sorted(placements.items())}}


def admit_workload(tx, workload: Workload, placements: Mapping[int, TaskPlacement],  # noqa: ANN001
                   now: float, host_generations: Mapping[str, int] | None = None) -> Workload:
    """``admit_tasks``, then the workload as stored now.

    ``workload`` is what the loop read; if it changed since (generation), Conflict. With
    ``host_generations`` (host name -> generation the loop saw) each host is claimed with a
    generation-guarded bump, so two writers can never both allocate from a stale view.
    A gang is admitted whole: the caller passes every task of it."""
    admit_tasks(tx, workload, placements, now, host_generations)
    return tx.workloads.get(workload.id)


@dataclass(frozen=True)
class Admission:
    """One workload's admission for ``admit_many``: the workload as the loop read it and the
    placement of each task it admits, by task index (a gang: every task of it)."""

    workload: Workload
    placements: Mapping[int, TaskPlacement]


def _refresh_many(tx, locked: Mapping[str, LockedWorkload], now: float,  # noqa: ANN001
                  extra: Mapping[str, Any] | None = None
                  ) -> tuple[dict[str, Phase], list[dict[str, Any]]]:
    """Recompute the phases of the ``locked`` workloads from their tasks and store them (with
    ``extra`` columns, in few statements); returns the new phases and the phase events to
    write. The rows must have been locked (and checked) in this transaction."""
    phases = tx.tasks.phases_by_workload(w.pk for w in locked.values())
    updates, events, out = [], [], {}
    for w in locked.values():
        state = WorkloadPhaseState(w.generation, w.phase, w.cancel_requested, w.admitted_at,
                                   w.started_at, phases.get(w.pk, ()), w.project_id, w.org_id)
        phase, values = _phase_values(state, now)
        out[w.uid] = phase
        if values or extra:
            updates.append((w.pk, w.generation, {**values, **(extra or {})}))
        if values:
            events.append({"at": now, "type": "Warning" if phase in (Phase.FAILED, Phase.LOST)
                           else "Normal", "reason": phase.value,
                           "message": f"workload is {phase.value} (was {w.phase})",
                           "project_id": w.project_id, "workload_pk": w.pk})
    tx.workloads.update_many(updates)
    return out, events


def admit_many(tx, admissions: Sequence[Admission], now: float,  # noqa: ANN001
               host_generations: Mapping[str, int]) -> dict[str, str]:
    """``admit_tasks`` for many workloads in one transaction and a few statements, each
    admission standing alone: the workloads, tasks and hosts are locked and checked first,
    and an admission whose workload or task changed since the loop read it (a cancel), or
    whose host's generation is not ``host_generations[host]`` any more, is left out (its
    workload id -> why is returned) while the others are written. Each host is claimed with
    one generation bump however many admissions land on it. Events and audit entries
    (``workload.admit``) as ``admit_tasks`` writes them."""
    locked = tx.workloads.lock(a.workload.id for a in admissions)
    task_of = {a.workload.id: {t.index: t for t in a.workload.tasks} for a in admissions}
    tasks = tx.tasks.lock(task_of[a.workload.id][i].id for a in admissions
                          for i in a.placements if i in task_of[a.workload.id])
    hosts = tx.hosts.lock_generations(p.host for a in admissions for p in a.placements.values())
    skipped: dict[str, str] = {}
    ok: list[Admission] = []
    for a in admissions:
        w, row = a.workload, locked.get(a.workload.id)
        why = None
        if row is None or row.generation != w.generation:
            why = f"workload {w.id} changed since it was read"
        for index, p in sorted(a.placements.items()):
            t = task_of[w.id].get(index)
            cur = tasks.get(t.id) if t is not None else None
            if why is None and (cur is None or cur.generation != t.generation
                                or not can_transition(Phase(cur.phase), Phase.ADMITTED)):
                why = f"task {index} of workload {w.id} changed since it was read"
            h = hosts.get(p.host)
            if why is None and (h is None or h[1] != host_generations.get(p.host)):
                why = f"host {p.host!r} changed since it was read"
        if why is None:
            ok.append(a)
        else:
            skipped[w.id] = why
    if not ok:
        return skipped
    tx.tasks.update_many([
        (t.id, t.generation, dict(phase=Phase.ADMITTED, placement=p,
                                  host_id=hosts[p.host][0], attempt=t.attempt + 1,
                                  exit_code=None, reason=None, message=None, handle=None,
                                  not_before=None))
        for a in ok for i, p in sorted(a.placements.items())
        for t in (task_of[a.workload.id][i],)])
    tx.hosts.bump_many(sorted({hosts[p.host] for a in ok for p in a.placements.values()}))
    mine = {a.workload.id: locked[a.workload.id] for a in ok}
    _phases, phase_events = _refresh_many(tx, mine, now, {"pending_reason": None})
    events, entries = [], []
    facts = placement_facts(tx, (p for a in ok for p in a.placements.values()), now)
    for a in ok:
        row = mine[a.workload.id]
        placed = sorted({p.host for p in a.placements.values()})
        events.append({"at": now, "type": "Normal", "reason": "Admitted",
                       "message": f"{len(a.placements)} task(s) placed on {', '.join(placed)}",
                       "project_id": row.project_id, "workload_pk": row.pk})
        entries.append(dict(at=now, actor="scheduler", action="workload.admit",
                            object_kind="workload", object_id=a.workload.id,
                            project_id=row.project_id, org_id=row.org_id,
                            detail=_admit_detail(a.placements, facts)))
    tx.events.add_many(events + phase_events)
    audit.record_many(tx, entries)
    return skipped


def mark_many_running(tx, starts: Sequence[tuple[Task, Mapping[str, Any]]],  # noqa: ANN001
                      now: float) -> dict[int, str]:
    """``mark_task_running`` for many started tasks (each with its driver handle) in one
    transaction and a few statements. A task whose generation moved since it was read (or
    that can no longer go to Running) is left out: its id -> why is returned, the others are
    written. Events and workload phases as ``mark_task_running`` writes them."""
    locked = tx.workloads.lock(t.workload_id for t, _ in starts)
    tasks = tx.tasks.lock(t.id for t, _ in starts)
    skipped: dict[int, str] = {}
    ok = []
    for t, handle in starts:
        cur = tasks.get(t.id)
        if (cur is None or cur.generation != t.generation or t.workload_id not in locked
                or not can_transition(Phase(cur.phase), Phase.RUNNING)):
            skipped[t.id] = f"task {t.index} of workload {t.workload_id} changed since it was read"
        else:
            ok.append((t, dict(handle)))
    if not ok:
        return skipped
    tx.tasks.update_many([(t.id, t.generation, dict(phase=Phase.RUNNING, started_at=now,
                                                    handle=handle)) for t, handle in ok])
    events = []
    for t, handle in ok:
        row = locked[t.workload_id]
        unsandboxed = ((handle or {}).get("data") or {}).get("sandbox") == "none"
        events.append({"at": now, "type": "Normal", "reason": "Started",
                       "message": f"task {t.index} started (attempt {t.attempt})"
                       + (f" on {t.placement.host}" if t.placement else "")
                       + (" unsandboxed" if unsandboxed else ""),
                       "project_id": row.project_id, "workload_pk": row.pk,
                       "host_name": t.placement.host if t.placement else None,
                       "task_idx": t.index})
    _phases, phase_events = _refresh_many(tx, {t.workload_id: locked[t.workload_id]
                                               for t, _ in ok}, now)
    tx.events.add_many(events + phase_events)
    return skipped


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
        lost_gpu_s=lost_gpu_s, placement=usage_placement(task.placement)))


def usage_placement(p) -> dict:  # noqa: ANN001 - a TaskPlacement
    """What chargeback needs of a placement: the devices and how much of each."""
    return {"gpus": list(p.gpu_indices), "gpu_milli": p.gpu_milli,
            "mig": [dict(m) for m in p.mig]}


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
