"""Property tests: guarantees are delivered under sustained overload, without churn (hypothesis).

Mixed preemptible and non-preemptible work, more than the pool can hold, over many cycles of
``run_cycle`` with arrivals and completions in between (as the control loop applies decisions).
After every cycle:

- no GPU is allocated twice (the snapshot never goes negative) and gangs are whole;
- work that is not preemptible never borrows: it is never admitted as borrowing and a project's
  non-preemptible work never holds more than the project's guarantee;
- every project gets its guarantee: no project still waits with work that fits in what is left of
  its guarantee (gangs of 1-GPU tasks, guarantees that add up to the pool: no fragmentation
  excuse), i.e. each holds at least min(demand, guarantee) up to the granularity of its jobs;
- no churn: a workload reclaimed from a borrower, admitted again as a borrower, is not reclaimed
  again unless something changed (an arrival or a completion) after its re-admission.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuplane.domain.requests import TaskRequest
from gpuplane.domain.tenancy import FlavorQuota, Project, QuotaTree
from gpuplane.scheduling.admission.quota import QuotaLedger
from gpuplane.scheduling.cycle import CycleOptions, run_cycle
from gpuplane.scheduling.placement import profiles
from gpuplane.scheduling.queueing import PendingWorkload, RunningTask, task_units
from gpuplane.scheduling.snapshot import ClusterSnapshot
from gpuplane.sim.sharing import team_hosts

BESTFIT = profiles.get("bestfit")
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
ONE = TaskRequest(cpu_milli=0, memory_mib=0, gpus=1)


class World:
    """Applies each cycle's decisions at once: victims stop, admitted work starts."""

    def __init__(self, hosts: int, quotas: QuotaTree, explain_all: bool) -> None:
        self.snap = ClusterSnapshot.build(team_hosts("h", hosts * 8, 8))
        self.quotas = quotas
        self.options = CycleOptions(profile=BESTFIT, explain_all=explain_all)
        self.pending: dict[str, PendingWorkload] = {}
        self.running: dict[str, RunningTask] = {}
        self.version = 0                         # bumped by every arrival and completion
        self.readmitted: dict[str, int] = {}     # reclaimed workload -> version at re-admission
        self.reclaimed: set[str] = set()

    def submit(self, w: PendingWorkload) -> None:
        self.pending[w.id] = w
        self.version += 1

    def finish(self, wid: str) -> None:
        for tid in [t for t, r in self.running.items() if r.workload_id == wid]:
            r = self.running.pop(tid)
            self.snap.release(r.task, r.placement)
        self.version += 1

    def cycle(self, now: float) -> None:
        before = self.usage()
        res = run_cycle(self.snap, list(self.pending.values()), list(self.running.values()),
                        self.quotas, now, np.random.default_rng(3), options=self.options)
        assert (self.snap.gpu_free >= 0).all(), "a GPU is allocated beyond its capacity"
        for p in res.preemptions:
            r = self.running.pop(p.task_id)
            if p.code == "preempt.reclaim":
                assert r.preemptible
                g = self.quotas.project(r.project).quota("gpu").guaranteed
                assert before.get(r.project, 0) > g, "reclaimed from a project within guarantee"
                seen = self.readmitted.pop(r.workload_id, None)
                assert seen is None or seen < self.version, (
                    f"{r.workload_id} reclaimed again with nothing changed since re-admission")
                self.reclaimed.add(r.workload_id)
        back = {p.workload_id for p in res.preemptions}
        for a in res.placements:
            w = self.pending.pop(a.workload_id)
            assert len(a.placements) == len(w.tasks), "gang not whole"
            assert w.preemptible or not a.borrowing, "non-preemptible work borrows"
            if a.borrowing and w.id in self.reclaimed:
                self.readmitted[w.id] = self.version
            for k, (t, pl) in enumerate(zip(w.tasks, a.placements)):
                self.running[f"{w.id}/{k}"] = RunningTask(
                    f"{w.id}/{k}", w.id, w.project, t, pl, now, w.priority,
                    preemptible=w.preemptible, borrowed=a.borrowing)
        self._check(res, back)
        for wid in back:                      # victims queue again (checked from next cycle)
            self.pending[wid] = self.original[wid]

    def _check(self, res, back: set[str]) -> None:
        use = self.usage()
        led = QuotaLedger.of(self.quotas, [(p, "gpu", u) for p, u in use.items()])
        assert led.violations() == []
        fixed: dict[str, int] = {}
        for r in self.running.values():
            if not r.preemptible:
                fixed[r.project] = fixed.get(r.project, 0) + task_units(r.task)
        for p, units in fixed.items():
            assert units <= self.quotas.project(p).quota("gpu").guaranteed, \
                f"{p}: non-preemptible work holds more than the guarantee"
        for w in self.pending.values():
            g = self.quotas.project(w.project).quota("gpu").guaranteed
            assert use.get(w.project, 0) + 1000 * len(w.tasks) > g, (
                f"{w.id} of {w.project} waits although it fits in the guarantee "
                f"({use.get(w.project, 0)} of {g} held): "
                f"{res.reason_for(w.id, w.project)}")
            assert res.reason_for(w.id, w.project) is not None, f"{w.id} has no reason"

    def usage(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.running.values():
            out[r.project] = out.get(r.project, 0) + task_units(r.task)
        return out


def tree(guarantees: list[int], limits: list[int | None]) -> QuotaTree:
    return QuotaTree([Project(f"p{i}", cohort="c", quotas={"gpu": FlavorQuota(
        g * 1000, None if b is None else b * 1000)}) for i, (g, b) in enumerate(zip(guarantees,
                                                                                    limits))])


# (project, gang size, preemptible, priority, completions, quiet cycles after)
steps = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 8), st.booleans(),
                           st.integers(0, 1), st.integers(0, 2), st.integers(0, 2)),
                 min_size=10, max_size=30)


