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
                    master_port=master_port(workload.id) if gang else None)


@dataclass(frozen=True)
class Outcome:
    """What one observation means for the store.

    ``action``: ``"running"`` (Admitted -> Running, or an adopted task: event only),
    ``"finish"`` (the attempt ended in ``phase``; the store applies the retry policy) or
    ``"requeue"`` (preempted: back to the queue without counting as a retry).
    """

    action: str
    phase: Phase
    exit_code: int | None = None
    reason: str | None = None
    message: str = ""
    adopted: bool = False


def outcome(task: Task, obs: TaskObservation) -> Outcome | None:
    """What ``obs`` means for ``task``; ``None`` when nothing changes."""
    if obs.state == TaskState.RUNNING:
        if obs.adopted or task.phase != Phase.RUNNING:
            return Outcome("running", Phase.RUNNING, message=obs.message, adopted=obs.adopted)
        return None
    if obs.state == TaskState.CANCELLED and task.reason == REASON_PREEMPTED:
        return Outcome("requeue", Phase.PENDING, reason="Preempted",
                       message=f"preempted: {task.message or 'no reason given'}")
    if obs.state == TaskState.CANCELLED and task.reason == REASON_DRAINED:
        return Outcome("requeue", Phase.PENDING, reason=REASON_DRAINED,
                       message=task.message or "its host was drained")
    if obs.state == TaskState.CANCELLED and task.reason == REASON_DEADLINE:
        return Outcome("finish", Phase.FAILED, obs.exit_code, REASON_DEADLINE,
                       "exceeded its max runtime")
    phase = {TaskState.CANCELLED: Phase.CANCELLED, TaskState.SUCCEEDED: Phase.SUCCEEDED,
             TaskState.FAILED: Phase.FAILED, TaskState.LOST: Phase.LOST}[obs.state]
    return Outcome("finish", phase, obs.exit_code, None, obs.message)
