"""Deciding one workload inside a cycle: quota, placement, preemption, reservation, reason.

:func:`decide` is called by ``cycle.run_cycle`` (step 3) for each workload in queue order. It
either books the workload (gang whole) on the cycle's snapshot and ledger and records an
:class:`~.reasons.Admit` (plus any :class:`~.reasons.Preempt` it needed), or records a
:class:`~.reasons.PendingReason` and reports which kind of block stopped it.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from gpuplane.scheduling.admission import backfill, preemption
from gpuplane.scheduling.admission.capacity import GangResult, is_whole
from gpuplane.scheduling.admission.preemption import RunningWorkload, Victim
from gpuplane.scheduling.admission.quota import QuotaCheck, QuotaFit
from gpuplane.scheduling.admission.reasons import (
    COHORT_FULL, GUARANTEE_ONLY, NO_CAPACITY, NO_TOPOLOGY, OVER_QUOTA, OWNER_WAITING, RESERVED,
    WAITING_RECLAIM, Admit, PendingReason, Preempt)
from gpuplane.scheduling.admission.state import CycleState
from gpuplane.scheduling.queueing import Demand, PendingWorkload


class Block(Enum):
    NONE = "admitted"
    QUOTA = "quota"
    CAPACITY = "capacity"
    GUARANTEE_ONLY = "guarantee_only"   # not preemptible and would borrow: O(1), not counted


def _gpus(units: int) -> str:
    return f"{units / 1000:g}"


def decide(st: CycleState, w: PendingWorkload) -> Block:
    """Admit ``w`` if quota, capacity (and, when allowed, preemption) permit; else explain.

    Borrowing (holding more than the project's guarantee) is allowed only to preemptible work,
    and only from idle capacity no member of the cohort is waiting for (:func:`may_take`).
    Work within its guarantee that cannot start *claims* its project's idle guarantee for the
    rest of the cycle (``CycleState.claim``)."""
    d = st.demand(w)
    memo_key = (w.project, d.flavor, w.priority, w.preemptible)
    memo = st.quota_blocked.get(memo_key) if st.options.indexes else None
    if memo is not None and d.gpu >= memo[0]:
        st.result.pending[w.id] = memo[1]     # as blocked as a smaller workload just was
        return memo[2]
    chk = st.ledger.check(w.project, d.flavor, d.gpu)
    if may_take(st, w, d, chk):
        placed = _place(st, w, chk.fit is QuotaFit.BORROWING)
        if placed.placements is not None:
            _admit(st, w, d, placed.placements, chk.fit is QuotaFit.BORROWING, ())
            return Block.NONE
        entitled = chk.fit is QuotaFit.GUARANTEED
        if st.options.preemption and _preempt(st, w, d, entitled):
            return Block.NONE
        if entitled:
            st.claim(w.project, d.flavor)
        _capacity_reason(st, w, placed)
        return Block.CAPACITY
    if st.options.preemption and _preempt(st, w, d, chk.fit is QuotaFit.RECLAIM):
        return Block.NONE
    if chk.fit is QuotaFit.RECLAIM:
        st.claim(w.project, d.flavor)
    reason = st.result.pending[w.id] = _quota_reason(st, w, d, chk)
    block = Block.GUARANTEE_ONLY if reason.code == GUARANTEE_ONLY else Block.QUOTA
    st.quota_blocked[memo_key] = (d.gpu, reason, block)
    if chk.fit is QuotaFit.COHORT_FULL and block is Block.QUOTA and not _topology_blocked(w):
        # The cohort lends all it has: like a full cluster, later (lower-ordered) borrowers
        # must not starve this one, so it may get a reservation too.
        _reserve(st, w)
    return block


def may_take(st: CycleState, w: PendingWorkload, d: Demand, chk: QuotaCheck) -> bool:
    """May ``w`` take what ``chk`` says? Within the guarantee: yes. Borrowing: only when ``w``
    is preemptible (lent capacity must stay reclaimable, DESIGN invariant 3) and the idle
    capacity it draws is not claimed by another member waiting for its own guarantee (no
    preemption churn: what would be reclaimed at once is not lent)."""
    if chk.fit is QuotaFit.GUARANTEED or (d.gpu == 0 and chk.fit is QuotaFit.BORROWING):
        return True       # (work without GPUs borrows nothing)
    if chk.fit is not QuotaFit.BORROWING or not w.preemptible:
        return False
    return chk.draw <= chk.pool_free - st.claimed_idle(w.project, d.flavor)


# -- placement and backfill -------------------------------------------------------------------
def _place(st: CycleState, w: PendingWorkload, borrowing: bool) -> GangResult:
    cap = st.cap
    placed = cap.place_gang(w.tasks, *_topology(w), lane=borrowing)
    if placed.placements is not None or not cap.holds or w.expected_duration is None:
        return placed
    if st.now + w.expected_duration > min(st.result.reservations.values()):
        return placed
    if w.topology is None and not cap.may_fit(w.tasks, without_holds=True):
        return placed                  # (the trial below would fail on the counts alone)
    held = cap.lift_holds()            # it ends before every reservation starts: backfill it
    placed = cap.place_gang(w.tasks, *_topology(w), lane=borrowing)
    cap.restore_holds(held)
    return placed


def _admit(st: CycleState, w: PendingWorkload, d: Demand, placements: tuple, borrowing: bool,
           after: tuple[str, ...]) -> None:
    st.ledger.add(w.project, d.flavor, d.gpu)
    st.book.charge(w.project, (float(d.gpu), float(d.cpu), float(d.memory)))
    st.result.placements.append(Admit(w.id, w.project, placements, borrowing, after))
    if borrowing:
        st.cap.lend(w.tasks, placements, +1)
    if w.expected_duration is not None:
        end = st.now + w.expected_duration
        for t, p in zip(w.tasks, placements):
            if is_whole(t):
                st.admitted_ends.append((end, p.host, t.gpus))


def _reserve(st: CycleState, w: PendingWorkload) -> float | None:
    """Give ``w`` a backfill reservation if allowed and one applies; returns its start time."""
    opts = st.options
    if (not opts.backfill or opts.strict_fifo
            or len(st.result.reservations) >= opts.max_reservations
            or st.reserve_tries >= 4 * opts.max_reservations):
        return None
    st.reserve_tries += 1
    t = backfill.reserve(w.tasks, st.cap, st.ends())
    if t is not None:
        st.result.reservations[w.id] = t
    return t


def _capacity_reason(st: CycleState, w: PendingWorkload, placed: GangResult) -> None:
    if placed.reason is not None and getattr(placed.reason, "level", None):
        r = placed.reason      # a TopologyUnschedulable: no domain holds the gang whole
        code = NO_TOPOLOGY
        detail = {"gang": len(w.tasks), "topology": r.level, "domains": r.domains,
                  "tried": r.tried, "closest": r.closest}
        if st.cap.holds:
            first = min(st.result.reservations, key=lambda k: (st.result.reservations[k], k))
            detail["reserved_for"] = first
        st.result.pending[w.id] = PendingReason(code, str(r), detail)
        return
    t = _reserve(st, w) if not _topology_blocked(w) else None
    if t is not None:
        st.result.pending[w.id] = PendingReason(
            NO_CAPACITY, f"no capacity now; capacity is reserved for it from t={t:.0f}s",
            {"reserved_from": t})
        return
    if placed.reason is None:
        st.result.pending[w.id] = _no_room(st, w)
        return
    msg = str(placed.reason)
    if st.cap.holds:
        first = min(st.result.reservations, key=lambda k: (st.result.reservations[k], k))
        st.result.pending[w.id] = PendingReason(
            RESERVED, f"{msg}; free capacity is reserved for {first}, which starts by "
                      f"t={st.result.reservations[first]:.0f}s", {"reserved_for": first})
    else:
        st.result.pending[w.id] = PendingReason(NO_CAPACITY, msg, {"gang": len(w.tasks)})


def _no_room(st: CycleState, w: PendingWorkload) -> PendingReason:
    """The reason of a whole-GPU workload that no host has room for by the free-GPU counts
    (``place`` was not called). Equal situations share one reason object in a cycle (what it
    says depends only on the key below), as memoised quota reasons do."""
    need = max((t.gpus for t in w.tasks if is_whole(t)), default=0)
    holds = bool(st.cap.holds)
    first = None
    if holds:
        first = min(st.result.reservations, key=lambda k: (st.result.reservations[k], k))
    key = (need, st.cap.max_free, len(w.tasks), first,
           st.result.reservations[first] if first is not None else None)
    reason = st.no_room.get(key)
    if reason is not None:
        return reason
    msg = (f"no host has {need} free whole GPUs (most free on one host: {st.cap.max_free})"
           + (f", gang of {len(w.tasks)}" if len(w.tasks) > 1 else ""))
    if first is not None:
        reason = PendingReason(
            RESERVED, f"{msg}; free capacity is reserved for {first}, which starts by "
                      f"t={st.result.reservations[first]:.0f}s", {"reserved_for": first})
    else:
        reason = PendingReason(NO_CAPACITY, msg, {"gang": len(w.tasks)})
    st.no_room[key] = reason
    return reason


def _quota_reason(st: CycleState, w: PendingWorkload, d: Demand, chk: QuotaCheck) -> PendingReason:
    p = st.quotas.project(w.project)
    detail = {"flavor": d.flavor, "asked": d.gpu, "usage_after": chk.usage_after,
              "guaranteed": chk.guaranteed, "ceiling": chk.ceiling, "pool_free": chk.pool_free}
    borrows = chk.fit in (QuotaFit.BORROWING, QuotaFit.COHORT_FULL, QuotaFit.OVER_LIMIT)
    if borrows and not w.preemptible and p.cohort is not None:
        return _guarantee_only(w, d, chk, p.cohort, detail)
    if chk.fit is QuotaFit.OVER_LIMIT:
        limit = ("no cohort to borrow from" if p.cohort is None
                 else f"borrowing limit {_gpus((chk.ceiling or 0) - chk.guaranteed)}")
        return PendingReason(OVER_QUOTA, f"project {w.project} would hold {_gpus(chk.usage_after)} "
                             f"GPUs of {d.flavor}, over its ceiling of {_gpus(chk.ceiling or 0)} "
                             f"(guaranteed {_gpus(chk.guaranteed)}, {limit})", detail)
    if chk.fit is QuotaFit.COHORT_FULL:
        return PendingReason(COHORT_FULL, f"over its guarantee of {_gpus(chk.guaranteed)} "
                             f"GPUs of {d.flavor} and cohort {p.cohort} has only "
                             f"{_gpus(chk.pool_free)} idle to lend", detail)
    if chk.fit is QuotaFit.BORROWING:     # preemptible, but the idle capacity is claimed
        cohort = p.cohort or ""
        owners = sorted(m for m in st.claims.get((cohort, d.flavor), ())
                        if m != w.project and st.ledger.lent(m, d.flavor) > 0)
        detail["claimed_by"] = owners
        return PendingReason(OWNER_WAITING, f"would borrow {_gpus(chk.draw)} GPUs of {d.flavor}, "
                             f"but of the {_gpus(chk.pool_free)} idle in cohort {cohort}, "
                             f"{_gpus(st.claimed_idle(w.project, d.flavor))} belong to "
                             f"{', '.join(owners)}, whose own work waits for them; it starts "
                             "once they have started or more capacity is idle", detail)
    return PendingReason(WAITING_RECLAIM, f"within its guarantee, but {_gpus(chk.reclaim)} "
                         f"GPUs of {d.flavor} lent to cohort {p.cohort} could not be reclaimed "
                         "(borrowers not preemptible or preemption disabled)", detail)


def _guarantee_only(w: PendingWorkload, d: Demand, chk: QuotaCheck, cohort: str,
                    detail: dict) -> PendingReason:
    used = chk.usage_after - d.gpu
    unblock = ("or submit it as preemptible (priority class `preemptible` or "
               "`preemptible: true`) so it may borrow idle capacity of cohort " + cohort)
    if d.gpu > chk.guaranteed:
        msg = (f"not preemptible, so it may only use project {w.project}'s guarantee, and it asks "
               f"{_gpus(d.gpu)} GPUs of {d.flavor}, more than the {_gpus(chk.guaranteed)} "
               f"guaranteed: raise the guarantee {unblock}")
    else:
        msg = (f"not preemptible, so it may only use project {w.project}'s guarantee: the "
               f"project holds {_gpus(used)} of {_gpus(chk.guaranteed)} guaranteed GPUs of "
               f"{d.flavor}; it starts when the project's own work frees "
               f"{_gpus(chk.usage_after - chk.guaranteed)}, {unblock}")
    return PendingReason(GUARANTEE_ONLY, msg, detail)


# -- preemption ---------------------------------------------------------------------------------
def _preempt(st: CycleState, w: PendingWorkload, d: Demand, entitled: bool) -> bool:
    """Try reclaim (``entitled``) and priority preemption; on success admit ``w``.

    A preemptible workload of a project below its guarantee that would end above it
    (*straddling*, e.g. 8 GPUs asked with 4 left of the guarantee) may reclaim too, but only
    surplus: victims whose project stays at or above its own guarantee without them. So a
    project's guarantee is reachable at the granularity of its jobs, and two straddlers can
    never take from each other in turn."""
    g_w = st.quotas.project(w.project).quota(d.flavor).guaranteed
    straddle = (not entitled and w.preemptible and st.quotas.enforce
                and st.ledger.used(w.project, d.flavor) < g_w
                and st.straddle_tries < st.options.straddle_trials)
    key = (w.project, d.flavor, entitled, w.priority, w.preemptible, straddle)
    failed = st.preempt_failed.get(key) if st.options.indexes else None
    if failed is not None and d.gpu >= failed:
        return False
    cohort = st.quotas.project(w.project).cohort
    reclaim = (entitled or straddle) and st.ledger.cohort_borrowed(cohort, d.flavor) > 0
    own = w.priority > st.min_running_priority.get(w.project, w.priority)
    if not reclaim and not own:
        st.preempt_failed[key] = d.gpu
        return False
    if straddle and reclaim:
        st.straddle_tries += 1
    base = st.running_usage

    def borrowing(project: str) -> bool:
        g = st.quotas.project(project).quota(d.flavor).guaranteed
        return (st.ledger.borrowed(project, d.flavor) > 0
                and base.get((project, d.flavor), 0) > g)

    cands = preemption.candidates(w, d.flavor, reclaim, st.quotas, borrowing,
                                  st.running_of if own else _nothing, st.reclaim_pool,
                                  st.preempted, limit=4 * st.options.max_victims)
    if not cands:
        st.preempt_failed[key] = d.gpu
        return False
    cap = st.cap
    need = max((t.gpus for t in w.tasks if is_whole(t)), default=0) if len(w.tasks) == 1 else 0
    cands = preemption.group_by_host(cands, lambda h: int(cap.free_whole[cap.snap.index[h]]),
                                     need)

    def remove(r: RunningWorkload) -> Callable[[], None]:
        undos = [cap.release(t.task, t.placement) for t in r.tasks]
        lent = [t for t in r.tasks
                if t.borrowed and (r.project, r.flavor) in cap.over]
        cap.lend([t.task for t in lent], [t.placement for t in lent], -1)
        st.ledger.remove(r.project, r.flavor, r.units)
        base[(r.project, r.flavor)] -= r.units

        def undo() -> None:
            cap.lend([t.task for t in lent], [t.placement for t in lent], +1)
            base[(r.project, r.flavor)] += r.units
            st.ledger.add(r.project, r.flavor, r.units)
            for u in reversed(undos):
                u()

        return undo

    def admissible() -> bool:
        return may_take(st, w, d, st.ledger.check(w.project, d.flavor, d.gpu))

    def surplus(r: RunningWorkload) -> bool:
        """Straddling: take only what leaves the victim's project at or above its guarantee."""
        g = st.quotas.project(r.project).quota(d.flavor).guaranteed
        return base.get((r.project, d.flavor), 0) - r.units >= g

    victims = preemption.select(w, d.flavor, d.gpu, cands, st.ledger, remove,
                                lambda: cap.fits(w.tasks, *_topology(w)), borrowing,
                                st.options.max_victims, admissible=admissible,
                                victim_ok=surplus if straddle else None)
    if victims is None:
        st.preempt_failed[key] = d.gpu
        return False
    chk = st.ledger.check(w.project, d.flavor, d.gpu)
    borrowing = chk.fit is QuotaFit.BORROWING
    placed = cap.place_gang(w.tasks, *_topology(w), lane=borrowing)
    if placed.placements is None:   # fits() just said yes on this very state
        raise RuntimeError(f"placement of {w.id} changed between trial and booking")
    after = _record_victims(st, w, victims)
    _admit(st, w, d, placed.placements, borrowing, after)
    return True


def _record_victims(st: CycleState, w: PendingWorkload, victims: list[Victim]) -> tuple[str, ...]:
    after: list[str] = []
    for v in victims:
        r = v.workload
        st.preempted.add(r.id)
        st.book.charge(r.project, (float(r.units), 0.0, 0.0), -1.0)
        why = (f"reclaimed by project {w.project} for {w.id}: {r.project} was borrowing "
               "capacity lent by its cohort" if v.code == preemption.RECLAIM
               else f"preempted by higher-priority {w.id} (priority {w.priority} > {r.priority})")
        for t in r.tasks:
            after.append(t.id)
            st.result.preemptions.append(Preempt(t.id, r.id, r.project, w.id, v.code, why,
                                                 r.lost_s, st.options.grace_s))
    return tuple(after)


def _nothing(project: str) -> tuple:
    return ()


def _topology(w: PendingWorkload) -> tuple[str | None, bool]:
    """``(level, required)`` for :meth:`CycleCapacity.place_gang`: ``"host"``, ``"nvlink"`` or
    ``"rack"`` (``placement.topology``), or ``None``."""
    return (w.topology, w.topology_required)


def _topology_blocked(w: PendingWorkload) -> bool:
    """A required NVLink/rack gang: a reservation (which holds hosts by GPU count, not by
    domain) would not guarantee it a domain, so it gets none."""
    return w.topology in ("nvlink", "rack") and w.topology_required
