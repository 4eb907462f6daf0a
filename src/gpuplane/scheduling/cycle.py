"""The scheduling cycle: the one function that decides what starts, what stops and why.

The live control loop and the simulator (``sim/replay.py``) both call :func:`run_cycle`; nothing
else decides placements. It reads no clock and no global randomness (``now`` and ``rng`` are
arguments) and does no I/O.
"""

from __future__ import annotations

import heapq
from dataclasses import replace
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from gpuplane.domain.tenancy import QuotaTree
from gpuplane.scheduling.admission.decide import Block, decide
from gpuplane.scheduling.admission.fairshare import UsageHistory
from gpuplane.scheduling.admission.reasons import (
    FIFO_BLOCKED, QUEUED, CycleResult, PendingReason)
from gpuplane.scheduling.admission.state import (
    CycleOptions, CycleState, RunningTotals, build_state)
from gpuplane.scheduling.queueing import PendingQueues, PendingWorkload, RunningTask

__all__ = ["CycleOptions", "CycleResult", "run_cycle"]


def run_cycle(snap: Any, pending: Sequence[PendingWorkload] | PendingQueues,
              running: Sequence[RunningTask], quotas: QuotaTree, now: float, rng: Any, *,
              options: CycleOptions | None = None, history: UsageHistory | None = None,
              place_fn: Callable[..., Any] | None = None,
              totals: RunningTotals | None = None) -> CycleResult:
    """Decide one scheduling cycle.

    ``snap`` is a ``ClusterSnapshot`` holding exactly the ``running`` tasks; the cycle leaves it
    updated with its own decisions (preempted tasks released, admitted workloads booked), so a
    simulator can keep one snapshot across cycles; pass ``snap.copy()`` to keep the original.
    ``pending`` is a sequence or a :class:`PendingQueues` kept by the caller (not modified).
    ``history`` is the decayed usage used for fair share (``None``: current holdings only).
    ``place_fn(snap, task, profile, rng)`` defaults to ``scheduling.placement.place`` with
    ``options.profile`` (a ``Profile``, a profile name, or ``None`` for the default profile; pass a
    ``Profile`` object when calling many cycles so plugin caches survive).
    ``totals`` (optional) are the running tasks' sums kept by the caller between cycles
    (``admission.state.RunningTotals``); they skip step 1's O(running) scan.

    Two passes over the queues: (a) work that fits in what is left of its project's guarantee,
    in fair-share order, reclaiming from borrowers when needed -- a project's head that would
    borrow is passed over, never blocking its guaranteed work; (b) everything else, where only
    preemptible work may borrow, and only idle capacity that no owner with blocked work of
    pass (a) has claimed (``admission/decide.may_take``).

    Returns admissions (each gang whole, with the preemptions it waits for), preemptions (each
    naming its beneficiary), a structured reason for every pending workload the cycle examined
    (every pending workload when ``options.explain_all``) and one shared reason per project for
    the rest (``result.queued``; see ``CycleResult.reason_for``). Same inputs, same result.
    """
    options = options or CycleOptions()
    if place_fn is None:
        place_fn = _default_place()
        if options.profile is None or isinstance(options.profile, str):
            options = replace(options, profile=_profile(options.profile))
    queues = pending if isinstance(pending, PendingQueues) else PendingQueues.of(pending)
    st = build_state(snap, running, quotas, now, rng, options,                  # 1. state
                     history if options.fair_share else None, place_fn, totals,
                     queues.demands(quotas))
    seen = _Seen()
    if options.strict_fifo or not quotas.enforce:
        _admit_in_order(st, queues, _Order(st, queues, queues.iter_project), seen)
    else:
        guarantee = _Order(st, queues, lambda p: _within_guarantee(st, queues, p))  # 2. order
        _admit_in_order(st, queues, guarantee, seen)                    # 3a. guarantees first
        rest = _Order(st, queues, lambda p: _not_seen(queues, p, seen))
        _admit_in_order(st, queues, rest, seen)                         # 3b. then borrowing
    _explain_rest(st, queues, seen)                                             # 4. explain
    st.cap.lift_holds()                                                         # 5. unhold
    return st.result


class _Seen:
    """Workloads examined this cycle, and per project how many; projects found hopeless."""

    __slots__ = ("ids", "count", "hopeless")

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.count: dict[str, int] = {}
        self.hopeless: set[str] = set()

    def add(self, w: PendingWorkload) -> None:
        if w.id not in self.ids:
            self.ids.add(w.id)
            self.count[w.project] = self.count.get(w.project, 0) + 1


