"""The working state of one scheduling cycle (built by ``cycle.run_cycle``, step 1).

Holds the quota ledger, the fair-share book, capacity on the snapshot, running workloads grouped
for preemption, and the decisions made so far. Pure: built from the cycle's arguments only.
"""

from __future__ import annotations

import heapq
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuplane.domain.tenancy import QuotaTree
from gpuplane.scheduling.admission.capacity import CycleCapacity, is_whole
from gpuplane.scheduling.admission.fairshare import ShareBook, UsageHistory
from gpuplane.scheduling.admission.preemption import RunningWorkload
from gpuplane.scheduling.admission.quota import QuotaLedger
from gpuplane.scheduling.admission.reasons import CycleResult
from gpuplane.scheduling.queueing import (
    Demand, PendingWorkload, RunningTask, demand_of, flavor_of, task_units)


@dataclass(frozen=True)
class CycleOptions:
    """Policy switches of a cycle.

    ``strict_fifo``: one global order by priority then age, and the first workload that cannot
    start blocks every later one (the FIFO baseline). Otherwise projects are served by fair share
    (``fair_share``) or by age, and blocked work lets later work through. ``preemption`` enables
    reclaim and priority preemption; ``backfill`` gives up to ``max_reservations`` blocked
    workloads a reservation. ``lookahead`` bounds how many blocked workloads of one project are
    examined per pass per cycle. ``profile`` is the placement profile passed to ``place``.

    ``explain_all`` (explanations): ``True`` puts a reason for *every* pending workload in
    ``CycleResult.pending`` (the ones not examined share one object per project);
    ``False`` (the cheap mode, for the live loop and simulations) puts only the examined ones
    there and leaves the shared per-project reason in ``CycleResult.queued``, so
    ``CycleResult.reason_for(id, project)`` still answers for every pending workload, at a
    cost of O(projects) instead of O(pending).

    ``indexes``: ``True`` (default) uses the cycle's indexes and memos -- the per-host count of
    free whole GPUs (skips ``place`` when no host has enough), the project fast path (a project
    that can neither start, reclaim nor preempt anything is not walked), and the per-cycle
    memos of quota and preemption failures. ``False`` turns them all off (every candidate goes
    through quota, preemption trials and ``place``); used to measure what they buy. The count
    and the project fast path are exact; the two memos are approximations (a larger request of
    the same project, flavour, priority and preemptibility is taken to fail as a smaller one
    just did), so with indexes off a few more workloads may start in a large cycle.

    ``lanes``: place borrowing admissions apart from other work (``admission/capacity.py``) when
    quotas are enforced; ``False`` places both by the profile alone (to measure what it buys).

    ``straddle_trials`` bounds the reclaim trials per cycle for workloads that straddle their
    project's guarantee (below it now, above it once started; see ``decide._preempt``): each is
    a preemption trial, so a pool of many projects spreads them over a few cycles.
    """

    fair_share: bool = True
    preemption: bool = True
    backfill: bool = True
    strict_fifo: bool = False
    max_reservations: int = 1
    lookahead: int = 16
    max_victims: int = 64
    explain_all: bool = True
    grace_s: float = 30.0
    profile: Any = None
    indexes: bool = True
    straddle_trials: int = 32
    lanes: bool = True


