"""Preemption: choose victims so an entitled workload can start, losing as little work as possible.

Two kinds, both decided on the cycle's snapshot with undo (nothing is changed unless a victim set
that makes the beneficiary fit is found):

- **reclaim** (:data:`~.reasons.RECLAIM`): the beneficiary stays within its project's guarantee;
  victims are preemptible workloads of *other* projects of the same cohort and flavour that hold
  more than their own guarantee (borrowers), and only while they still do.
- **priority** (:data:`~.reasons.PRIORITY`): victims are preemptible workloads of the beneficiary's
  own project with a strictly lower priority.

Candidates are tried in the order: borrowers before own-project work, lowest priority, least work
lost (time since the last checkpoint, else since start), largest first (fewer victims), id; then,
inside each kind and priority, grouped by host (:func:`group_by_host`): the host where freeing
what the beneficiary needs loses least work (GPU-seconds) first, else the host that would free
the most GPUs. After a fitting set is found, victims that turn out unnecessary are given back
(fewest victims).

No preemption cycles: a reclaim victim's project is above its guarantee and the beneficiary's is
within it after admission, so the victim can only come back by borrowing, which never preempts
and never takes capacity an owner with waiting work has claimed (``decide.may_take``); a priority
victim has a strictly lower priority than its beneficiary. Only preemptible work borrows, so every
borrower is a possible reclaim victim.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpuplane.domain.tenancy import QuotaTree
from gpuplane.scheduling.admission.quota import QuotaLedger
from gpuplane.scheduling.admission.reasons import PRIORITY, RECLAIM
from gpuplane.scheduling.queueing import PendingWorkload, RunningTask


@dataclass(frozen=True)
class RunningWorkload:
    """All running tasks of one workload (a gang is preempted whole)."""

    id: str
    project: str
    flavor: str
    units: int
    priority: int
    preemptible: bool
    lost_s: float          # work lost if stopped now (since checkpoint or start)
    tasks: tuple[RunningTask, ...]
    hosts: tuple[str, ...] = ()   # sorted host names of its tasks
    stopping: bool = False        # already signalled (``RunningTask.stopping``): taken first


@dataclass(frozen=True)
class Victim:
    workload: RunningWorkload
    code: str


def candidates(w: PendingWorkload, flavor: str, reclaim: bool, quotas: QuotaTree,
               borrowing: Callable[[str], bool],
               running_of: Callable[[str], Sequence[RunningWorkload]],
               reclaim_pool: Callable[[str, str], Sequence[tuple[tuple, RunningWorkload]]],
               taken: set[str], limit: int = 256) -> list[Victim]:
    """Victim candidates for ``w`` in preference order (see the module docstring).

    ``reclaim`` says whether ``w`` is entitled to reclaim (within its guarantee);
    ``borrowing(project)`` whether a project's running work is still above its guarantee (once
    false it stays false for the cycle). ``running_of(project)`` lists a project's running workloads; ``reclaim_pool(cohort, flavor)``
    lists, sorted by preference, the workloads of the cohort members that borrowed when the cycle
    began. ``taken`` holds workload ids already preempted this cycle (never offered twice). At
    most ``limit`` are returned.
    """
    cohort = quotas.project(w.project).cohort
    out: list[tuple[tuple, Victim]] = []
    if reclaim and cohort is not None:
        pool = reclaim_pool(cohort, flavor)
        kept: list[tuple[tuple, RunningWorkload]] = []
        alive: dict[str, bool] = {}
        n = 0
        for key, r in pool:
            if len(out) >= limit:
                break
            n += 1
            ok = alive.get(r.project)
            if ok is None:
                ok = alive[r.project] = borrowing(r.project)
            if not ok or r.id in taken:
                continue     # for good: a member stops borrowing for the rest of the cycle
            kept.append((key, r))
            if r.project != w.project:
                out.append((key, Victim(r, RECLAIM)))
        pool[:n] = kept      # prune what was scanned, keep the order
    own = [((1, r.priority, not r.stopping, r.lost_s, -r.units, r.id), Victim(r, PRIORITY))
           for r in running_of(w.project)
           if r.preemptible and r.id not in taken and r.flavor == flavor
           and r.priority < w.priority]
    own.sort(key=lambda kv: kv[0])
    out.extend(own[: max(0, limit - len(out))])
    return [v for _, v in out]


def group_by_host(victims: list[Victim], free_on: Callable[[str], int],
                  need: int = 0) -> list[Victim]:
    """Reorder ``victims`` so that, inside each preference class (kind and priority), the victims
    of the best host come first, keeping the original order inside a host.

    With ``need`` (whole GPUs the beneficiary's largest task needs on one host), the best host is
    the one where freeing ``need`` GPUs loses least work (GPU-seconds since the victims' last
    checkpoints, victims taken in that order), hosts that cannot free enough last; otherwise (or
    among those) the host that would free the most GPUs (free now + candidates' GPUs).
    ``free_on(host)`` is the free whole-GPU count of a host."""
    out: list[Victim] = []
    i = 0
    while i < len(victims):
        cls = (victims[i].code, victims[i].workload.priority)
        j = i
        while j < len(victims) and (victims[j].code, victims[j].workload.priority) == cls:
            j += 1
        chunk = victims[i:j]
        gain: dict[str, int] = {}
        on: dict[str, list[Victim]] = {}
        for v in chunk:
            for h in v.workload.hosts:
                gain[h] = gain.get(h, 0) + v.workload.units
                on.setdefault(h, []).append(v)
        score = {h: free_on(h) * 1000 + g for h, g in gain.items()}
        cost = {h: _cost_to_free(on[h], need - free_on(h)) for h in on} if need > 0 else {}
        inf = float("inf")

        stopping = {h for h, vs in on.items() if any(v.workload.stopping for v in vs)}

        def rank(h: str) -> tuple:
            return (cost.get(h, inf), h not in stopping, -score[h], h)

        first_host = {id(v): min(v.workload.hosts, key=rank, default="") for v in chunk}
        order = {h: k for k, h in enumerate(sorted(score, key=rank))}
        if need > 0:
            chunk.sort(key=lambda v: (order.get(first_host[id(v)], 0), not v.workload.stopping,
                                      _lost(v)))
        else:
            chunk.sort(key=lambda v: order.get(first_host[id(v)], 0))
        out.extend(chunk)
        i = j
    return out


def _lost(v: Victim) -> float:
    """GPU-seconds of work lost if ``v`` is stopped now."""
    return v.workload.lost_s * v.workload.units


def _cost_to_free(on_host: list[Victim], short: int) -> float:
    """Least work lost to free ``short`` more whole GPUs from these victims (cheapest per GPU
    first); infinite when they cannot."""
    if short <= 0:
        return 0.0
    total = 0.0
    for v in sorted(on_host, key=lambda v: (not v.workload.stopping, v.workload.lost_s,
                                            -v.workload.units)):
        short -= v.workload.units // 1000
        total += _lost(v)
        if short <= 0:
            return total
    return float("inf")


def select(w: PendingWorkload, flavor: str, units: int, cands: list[Victim],
           ledger: QuotaLedger, remove: Callable[[RunningWorkload], Callable[[], None]],
           fits: Callable[[], bool], borrowing: Callable[[str], bool],
           max_victims: int = 64, *,
           admissible: Callable[[], bool] | None = None,
           victim_ok: Callable[[RunningWorkload], bool] | None = None) -> list[Victim] | None:
    """Pick victims from ``cands`` until ``w`` fits, then drop the unnecessary ones.

    ``borrowing(project)`` says whether a project's *running* work (before this cycle's
    admissions, after the victims chosen so far) is still above its guarantee: a reclaim victim
    must come from such a project, so work admitted by borrowing in this same cycle never costs a
    running task its progress. ``remove(r)`` releases ``r`` from the snapshot and the ledger and
    returns its undo;
    ``fits()`` says whether ``w`` (``units`` of ``flavor``) now passes quota and placement (it must
    leave the snapshot unchanged). On success the chosen victims stay removed and are returned;
    on failure every change is undone and ``None`` is returned. ``admissible()`` replaces the
    quota test (default: the ledger's check is admissible), e.g. to refuse borrowing to work
    that is not preemptible. ``victim_ok(r)``, when given, must also hold for each reclaim
    victim when it is chosen.
    """
    def quota_ok() -> bool:
        if admissible is not None:
            return admissible()
        return ledger.check(w.project, flavor, units).fit.admissible

    chosen: list[tuple[Victim, Callable[[], None]]] = []
    ok = False
    for v in cands:
        if len(chosen) >= max_victims:
            break
        if v.code == RECLAIM and not borrowing(v.workload.project):
            continue   # no longer borrowing: it keeps what is left of its guarantee
        if v.code == RECLAIM and victim_ok is not None and not victim_ok(v.workload):
            continue
        chosen.append((v, remove(v.workload)))
        if quota_ok() and fits():
            ok = True
            break
    if not ok:
        for _, undo in reversed(chosen):
            undo()
        return None
    # Fewest victims: give back any victim (newest first) whose return keeps w fitting.
    kept: list[Victim] = [chosen[-1][0]]
    for v, undo in reversed(chosen[:-1]):
        undo()
        if quota_ok() and fits():
            continue
        remove(v.workload)
        kept.append(v)
    kept.reverse()
    return kept
