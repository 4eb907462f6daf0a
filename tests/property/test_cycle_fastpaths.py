"""The cycle's shortcuts (issue 11, simulator speed) answer exactly as the code they replace.

Each test keeps the replaced code as a reference and compares on random inputs (hypothesis,
derandomised): the quota ledger's cached constants, bulk load and ``check``; "must borrow"
(``_borrows``) read off ``within_guarantee``; fair share's unrolled dominant share, bulk charges
and in-place decay; the free-GPU pre-check that skips a backfill trial; the sorted running ends
kept by the caller.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.domain.tenancy import FlavorQuota, Project, QuotaTree
from gpuplane.scheduling.admission.capacity import CycleCapacity, is_whole
from gpuplane.scheduling.admission.fairshare import ShareBook, UsageHistory, dominant_share
from gpuplane.scheduling.admission.quota import QuotaCheck, QuotaFit, QuotaLedger
from gpuplane.scheduling.admission.state import running_ends
from gpuplane.scheduling.placement import place, profiles
from gpuplane.scheduling.queueing import RunningTask
from gpuplane.scheduling.snapshot import ClusterSnapshot
from gpuplane.sim.sharing import team_hosts

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
FLAVORS = ("gpu", "a100")


@st.composite
def projects(draw):
    out = []
    for i in range(draw(st.integers(1, 5))):
        quotas = {}
        cohort = draw(st.sampled_from([None, "c0", "c0", "c1"]))
        for f in draw(st.sets(st.sampled_from(FLAVORS), max_size=2)):
            g = draw(st.integers(0, 8)) * 1000
            limits = (st.none() | st.integers(0, 8).map(lambda x: x * 1000)) if cohort \
                else st.none()
            quotas[f] = FlavorQuota(g, draw(limits), draw(limits))
        out.append(Project(f"p{i}", organisation=f"o{i % 2}", cohort=cohort,
                           weight=draw(st.sampled_from([1.0, 2.0])), quotas=quotas))
    return out


def usages(n_projects: int = 6):
    """Usage of projects p0..p5 (some not in the tree: no quota, no cohort)."""
    key = st.tuples(st.sampled_from([f"p{i}" for i in range(n_projects)]),
                    st.sampled_from(FLAVORS))
    return st.lists(st.tuples(key, st.integers(0, 12).map(lambda x: x * 1000)), max_size=12)


# -- quota ledger -------------------------------------------------------------------------------
def reference_check(ledger: QuotaLedger, project: str, flavor: str, units: int) -> QuotaCheck:
    """``QuotaLedger.check`` as it was before its per-tree constants (the reference)."""
    quotas = ledger.quotas
    p = quotas.project(project)
    q = p.quota(flavor)
    after = ledger.used(project, flavor) + units
    ceiling = quotas.ceiling(project, flavor)
    pool_free = ledger.pool_free(p.cohort, flavor)
    if not quotas.enforce:
        return QuotaCheck(QuotaFit.GUARANTEED, after, q.guaranteed, None, pool_free)
    if ceiling is not None and after > ceiling:
        return QuotaCheck(QuotaFit.OVER_LIMIT, after, q.guaranteed, ceiling, pool_free)
    if p.cohort is None:
        return QuotaCheck(QuotaFit.GUARANTEED, after, q.guaranteed, ceiling, pool_free)
    private = q.guaranteed - q.lendable()
    before_draw = max(0, after - units - private)
    extra = max(0, after - private) - before_draw
    if extra <= pool_free:
        fit = QuotaFit.GUARANTEED if after <= q.guaranteed else QuotaFit.BORROWING
        return QuotaCheck(fit, after, q.guaranteed, ceiling, pool_free, draw=extra)
    if after <= q.guaranteed:
        return QuotaCheck(QuotaFit.RECLAIM, after, q.guaranteed, ceiling, pool_free,
                          reclaim=extra - pool_free, draw=extra)
    return QuotaCheck(QuotaFit.COHORT_FULL, after, q.guaranteed, ceiling, pool_free, draw=extra)


def reference_pools(quotas: QuotaTree) -> dict:
    return {(c, f): sum(quotas.project(m).quota(f).lendable() for m in members)
            for c, members in quotas.cohorts.items() for f in quotas.flavors}


@SETTINGS
@given(projects(), usages(), st.lists(st.tuples(st.integers(0, 5), st.sampled_from(FLAVORS),
                                             st.integers(0, 12)), min_size=1, max_size=10),
       st.booleans())
def test_ledger_load_check_and_must_borrow_match_the_reference(ps, usage, asks, enforce):
    quotas = QuotaTree(ps, enforce=enforce)
    bulk, one_by_one = QuotaLedger(quotas), QuotaLedger(quotas)
    bulk.load(sorted(dict(usage).items()))
    for (project, flavor), units in sorted(dict(usage).items()):
        one_by_one.add(project, flavor, units)
    assert bulk.usage == one_by_one.usage and bulk._draw == one_by_one._draw
    assert bulk._borrowed == one_by_one._borrowed and bulk._pool == reference_pools(quotas)
    for i, flavor, n in asks:
        project, units = f"p{i}", n * 1000
        chk = bulk.check(project, flavor, units)
        assert chk == reference_check(bulk, project, flavor, units)
        # cycle._borrows: "within guarantee" is exactly GUARANTEED or RECLAIM
        assert bulk.within_guarantee(project, flavor, units) == (
            chk.fit in (QuotaFit.GUARANTEED, QuotaFit.RECLAIM))


# -- fair share ---------------------------------------------------------------------------------
def reference_share(v, capacity, weight) -> float:
    best = 0.0
    for x, c in zip(v, capacity):
        if c > 0:
            s = x / c
            if s > best:
                best = s
    return best / weight


floats = st.floats(-1e3, 1e7, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(st.tuples(floats, floats, floats), st.tuples(*[st.sampled_from([0.0, 1.0, 7.0, 3e5])] * 3),
       st.sampled_from([0.5, 1.0, 3.0]))
def test_unrolled_dominant_share_equals_the_loop(v, capacity, weight):
    got, want = dominant_share(v, capacity, weight), reference_share(v, capacity, weight)
    assert got == want and math.copysign(1.0, got) == math.copysign(1.0, want)


def reference_advance(h: UsageHistory, now: float, holding: dict) -> None:
    dt = 0.0 if h.at is None else max(0.0, now - h.at)
    h.at = now if h.at is None else max(h.at, now)
    if dt == 0.0:
        return
    keep = math.pow(0.5, dt / h.half_life_s)
    for p in sorted(set(h.level) | set(holding)):
        old, cur = h.level.get(p, (0.0, 0.0, 0.0)), holding.get(p, (0.0, 0.0, 0.0))
        h.level[p] = tuple(o * keep + c * (1 - keep) for o, c in zip(old, cur))


@SETTINGS
@given(st.lists(st.tuples(st.floats(0, 5e4), st.dictionaries(
    st.sampled_from(["a", "b", "c"]), st.tuples(floats, floats, floats), max_size=3)),
    max_size=8))
def test_in_place_decay_and_bulk_charges_match_the_reference(steps):
    fast, ref = UsageHistory(3600.0), UsageHistory(3600.0)
    t = 0.0
    for dt, holding in steps:
        t += dt
        fast.advance(t, holding)
        reference_advance(ref, t, holding)
        assert fast.level == ref.level and fast.at == ref.at
    cap = (8000.0, 1e5, 1e6)
    maps = ({"a": 1.0, "b": 2.0}, {"a": "x", "b": "x"}, {"x": 1.0})
    bulk, each = ShareBook(cap, *maps), ShareBook(cap, *maps)
    bulk.charge_all(fast.level.items())
    for p, v in fast.level.items():
        each.charge(p, v)
    assert bulk.project_vec == each.project_vec and bulk.org_vec == each.org_vec
    for p in ("a", "b", "c"):
        assert bulk.project_share(p) == each.key(p)[1]


# -- capacity: the pre-check of a backfill trial ---------------------------------------------------
@SETTINGS
@given(st.lists(st.integers(1, 4), max_size=14),
       st.lists(st.tuples(st.integers(0, 5), st.integers(1, 8)), max_size=4),
       st.lists(st.sampled_from([1, 2, 3, 4, 6, 8]), min_size=1, max_size=3))
def test_may_fit_without_holds_equals_lifting_them(busy, holds, gang):
    snap = ClusterSnapshot.build(team_hosts("h", 44, 8))       # five of 8 GPUs, one of 4
    prof = profiles.get("bestfit")
    for g in busy:
        p = place(snap, TaskRequest(0, 0, gpus=g), prof, None)
        if isinstance(p, Placement):
            snap.assign(TaskRequest(0, 0, gpus=g), p)
    cap = CycleCapacity(snap, place, prof, None)
    for h, g in holds:
        name = snap.names[h]
        cap.hold(name, cap.free_gpu_indices(name)[:g])
    tasks = [TaskRequest(0, 0, gpus=g) for g in gang]
    predicted = cap.may_fit(tasks, without_holds=True)
    held = cap.lift_holds()
    assert predicted == cap.may_fit(tasks)
    cap.restore_holds(held)



# -- running ends ---------------------------------------------------------------------------------
def test_running_ends_are_the_sorted_whole_gpu_tasks_with_an_end():
    def rt(i, host, gpus, end, milli=1000):
        return RunningTask(f"w{i}/0", f"w{i}", "p", TaskRequest(0, 0, gpus=gpus, gpu_milli=milli),
                           Placement(host, tuple(range(gpus)), milli), expected_end=end)
    running = [rt(1, "b", 2, 50.0), rt(2, "a", 1, 50.0), rt(3, "a", 4, None),
               rt(4, "c", 1, 10.0, milli=500), rt(5, "c", 8, 5.0)]
    assert running_ends(running) == [(5.0, "c", 8, "w5"), (50.0, "a", 1, "w2"),
                                     (50.0, "b", 2, "w1")]
    assert [is_whole(t.task) for t in running] == [True, True, True, False, True]