@dataclass
class CycleState:
    quotas: QuotaTree
    now: float
    options: CycleOptions
    cap: CycleCapacity
    ledger: QuotaLedger
    book: ShareBook
    running: Sequence[RunningTask]
    result: CycleResult = field(default_factory=CycleResult)
    preempted: set[str] = field(default_factory=set)       # workload ids preempted this cycle
    admitted_ends: list[tuple[float, str, int]] = field(default_factory=list)
    preempt_failed: dict[tuple, int] = field(default_factory=dict)
    running_usage: dict[tuple[str, str], int] = field(default_factory=dict)
    min_running_priority: dict[str, int] = field(default_factory=dict)
    quota_blocked: dict[tuple, tuple[int, Any]] = field(default_factory=dict)
    no_room: dict[tuple, Any] = field(default_factory=dict)   # reasons by what they say
    reserve_tries: int = 0
    straddle_tries: int = 0
    claims: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (cohort, flavour)
    _demands: dict[str, Demand] = field(default_factory=dict)
    _tasks_by_project: dict[str, list[RunningTask]] | None = None
    _by_project: dict[str, list[RunningWorkload]] = field(default_factory=dict)
    _reclaim_pools: dict[tuple[str, str], list] = field(default_factory=dict)
    _ends: list[tuple[float, str, int, str]] | None = None

    def demand(self, w: PendingWorkload) -> Demand:
        """:func:`demand_of` ``w``, memoised for the cycle."""
        d = self._demands.get(w.id)
        if d is None:
            d = self._demands[w.id] = demand_of(w, self.quotas)
        return d

    def claim(self, project: str, flavor: str) -> None:
        """``project`` has work within its guarantee of ``flavor`` that could not start this
        cycle: its idle lendable guarantee is claimed (no one may borrow it, see
        :meth:`claimed_idle`)."""
        cohort = self.quotas.project(project).cohort
        if cohort is not None and self.quotas.enforce:
            self.claims.setdefault((cohort, flavor), set()).add(project)

    def claimed_idle(self, project: str, flavor: str) -> int:
        """Milli-GPU of the cohort pool claimed by *other* members waiting for their own
        guarantee: the sum of their idle lendable guarantee now (it shrinks as they start
        work, so a claim never outlives its need within the cycle)."""
        cohort = self.quotas.project(project).cohort
        members = self.claims.get((cohort, flavor)) if cohort is not None else None
        if not members:
            return 0
        return sum(self.ledger.lent(m, flavor) for m in members if m != project)

    def running_of(self, project: str) -> list[RunningWorkload]:
        """Running workloads of ``project`` (tasks grouped by workload), built on first use."""
        if self._tasks_by_project is None:
            self._tasks_by_project = {}
            for t in self.running:
                self._tasks_by_project.setdefault(t.project, []).append(t)
        out = self._by_project.get(project)
        if out is None:
            groups: dict[str, list[RunningTask]] = {}
            for t in self._tasks_by_project.get(project, ()):
                groups.setdefault(t.workload_id, []).append(t)
            out = [self._workload(wid, groups[wid]) for wid in sorted(groups)]
            self._by_project[project] = out
        return out

    def _workload(self, wid: str, ts: list[RunningTask]) -> RunningWorkload:
        t0 = ts[0]
        since = t0.checkpointed_at if t0.checkpointed_at is not None else t0.started_at
        return RunningWorkload(
            wid, t0.project, flavor_of(t0.task, self.quotas, t0.flavor),
            sum(task_units(t.task) for t in ts), min(t.priority for t in ts),
            all(t.preemptible for t in ts), max(0.0, self.now - since), tuple(ts),
            tuple(sorted({t.placement.host for t in ts})), all(t.stopping for t in ts))

    def reclaim_pool(self, cohort: str, flavor: str) -> list[tuple[tuple, RunningWorkload]]:
        """Preemptible running workloads of ``flavor`` of the cohort's members that borrowed at
        the start of the cycle, sorted by victim preference (built once per cycle)."""
        key = (cohort, flavor)
        pool = self._reclaim_pools.get(key)
        if pool is None:
            pool = []
            for member in self.quotas.cohorts.get(cohort, ()):
                g = self.quotas.project(member).quota(flavor).guaranteed
                if self.running_usage.get((member, flavor), 0) <= g:
                    continue
                for r in self.running_of(member):
                    if r.preemptible and r.flavor == flavor:
                        pool.append(((0, r.priority, not r.stopping, r.lost_s, -r.units,
                                      r.id), r))
            pool.sort(key=lambda kv: kv[0])
            self._reclaim_pools[key] = pool
        return pool

    def ends(self) -> Iterator[tuple[float, str, int]]:
        """``(expected_end, host, whole GPUs)`` of running work not preempted and of this cycle's
        admissions, in order of end (the running part is :func:`running_ends`, sorted once per
        cycle, or kept by the caller in ``RunningTotals.ends``)."""
        if self._ends is None:
            self._ends = running_ends(self.running)
        gone = self.preempted
        base = ((e, h, g) for e, h, g, w in self._ends if w not in gone)
        return heapq.merge(base, sorted(self.admitted_ends))


@dataclass
class RunningTotals:
    """What step 1 sums over the running tasks: milli-GPU per ``(project, flavour)``
    (``usage``), ``[gpu milli, cpu milli, memory MiB]`` held per project (``holding``), and the
    lowest priority of a preemptible running task per project (``low``). A caller that keeps
    these between cycles (the simulator) passes them to :func:`build_state` to skip the
    O(running) scan; they must equal :func:`running_totals` of the running tasks.

    ``ends`` (optional): :func:`running_ends` of the running tasks, kept sorted by the caller
    (e.g. with ``bisect.insort``), so backfill does not sort every running task each cycle it
    looks for a reservation; ``None``: the cycle sorts them when it needs them. The cycle only
    reads it.

    ``lent`` (optional): :func:`borrowed_on` of the running tasks, kept by the caller (the
    simulator); ``None``: the cycle counts them when lanes are on."""

    usage: dict[tuple[str, str], int]
    holding: dict[str, list[float]]
    low: dict[str, int]
    ends: list[tuple[float, str, int, str]] | None = None
    lent: dict[tuple[str, str, str], int] | None = None


def end_of(t: RunningTask) -> tuple[float, str, int, str] | None:
    """The entry of ``t`` in :func:`running_ends` (``None``: it has none)."""
    if t.expected_end is None or not is_whole(t.task):
        return None
    return (t.expected_end, t.placement.host, t.task.gpus, t.workload_id)