@SETTINGS
@given(hosts=st.integers(1, 2), shares=st.lists(st.integers(0, 6), min_size=2, max_size=4),
       limits=st.lists(st.one_of(st.none(), st.integers(0, 16)), min_size=4, max_size=4),
       plan=steps, explain_all=st.booleans(), burst=st.integers(1, 3))
def test_guarantees_delivered_under_overload_without_churn(hosts, shares, limits, plan,
                                                           explain_all, burst):
    cap = hosts * 8
    total = sum(shares) or 1
    gs = [s * cap // total for s in shares]
    gs[0] += cap - sum(gs)                         # guarantees add up to the pool exactly
    w = World(hosts, tree(gs, limits[: len(gs)]), explain_all)
    w.original = {}
    now, k = 0.0, 0
    for i, (p, n, pre, prio, done, quiet) in enumerate(plan):
        for b in range(burst):                     # sustained overload: more than completes
            wl = PendingWorkload(f"w{k}", f"p{(p + b) % len(gs)}", (ONE,) * n, priority=prio,
                                 submitted_at=now, preemptible=pre if b == 0 else not pre)
            w.original[wl.id] = wl
            w.submit(wl)
            k += 1
        for wid in sorted({r.workload_id for r in w.running.values()})[:done]:
            w.finish(wid)
        for _ in range(1 + quiet):
            now += 1.0
            w.cycle(now)


@SETTINGS
@given(hosts=st.integers(1, 2), shares=st.lists(st.integers(1, 4), min_size=2, max_size=3),
       sizes=st.lists(st.integers(1, 8), min_size=4, max_size=20))
def test_a_borrowing_head_never_keeps_guaranteed_work_of_its_project_waiting(hosts, shares,
                                                                           sizes):
    cap = hosts * 8
    gs = [s * cap // sum(shares) for s in shares]
    gs[0] += cap - sum(gs)
    w = World(hosts, tree(gs, [None] * len(gs)), explain_all=False)
    w.original = {}
    big = PendingWorkload("big", "p0", (ONE,) * (gs[0] + 1), submitted_at=-1.0)
    w.original["big"] = big
    w.submit(big)                                  # oldest, and it can only start by borrowing
    for i, n in enumerate(sizes):
        x = PendingWorkload(f"w{i}", f"p{i % len(gs)}", (ONE,) * n, submitted_at=float(i),
                            preemptible=bool(i % 2))
        w.original[x.id] = x
        w.submit(x)
    for t in range(3):
        w.cycle(float(t))
