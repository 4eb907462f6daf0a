"""Between the store and the drivers: what to start, and what an observation means.

Pure helpers (no database, no clock): ``task_spec`` builds what a driver needs from a stored
task; ``outcome`` turns a driver observation into the task's next phase and columns, applying
the workload's retry policy and the reason the loop stopped a task (cancel, preemption,
deadline).
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from typing import Any

from gpuplane.control.convert import group_of
from gpuplane.domain.workloads import Phase, Task, Workload
from gpuplane.drivers.base import TaskObservation, TaskSpec, TaskState

#: Workload label that sets how long its tasks run on simulated hosts.
SIM_DURATION_LABEL = "gpuplane.io/sim-duration-s"
#: Default simulated run time of jobs and batch work without a hint (services run until stopped).
DEFAULT_SIM_DURATION_S = 60.0

#: ``Task.reason`` values the loop sets when it stops a task itself.
REASON_PREEMPTED = "Preempted"
REASON_DEADLINE = "DeadlineExceeded"
REASON_CANCELLED = "Cancelled"
REASON_DRAINED = "Drained"
#: Reasons a running task carries while the loop stops it.
STOP_REASONS = frozenset({REASON_PREEMPTED, REASON_DEADLINE, REASON_CANCELLED, REASON_DRAINED})


def driver_task_id(workload_id: str, index: int, attempt: int) -> str:
    """The id a driver knows one attempt of a task by (its log file name):
    ``<workload uid>.<task index>.<attempt>``; derivable from a ``TaskLogRef`` too."""
    return f"{workload_id}.{index}.{attempt}"


def sim_duration(workload: Workload, command: list[str]) -> float | None:
    """How long a task of ``workload`` runs on a simulated host.

    The ``gpuplane.io/sim-duration-s`` label wins; else a ``sleep N`` command lasts N seconds;
    else the max runtime; else services and agents run until stopped and jobs for 60 s."""
    label = workload.spec.labels.get(SIM_DURATION_LABEL)
    if label is not None:
        try:
            return max(0.0, float(label))
        except ValueError:
            pass
    words = command
    if len(words) == 3 and words[0] in ("sh", "bash", "/bin/sh") and words[1] == "-c":
        words = shlex.split(words[2])
    if len(words) == 2 and words[0].rsplit("/", 1)[-1] == "sleep":
        try:
            return float(words[1])
        except ValueError:
            pass
    if workload.spec.max_runtime_s:
        return workload.spec.max_runtime_s
    return None if workload.kind in ("service", "agent") else DEFAULT_SIM_DURATION_S


def master_port(workload_id: str) -> int:
    """A stable rendezvous port per workload in 20000..29999."""
    return 20000 + int(hashlib.sha1(workload_id.encode()).hexdigest()[:8], 16) % 10000


def task_spec(workload: Workload, task: Task, master_addr: str = "127.0.0.1") -> TaskSpec:
    group = group_of(workload, task)
    command = [*group.command, *group.args]
    world = len(workload.tasks)
    gang = workload.spec.gang and world > 1
    return TaskSpec(task_id=driver_task_id(workload.id, task.index, task.attempt),
                    workload=workload.name, index=task.index, world_size=world, command=tuple(command), env=dict(group.env),
                    duration_s=sim_duration(workload, command),
                    master_addr=master_addr if gang else None,
                    master_port=master_port(workload.id) if gang else None,
                    project=workload.project, project_id=workload.project_id, cpu_milli=task.cpu_milli,
                    memory_mib=task.memory_mib)


@dataclass(frozen=True)
class Outcome:
    """What one observation means for the store.

    ``action``: ``"running"`` (Admitted -> Running, or an adopted task: event only),
    ``"finish"`` (the attempt ended in ``phase``; the store applies the retry policy) or
    ``"requeue"`` (preempted: back to the queue without counting as a retry) or
    ``"checkpoint"`` (a running task reported a newer checkpoint: ``checkpointed_at``).
    """

    action: str
    phase: Phase
    exit_code: int | None = None
    reason: str | None = None
    message: str = ""
    adopted: bool = False
    preemption: dict[str, object] | None = None
    checkpointed_at: float | None = None


def preemption_record(task: Task, obs: TaskObservation, now: float) -> dict[str, object]:
    """How the preemption of ``task`` ended, from the driver's observation of its stop:
    the decision stored on the task (beneficiary, grace) plus ``outcome`` (``acknowledged``:
    it exited within the grace period; ``timeout``: it was killed when the grace ran out;
    ``unknown``: the driver cannot tell), the times, and the work lost: ``lost_s`` seconds and
    ``lost_gpu_s`` GPU-seconds since its last checkpoint (or its start when it reported
    none), up to its end (``now`` when the driver does not know the end)."""
    ended = obs.ended_at if obs.ended_at is not None else now
    since = task.started_at if task.started_at is not None else ended
    checkpoint = obs.checkpointed_at
    if checkpoint is not None and checkpoint > since:
        since = min(checkpoint, ended)
    lost_s = max(0.0, ended - since)
    gpus = task.placement.total_milli / 1000 if task.placement is not None else 0.0
    return {**dict(task.preemption or {}),
            "outcome": ("unknown" if obs.forced is None
                        else "timeout" if obs.forced else "acknowledged"),
            "signalled_at": obs.signalled_at, "ended_at": ended, "exit_code": obs.exit_code,
            "checkpointed_at": checkpoint,
            "lost_since": "checkpoint" if checkpoint is not None and since == checkpoint
            else "start",
            "lost_s": round(lost_s, 3), "lost_gpu_s": round(lost_s * gpus, 3)}


def _preempted_message(task: Task, record: dict[str, object]) -> str:
    grace = record.get("grace_s")
    how = {"acknowledged": f"exited within its {grace:g} s grace period"
           if isinstance(grace, (int, float)) else "exited after the signal",
           "timeout": f"killed after its {grace:g} s grace period ran out"
           if isinstance(grace, (int, float)) else "killed after its grace period",
           }.get(str(record["outcome"]), "stopped")
    return (f"preempted for {record.get('beneficiary_name') or record.get('beneficiary') or '?'}"
            f": {how}; lost {record['lost_gpu_s']:g} GPU-s since its last "
            f"{record['lost_since']} ({record.get('reason') or task.message or 'no reason given'})")


def outcome(task: Task, obs: TaskObservation, now: float | None = None) -> Outcome | None:
    """What ``obs`` means for ``task``; ``None`` when nothing changes. ``now`` (wall clock)
    dates the end of a preempted task when the driver does not."""
    if obs.state == TaskState.RUNNING:
        if obs.adopted or task.phase != Phase.RUNNING:
            return Outcome("running", Phase.RUNNING, message=obs.message, adopted=obs.adopted)
        cp = obs.checkpointed_at
        if cp is not None and (task.checkpointed_at is None or cp > task.checkpointed_at):
            return Outcome("checkpoint", Phase.RUNNING, checkpointed_at=cp)
        return None
    if obs.state == TaskState.CANCELLED and task.reason == REASON_PREEMPTED:
        if task.preemption is None:   # marked before the protocol was recorded
            return Outcome("requeue", Phase.PENDING, reason="Preempted",
                           message=f"preempted: {task.message or 'no reason given'}")
        record = preemption_record(task, obs, now if now is not None else
                                   (obs.ended_at or task.started_at or 0.0))
        return Outcome("requeue", Phase.PENDING, reason="Preempted",
                       message=_preempted_message(task, record), preemption=record)
    if obs.state == TaskState.CANCELLED and task.reason == REASON_DRAINED:
        return Outcome("requeue", Phase.PENDING, reason=REASON_DRAINED,
                       message=task.message or "its host was drained")
    if obs.state == TaskState.CANCELLED and task.reason == REASON_DEADLINE:
        return Outcome("finish", Phase.FAILED, obs.exit_code, REASON_DEADLINE,
                       "exceeded its max runtime")
    phase = {TaskState.CANCELLED: Phase.CANCELLED, TaskState.SUCCEEDED: Phase.SUCCEEDED,
             TaskState.FAILED: Phase.FAILED, TaskState.LOST: Phase.LOST}[obs.state]
    return Outcome("finish", phase, obs.exit_code, None, obs.message)


def stop_reason(w: Any, t: Any, now: float, draining: set[str]) -> tuple[str, str] | None:
    """Why the loop must stop running task ``t`` of ``w`` now, as (reason, message), or None.
    A reason the task already carries (a preemption decided by the cycle) is kept."""
    if not t.handle or t.phase != Phase.RUNNING:
        return None
    if w.cancel_requested:
        return REASON_CANCELLED, "cancel requested"
    if t.reason in STOP_REASONS:
        return t.reason, t.message or t.reason
    if w.spec.max_runtime_s and t.started_at and now - t.started_at > w.spec.max_runtime_s:
        return REASON_DEADLINE, "exceeded its max runtime"
    if t.placement is not None and t.placement.host in draining:
        return REASON_DRAINED, f"host {t.placement.host} is draining"
    return None
