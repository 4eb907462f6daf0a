"""The one call from the control loop into the scheduling layer.

``decide`` hands the loop's view of the cluster to ``scheduling.cycle.run_cycle`` (quotas, fair
share, preemption, backfill, placement) and converts its result into what the loop applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpuplane.domain.requests import Placement
from gpuplane.domain.workloads import PendingReason
from gpuplane.scheduling.admission.fairshare import UsageHistory
from gpuplane.scheduling.cycle import CycleOptions, run_cycle
from gpuplane.scheduling.queueing import PendingWorkload, RunningTask
from gpuplane.scheduling.snapshot import ClusterSnapshot


@dataclass(frozen=True)
class Victim:
    """A running task the cycle preempts: ``message`` names the beneficiary (a workload id),
    ``grace_s`` is how long it may take to checkpoint and exit after the signal, ``lost_s`` the
    seconds since its last checkpoint (or start) when the cycle decided."""

    task_id: str
    message: str
    beneficiary: str
    code: str = ""
    grace_s: float = 30.0
    lost_s: float = 0.0


@dataclass(frozen=True)
class Decisions:
    """What one cycle decided. ``admits`` maps workload id -> one placement per pending task
    (in the order of ``PendingWorkload.tasks``; ``None`` for a task left waiting, never inside a
    gang); ``borrowing`` the admitted workloads that borrow (hold more than their project's
    guarantee once started); ``preempt`` lists the running tasks to stop (:class:`Victim`)."""

    admits: dict[str, list[Placement | None]] = field(default_factory=dict)
    borrowing: set[str] = field(default_factory=set)
    preempt: list[Victim] = field(default_factory=list)
    pending: dict[str, PendingReason] = field(default_factory=dict)


def decide(snap: ClusterSnapshot, pending: Sequence[PendingWorkload],
           running: Sequence[RunningTask], quotas: Any, now: float,
           rng: np.random.Generator, options: CycleOptions | None = None,
           history: UsageHistory | None = None) -> Decisions:
    """Decide one cycle. ``snap`` holds exactly the running tasks; the cycle may change it.

    An admission that needs victims to stop first is not applied in this cycle: the victims
    are stopped, and the workload is admitted by a later cycle once their resources are free
    (it stays pending with a reason saying so). ``options`` carries the preemption grace
    period and a placement ``Profile`` object kept across cycles (so its caches survive);
    ``history`` the decayed usage fair share weighs (``None``: current holdings only)."""
    result = run_cycle(snap, pending, running, quotas, now, rng, options=options,
                       history=history)
    out = Decisions()
    for wid, r in result.pending.items():
        out.pending[str(wid)] = PendingReason(code=str(r.code), message=str(r.message),
                                              detail=dict(r.detail or {}))
    for a in result.placements:
        if a.after:
            out.pending[str(a.workload_id)] = PendingReason(
                code="waiting_for_preemption",
                message=f"waiting for {len(a.after)} preempted task(s) to stop",
                detail={"victims": list(a.after)})
            continue
        out.admits[str(a.workload_id)] = list(a.placements)
        if a.borrowing:
            out.borrowing.add(str(a.workload_id))
    for p in result.preemptions:
        out.preempt.append(Victim(str(p.task_id), str(p.message), str(p.beneficiary),
                                  str(p.code), float(p.grace_s), float(p.lost_s)))
    return out
