"""Property tests of the scheduling cycle over random multi-tenant histories (hypothesis).

- DESIGN invariant 3: after every cycle no project holds more than guaranteed + borrowing limit,
  and a cohort never lends more than its members' lendable guarantees.
- Lent capacity is reclaimed within one cycle: with 1-GPU work, guarantees that fit the cluster and
  preemption on, every project with waiting work holds at least its guarantee after each cycle.
- Gangs are placed whole; the same inputs give the same decisions; no preemption ping-pong and
  preemptions die out when nothing changes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuplane.domain.tenancy import FlavorQuota, Project, QuotaTree
from gpuplane.scheduling.admission.quota import QuotaLedger
from gpuplane.scheduling.cycle import CycleOptions, run_cycle
from gpuplane.scheduling.placement import profiles
from gpuplane.scheduling.queueing import PendingWorkload, RunningTask, task_units
from gpuplane.scheduling.snapshot import ClusterSnapshot
from gpuplane.sim.sharing import gang_tasks, team_hosts

BESTFIT = profiles.get("bestfit")
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


class World:
    """Applies cycle decisions like the control loop: preempted tasks stop, admitted start."""

    def __init__(self, hosts: int, quotas: QuotaTree, options: CycleOptions) -> None:
        self.snap = ClusterSnapshot.build(team_hosts("h", hosts * 8, 8))
        self.quotas = quotas
        self.options = options
        self.pending: dict[str, PendingWorkload] = {}
        self.specs: dict[str, PendingWorkload] = {}
        self.running: dict[str, RunningTask] = {}
        self.log: list = []
        self.pairs: set[tuple[str, str]] = set()

    def submit(self, w: PendingWorkload) -> None:
        self.pending[w.id] = w
        self.specs[w.id] = w

    def finish(self, wid: str) -> None:
        for tid in [t for t, r in self.running.items() if r.workload_id == wid]:
            r = self.running.pop(tid)
            self.snap.release(r.task, r.placement)

    def cycle(self, now: float) -> object:
        before = self.usage()
        res = run_cycle(self.snap, list(self.pending.values()), list(self.running.values()),
                        self.quotas, now, np.random.default_rng(7), options=self.options)
        for p in res.preemptions:
            r = self.running.pop(p.task_id)
            self.pending[r.workload_id] = self.specs[r.workload_id]
            assert (p.beneficiary, p.workload_id) not in self.pairs, "preemption ping-pong"
            self.pairs.add((p.workload_id, p.beneficiary))
            benef = self.specs[p.beneficiary]
            if p.code == "preempt.reclaim":    # only borrowers give back, only to other projects
                g = self.quotas.project(r.project).quota("gpu").guaranteed
                assert before.get(r.project, 0) > g and benef.project != r.project
            else:                              # priority: same project, strictly lower priority
                assert benef.project == r.project and benef.priority > r.priority
        for a in res.placements:
            w = self.pending.pop(a.workload_id)
            assert len(a.placements) == len(w.tasks), "gang not whole"
            for k, (t, pl) in enumerate(zip(w.tasks, a.placements)):
                self.running[f"{w.id}/{k}"] = RunningTask(f"{w.id}/{k}", w.id, w.project, t, pl,
                                                          now, w.priority, borrowed=a.borrowing)
        self.log.append(([(a.workload_id, a.placements) for a in res.placements],
                         [(p.task_id, p.beneficiary) for p in res.preemptions]))
        return res

    def usage(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.running.values():
            out[r.project] = out.get(r.project, 0) + task_units(r.task)
        return out

    def check_quota_invariant(self) -> None:
        led = QuotaLedger.of(self.quotas, [(p, "gpu", u) for p, u in self.usage().items()])
        assert led.violations() == []


def tree(guarantees, borrow_limits, cohort="c"):
    return QuotaTree([Project(f"p{i}", cohort=cohort,
                              quotas={"gpu": FlavorQuota(g * 1000, b if b is None else b * 1000)})
                      for i, (g, b) in enumerate(zip(guarantees, borrow_limits))])


steps = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 12), st.integers(0, 1),
                           st.integers(0, 2)), min_size=5, max_size=40)


@SETTINGS
@given(hosts=st.integers(1, 3), gs=st.lists(st.integers(0, 12), min_size=2, max_size=4),
       limits=st.lists(st.one_of(st.none(), st.integers(0, 8)), min_size=4, max_size=4),
       plan=steps)
def test_quota_invariant_and_whole_gangs_after_every_cycle(hosts, gs, limits, plan):
    w = World(hosts, tree(gs, limits[: len(gs)]), CycleOptions(profile=BESTFIT))
    for i, (p, n, prio, done) in enumerate(plan):
        project = f"p{p % len(gs)}"
        w.submit(PendingWorkload(f"w{i}", project, gang_tasks(n, 8), priority=prio,
                                 submitted_at=float(i), expected_duration=float(10 + n)))
        for wid in sorted({r.workload_id for r in w.running.values()})[:done]:
            w.finish(wid)
        w.cycle(float(i))
        w.check_quota_invariant()


@SETTINGS
@given(hosts=st.integers(1, 3), shares=st.lists(st.integers(0, 8), min_size=2, max_size=4),
       plan=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 6), st.integers(0, 3)),
                     min_size=5, max_size=30))
def test_owner_gets_its_lent_guarantee_back_within_one_cycle(hosts, shares, plan):
    cap = hosts * 8
    total = sum(shares) or 1
    gs = [s * cap // total for s in shares]            # guarantees fit the cluster
    w = World(hosts, tree(gs, [None] * len(gs)), CycleOptions(profile=BESTFIT))
    k = 0
    for i, (p, burst, done) in enumerate(plan):
        project = f"p{p % len(gs)}"
        for _ in range(burst):
            w.submit(PendingWorkload(f"w{k}", project, gang_tasks(1, 8), submitted_at=float(i)))
            k += 1
        for wid in sorted({r.workload_id for r in w.running.values()})[:done]:
            w.finish(wid)
        w.cycle(float(i))
        use = w.usage()
        waiting = {x.project for x in w.pending.values()}
        for j, g in enumerate(gs):
            if f"p{j}" in waiting:
                assert use.get(f"p{j}", 0) >= g * 1000, f"p{j} waits below its guarantee"


@SETTINGS
@given(hosts=st.integers(1, 3), gs=st.lists(st.integers(0, 12), min_size=2, max_size=3),
       plan=steps)
def test_same_inputs_same_decisions(hosts, gs, plan):
    def run():
        w = World(hosts, tree(gs, [None] * len(gs)), CycleOptions(profile=BESTFIT))
        for i, (p, n, prio, done) in enumerate(plan):
            w.submit(PendingWorkload(f"w{i}", f"p{p % len(gs)}", gang_tasks(n, 8), priority=prio,
                                     submitted_at=float(i), expected_duration=5.0))
            for wid in sorted({r.workload_id for r in w.running.values()})[:done]:
                w.finish(wid)
            w.cycle(float(i))
        return w.log
    assert run() == run()


@SETTINGS
@given(hosts=st.integers(1, 2), gs=st.lists(st.integers(0, 8), min_size=2, max_size=3),
       plan=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 8), st.integers(0, 2)),
                     min_size=3, max_size=25))
def test_preemptions_die_out_when_nothing_changes(hosts, gs, plan):
    w = World(hosts, tree(gs, [None] * len(gs)), CycleOptions(profile=BESTFIT))
    for i, (p, n, prio) in enumerate(plan):
        w.submit(PendingWorkload(f"w{i}", f"p{p % len(gs)}", gang_tasks(n, 8), priority=prio,
                                 submitted_at=float(i)))
        w.cycle(float(i))
    start = len(w.log)
    for t in range(12):
        w.cycle(100.0 + t)
    assert all(not pre for _, pre in w.log[start + 4:]), "preemptions keep going"


@pytest.mark.slow
def test_no_preemption_loop_over_10000_random_cycles():
    """Epochs of one changing cycle (arrivals, completions) then two unchanged ones: inside an
    epoch no preemption is ever reversed, and every preemption is justified."""
    rng = np.random.default_rng(2024)
    w = World(3, tree([8, 8, 4, 4], [None, 4, None, 2]), CycleOptions(profile=BESTFIT))
    k = 0
    for i in range(10_000):
        if i % 3 == 0:
            w.pairs = set()
            for _ in range(int(rng.integers(0, 3))):
                n = int(rng.choice([1, 1, 1, 2, 4, 8, 12]))
                w.submit(PendingWorkload(f"w{k}", f"p{rng.integers(4)}", gang_tasks(n, 8),
                                         priority=int(rng.integers(0, 2)), submitted_at=float(i),
                                         expected_duration=float(rng.integers(1, 50))))
                k += 1
            for wid in sorted({r.workload_id for r in w.running.values()}):
                if rng.random() < 0.35:
                    w.finish(wid)
        w.cycle(float(i))
        w.check_quota_invariant()
    assert sum(len(pre) for _, pre in w.log) > 0    # the run did exercise preemption