def _within_guarantee(st: CycleState, queues: PendingQueues,
                      project: str) -> Iterator[PendingWorkload]:
    """Pass 1: the project's queue in order, only the workloads that fit in what is left of its
    guarantee when they are reached (a head that would borrow never blocks them)."""
    q = st.quotas.project(project)
    flavors = [f for f in st.quotas.flavors if q.quota(f).guaranteed > 0]
    ledger = st.ledger
    if all(ledger.used(project, f) >= q.quota(f).guaranteed for f in flavors):
        return
    for w in queues.iter_project(project):
        d = st.demand(w)
        if ledger.within_guarantee(project, d.flavor, d.gpu):
            yield w
        elif all(ledger.used(project, f) >= q.quota(f).guaranteed for f in flavors):
            return            # no room left in any flavour: nothing more fits


def _not_seen(queues: PendingQueues, project: str, seen: _Seen) -> Iterator[PendingWorkload]:
    """Pass 2: the project's queue in order, without the workloads pass 1 examined."""
    ids = seen.ids
    for w in queues.iter_project(project):
        if w.id not in ids:
            yield w


# -- step 2: order ------------------------------------------------------------------------------
class _Head:
    """The next workload of one project and the rest of its queue."""

    __slots__ = ("project", "items", "current", "blocked")

    def __init__(self, project: str, items: Iterator[PendingWorkload]) -> None:
        self.project = project
        self.items = items
        self.current: PendingWorkload | None = next(items, None)
        self.blocked = 0

    def advance(self) -> None:
        self.current = next(self.items, None)


class _Order:
    """Which head to serve next.

    Strict FIFO / no fair share: one heap keyed by ``(-priority, age, id)``. Fair share: two
    levels (hierarchical DRF): organisations keyed by *(their best head needs to borrow?, its
    priority, organisation dominant share, its age)*, and inside each organisation its projects
    keyed by *(needs to borrow?, priority, project dominant share, age, id)*. Shares and the
    borrow flag change only through admissions of the project (and organisation) being served,
    which is re-keyed right after, so no key is ever stale (preemption victims excepted: their
    project may be served a little later than its share says, never earlier).
    """

    def __init__(self, st: CycleState, queues: PendingQueues,
                 items: Callable[[str], Iterator[PendingWorkload]]) -> None:
        self.st = st
        self.fair = st.options.fair_share and not st.options.strict_fifo
        self._orgs: dict[str, str] = {}      # project -> organisation, looked up once
        self.flat: list[tuple[tuple, str, _Head]] = []
        self.orgs: dict[str, list[tuple[tuple, str, _Head]]] = {}
        self.top: list[tuple[tuple, str]] = []
        for p in queues.projects():
            h = _Head(p, items(p))
            if h.current is None:
                continue
            if self.fair:
                self.orgs.setdefault(self._org(p), []).append((self._pkey(h), p, h))
            else:
                self.flat.append((self._fkey(h), p, h))
        heapq.heapify(self.flat)
        for org, heap in self.orgs.items():
            heapq.heapify(heap)
            self.top.append((self._okey(org), org))
        heapq.heapify(self.top)

    def _org(self, project: str) -> str:
        org = self._orgs.get(project)
        if org is None:
            org = self._orgs[project] = self.st.quotas.project(project).organisation
        return org

    @staticmethod
    def _fkey(h: _Head) -> tuple:
        w = h.current
        assert w is not None
        return (-w.priority, w.submitted_at, w.id)

    def _pkey(self, h: _Head) -> tuple:
        w = h.current
        assert w is not None
        return (_borrows(self.st, w), -w.priority, self.st.book.project_share(h.project),
                w.submitted_at, w.id)

    def _okey(self, org: str) -> tuple:
        best = self.orgs[org][0][0]
        org_share = self.st.book.org_share(org)
        return (best[0], best[1], org_share, best[3], best[4])

    def pop(self) -> _Head | None:
        """The next head to decide, or ``None`` when every queue is done."""
        if not self.fair:
            return heapq.heappop(self.flat)[2] if self.flat else None
        while self.top:
            _, org = heapq.heappop(self.top)
            heap = self.orgs[org]
            if heap:
                return heapq.heappop(heap)[2]
        return None

    def push(self, h: _Head, keep: bool) -> None:
        """After deciding ``h``'s workload: queue the project's next head (if ``keep``) and re-key
        its organisation."""
        if not self.fair:
            if keep and h.current is not None:
                heapq.heappush(self.flat, (self._fkey(h), h.project, h))
            return
        org = self._org(h.project)
        heap = self.orgs[org]
        if keep and h.current is not None:
            heapq.heappush(heap, (self._pkey(h), h.project, h))
        if heap:
            heapq.heappush(self.top, (self._okey(org), org))

    def remaining(self) -> list[_Head]:
        if not self.fair:
            return [h for _, _, h in self.flat]
        return [h for heap in self.orgs.values() for _, _, h in heap]


