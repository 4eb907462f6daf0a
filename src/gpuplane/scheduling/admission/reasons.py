"""Decisions and their explanations: what a cycle returns.

Reason codes are stable strings (never change or reuse one); messages are for people and name the
constraint and the nearest miss; ``detail`` carries machine-readable numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Pending reason codes (stable).
OVER_QUOTA = "quota.over_limit"            # would exceed guaranteed + borrowing limit
COHORT_FULL = "quota.cohort_full"          # over guarantee and the cohort has nothing idle to lend
GUARANTEE_ONLY = "quota.guarantee_only"    # not preemptible: may not borrow, waits for guarantee
OWNER_WAITING = "quota.owner_waiting"      # would borrow capacity whose owner is waiting for it
NO_CAPACITY = "capacity.unschedulable"     # no host fits now (message from placement)
WAITING_RECLAIM = "capacity.waiting_reclaim"  # entitled, but reclaim could not free enough
RESERVED = "capacity.reserved"             # would delay a reservation held by a larger job
NO_TOPOLOGY = "capacity.topology"         # no host/NVLink domain/rack holds the whole gang now
WAITING_GANG = "gang.incomplete"           # not every member of the gang could be placed
QUEUED = "queue.behind_head"               # not examined: queued behind the head of its project
FIFO_BLOCKED = "queue.fifo_blocked"        # strict FIFO: an older workload is still waiting

# Preemption reason codes (stable).
RECLAIM = "preempt.reclaim"                # owner reclaims capacity lent to this borrower
PRIORITY = "preempt.priority"              # a higher-priority workload of the same project


@dataclass(frozen=True)
class PendingReason:
    """Why a workload is still pending: ``code`` (stable), ``message`` (for people), ``detail``."""

    code: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Admit:
    """Start ``workload_id`` with one placement per task (the gang whole), in task order.

    ``after`` lists task ids that must stop first (the victims preempted for it in the same cycle);
    the resources in ``placements`` become free only when they have.
    """

    workload_id: str
    project: str
    placements: tuple[Any, ...]
    borrowing: bool = False
    after: tuple[str, ...] = ()
    reservation: bool = False   # True when started on capacity held for it by a reservation


@dataclass(frozen=True)
class Preempt:
    """Stop running task ``task_id`` (of ``workload_id``) so ``beneficiary`` can run.

    ``code`` is :data:`RECLAIM` or :data:`PRIORITY`; ``lost_s`` is the work since the victim's last
    checkpoint (or start) at decision time; ``grace_s`` is how long it may take to checkpoint."""

    task_id: str
    workload_id: str
    project: str
    beneficiary: str
    code: str
    message: str
    lost_s: float = 0.0
    grace_s: float = 30.0


@dataclass
class CycleResult:
    """What one cycle decided: admissions, preemptions and reasons.

    ``pending`` holds a reason for each pending workload the cycle examined; with
    ``CycleOptions.explain_all`` also one for every other pending workload (a shared object per
    project). ``queued`` always maps each project with pending work the cycle did not examine to
    the one reason all of those share, so a caller running with ``explain_all=False`` can still
    show every pending workload's reason: :meth:`reason_for`.
    """

    placements: list[Admit] = field(default_factory=list)
    preemptions: list[Preempt] = field(default_factory=list)
    pending: dict[str, PendingReason] = field(default_factory=dict)
    reservations: dict[str, float] = field(default_factory=dict)  # workload id -> shadow start
    queued: dict[str, PendingReason] = field(default_factory=dict)  # project -> shared reason

    def reason_for(self, workload_id: str, project: str) -> PendingReason | None:
        """The reason of a workload that was pending in this cycle and is not admitted:
        its own when examined, else its project's shared one (``None``: admitted, or unknown)."""
        r = self.pending.get(workload_id)
        return r if r is not None else self.queued.get(project)


def changed_reasons(previous: dict[str, PendingReason],
                    current: dict[str, PendingReason]) -> dict[str, PendingReason]:
    """The entries of ``current`` whose code or message differ from ``previous`` (what a caller
    that stores reasons must write after this cycle; ``detail`` is not compared)."""
    out = {}
    for wid, r in current.items():
        old = previous.get(wid)
        if old is None or old.code != r.code or old.message != r.message:
            out[wid] = r
    return out