def running_ends(running: Sequence[RunningTask]) -> list[tuple[float, str, int, str]]:
    """``(expected_end, host, whole GPUs, workload id)`` of every running whole-GPU task with an
    expected end, sorted: what backfill reservations are computed from."""
    return sorted(e for e in map(end_of, running) if e is not None)


def lent_of(t: RunningTask, quotas: QuotaTree) -> tuple[tuple[str, str, str], int] | None:
    """The entry of ``t`` in :func:`borrowed_on`: ``((project, flavour, host), whole GPUs)``
    (``None``: it has none)."""
    if not t.borrowed or not is_whole(t.task):
        return None
    return (t.project, flavor_of(t.task, quotas, t.flavor), t.placement.host), t.task.gpus


def borrowed_on(running: Sequence[RunningTask],
                quotas: QuotaTree) -> dict[tuple[str, str, str], int]:
    """Whole GPUs held by borrowed tasks, per ``(project, flavour, host)``."""
    out: dict[tuple[str, str, str], int] = {}
    for t in running:
        e = lent_of(t, quotas)
        if e is not None:
            out[e[0]] = out.get(e[0], 0) + e[1]
    return out


def running_totals(running: Sequence[RunningTask], quotas: QuotaTree) -> RunningTotals:
    """:class:`RunningTotals` of ``running`` (one pass)."""
    holding: dict[str, list[float]] = {}
    usage: dict[tuple[str, str], int] = {}
    low: dict[str, int] = {}
    for t in running:
        if t.preemptible and t.priority < low.get(t.project, t.priority + 1):
            low[t.project] = t.priority
        units = task_units(t.task)
        key = (t.project, flavor_of(t.task, quotas, t.flavor))
        usage[key] = usage.get(key, 0) + units
        v = holding.setdefault(t.project, [0.0, 0.0, 0.0])
        v[0] += units
        v[1] += getattr(t.task, "cpu_milli", 0)
        v[2] += getattr(t.task, "memory_mib", 0)
    return RunningTotals(usage, holding, low)


def _capacity(snap: Any) -> tuple[float, float, float]:
    """Cluster capacity for fair share (GPU milli, CPU milli, memory MiB): hosts and devices are
    fixed for the life of a snapshot, so it is computed once per snapshot (``snap.cache``)."""
    c = snap.cache.get(_CAPACITY_KEY)
    if c is None:
        c = snap.cache[_CAPACITY_KEY] = (
            float(max(1, int((snap.gpu_free >= 0).sum()) * 1000)),
            float(max(1, int(snap.cpu_cap.sum()))), float(max(1, int(snap.mem_cap.sum()))))
    return c


_CAPACITY_KEY = "admission.state.capacity"
_BOOK_MAPS: weakref.WeakKeyDictionary[QuotaTree, tuple[dict, dict, dict]] = \
    weakref.WeakKeyDictionary()


def _book_maps(quotas: QuotaTree) -> tuple[dict, dict, dict]:
    """Project weights, project organisations and organisation weights of the (immutable) quota
    tree, for :class:`ShareBook` (built once per tree; read only)."""
    maps = _BOOK_MAPS.get(quotas)
    if maps is None:
        projects = quotas.projects
        maps = _BOOK_MAPS[quotas] = ({n: p.weight for n, p in projects.items()},
                                     {n: p.organisation for n, p in projects.items()},
                                     {n: o.weight for n, o in quotas.organisations.items()})
    return maps


def build_state(snap: Any, running: Sequence[RunningTask], quotas: QuotaTree, now: float,
                rng: Any, options: CycleOptions, history: UsageHistory | None,
                place_fn: Any, totals: RunningTotals | None = None,
                demands: dict[str, Demand] | None = None) -> CycleState:
    """Step 1 of the cycle: ledger and shares from running work, capacity on the snapshot.
    ``totals`` (optional) replaces the scan of ``running`` (see :class:`RunningTotals`);
    ``demands`` (optional) is a memo of ``demand_of`` by workload id that outlives the cycle
    (``PendingQueues.demands``)."""
    ledger = QuotaLedger(quotas)
    tot = totals if totals is not None else running_totals(running, quotas)
    holding = tot.holding
    usage = dict(tot.usage)          # a copy: preemption trials mutate it
    low = dict(tot.low)
    ledger.load(sorted(usage.items()))
    book = ShareBook(_capacity(snap), *_book_maps(quotas))
    book.charge_all(holding.items())
    if history is not None:
        book.charge_all(history.level.items())
    cap = CycleCapacity(snap, place_fn, options.profile, rng, indexed=options.indexes)
    if options.lanes and quotas.enforce:
        lent = tot.lent if tot.lent is not None else borrowed_on(running, quotas)
        over = {k for k, u in usage.items() if u > quotas.project(k[0]).quota(k[1]).guaranteed}
        cap.set_lent(lent, over)
    return CycleState(quotas, now, options, cap, ledger, book, running, running_usage=usage,
                      min_running_priority=low, _ends=tot.ends,
                      _demands=demands if demands is not None else {})