def _borrows(st: CycleState, w: PendingWorkload) -> int:
    """0 when ``w`` fits its project's guarantee (served first), 1 when it must borrow: the
    ledger's check would say GUARANTEED or RECLAIM exactly when the project stays within its
    guarantee (a ceiling is never below the guarantee: borrowing limits are >= 0)."""
    d = st.demand(w)
    return 0 if st.ledger.within_guarantee(w.project, d.flavor, d.gpu) else 1


# -- step 3: admit in order -----------------------------------------------------------------------
def _admit_in_order(st: CycleState, queues: PendingQueues, order: _Order, seen: _Seen) -> None:
    """Serve heads in order: decide one workload, then re-queue its project's next head. A
    project stops being served in this pass after ``lookahead`` blocked workloads (work that is
    not preemptible and would borrow is refused in O(1) and not counted)."""
    while (h := order.pop()) is not None:
        w = h.current
        assert w is not None
        if st.options.indexes and _hopeless(st, queues, h):
            seen.hopeless.add(h.project)
            if st.options.explain_all:     # explain its head precisely, skip the rest
                seen.add(w)
                decide(st, w)
            order.push(h, keep=False)
            continue
        seen.add(w)
        block = decide(st, w)
        if block is not Block.NONE and st.options.strict_fifo:
            _fifo_block(st, w, order.remaining(), seen)
            return
        h.advance()
        if block is Block.QUOTA or block is Block.CAPACITY:
            h.blocked += 1
        order.push(h, keep=h.blocked < st.options.lookahead)


def _hopeless(st: CycleState, queues: PendingQueues, h: _Head) -> bool:
    """Fast path: no whole GPU is free, the project queues only whole-GPU work, and it can
    neither reclaim (it holds its guarantee, or no one borrows) nor preempt its own lower-priority
    work. Nothing of the project can start this cycle, so its queue is not walked."""
    if st.cap.max_free > 0 or st.cap.holds or not queues.whole_gpus_only(h.project):
        return False      # free GPUs, held GPUs short work may backfill, or non-whole work
    if not st.options.preemption:
        return True
    w = h.current
    assert w is not None
    if w.priority > st.min_running_priority.get(h.project, w.priority):
        return False
    d = st.demand(w)
    p = st.quotas.project(h.project)
    if st.ledger.used(h.project, d.flavor) < p.quota(d.flavor).guaranteed:
        return st.ledger.cohort_borrowed(p.cohort, d.flavor) <= 0
    return True


def _fifo_block(st: CycleState, head: PendingWorkload, heads: list[_Head], seen: _Seen) -> None:
    """Strict FIFO: everything behind a blocked head waits for it."""
    reason = PendingReason(FIFO_BLOCKED, f"strict FIFO: waiting behind {head.id}",
                           {"head": head.id})
    for h in heads:
        if not st.options.explain_all:
            st.result.queued[h.project] = reason
            continue
        while h.current is not None:
            seen.add(h.current)
            st.result.pending[h.current.id] = reason
            h.advance()


# -- step 4: explain ------------------------------------------------------------------------------
def _explain_rest(st: CycleState, queues: PendingQueues, seen: _Seen) -> None:
    """One shared reason per project for its workloads the cycle did not examine: in
    ``result.queued`` (O(projects)); with ``explain_all`` also in ``result.pending`` per
    workload."""
    for p in queues.projects():
        if p in st.result.queued or seen.count.get(p, 0) >= queues.count(p):
            continue
        if p in seen.hopeless:
            reason = PendingReason(QUEUED, f"not examined: no host has a free whole GPU and "
                                   f"project {p} can neither reclaim lent capacity nor preempt "
                                   "lower-priority work of its own", {"project": p})
        else:
            reason = PendingReason(QUEUED, f"queued behind older or higher-priority work of "
                                   f"project {p} that could not start", {"project": p})
        st.result.queued[p] = reason
        if st.options.explain_all:
            for w in queues.iter_project(p):
                if w.id not in seen.ids:
                    st.result.pending[w.id] = reason


def _default_place() -> Callable[..., Any]:
    from gpuplane.scheduling.placement import place  # lazy: placement imports numpy plugins

    return place


def _profile(name: str | None) -> Any:
    from gpuplane.scheduling.placement import profiles

    return profiles.get(name) if name else profiles.get()
