"""The scheduling cycle: admission, borrowing, reclaim, priority, gangs, backfill, reasons."""

import numpy as np
import pytest

from gpuplane.domain.requests import TaskRequest
from gpuplane.domain.tenancy import FlavorQuota, Project, QuotaTree
from gpuplane.scheduling.admission import reasons as R
from gpuplane.scheduling.cycle import CycleOptions, run_cycle
from gpuplane.scheduling.queueing import PendingWorkload, RunningTask
from gpuplane.scheduling.snapshot import ClusterSnapshot
from gpuplane.sim.sharing import gang_tasks, team_hosts


def gpus(n):
    return TaskRequest(cpu_milli=0, memory_mib=0, gpus=n)


def wl(wid, project, n=1, at=0.0, prio=0, dur=None, tasks=None):
    return PendingWorkload(wid, project, tasks or (gpus(n),), priority=prio, submitted_at=at,
                           expected_duration=dur)


def quotas(*gs, cohort="c", **kw):
    return QuotaTree([Project(f"p{i}", cohort=cohort, quotas={"gpu": FlavorQuota(g * 1000)})
                      for i, g in enumerate(gs)], **kw)


class Cluster:
    """A tiny cluster that applies cycle results, as the simulator does."""

    def __init__(self, hosts=2, per_host=8):
        self.hosts = team_hosts("h", hosts * per_host, per_host)
        self.snap = ClusterSnapshot.build(self.hosts)
        self.running: dict[str, RunningTask] = {}

    def cycle(self, pending, q, now=0.0, **opts):
        res = run_cycle(self.snap, pending, list(self.running.values()), q, now,
                        np.random.default_rng(0), options=CycleOptions(profile="bestfit", **opts))
        for p in res.preemptions:
            self.running.pop(p.task_id)
        by_id = {w.id: w for w in pending}
        for a in res.placements:
            w = by_id[a.workload_id]
            for k, (t, pl) in enumerate(zip(w.tasks, a.placements)):
                self.running[f"{w.id}/{k}"] = RunningTask(
                    f"{w.id}/{k}", w.id, w.project, t, pl, now, w.priority,
                    expected_end=None if w.expected_duration is None else now + w.expected_duration,
                    borrowed=a.borrowing)
        return res


def admitted(res):
    return [a.workload_id for a in res.placements]


def test_admits_within_guarantee_and_borrows_idle_capacity():
    c = Cluster()
    res = c.cycle([wl(f"a{i}", "p0", 4, at=i) for i in range(4)], quotas(8, 8))
    assert admitted(res) == ["a0", "a1", "a2", "a3"]
    assert [a.borrowing for a in res.placements] == [False, False, True, True]


def test_over_quota_without_cohort_is_explained():
    c = Cluster()
    res = c.cycle([wl("a0", "p0", 4), wl("a1", "p0", 4, at=1)], quotas(4, 8, cohort=None))
    assert admitted(res) == ["a0"]
    r = res.pending["a1"]
    assert r.code == R.OVER_QUOTA
    assert "over its ceiling of 4" in r.message


def test_owner_reclaims_lent_capacity_in_one_cycle_naming_the_beneficiary():
    c = Cluster()
    q = quotas(8, 8)
    c.cycle([wl(f"a{i}", "p0", 4, at=i) for i in range(4)], q)
    res = c.cycle([wl("b0", "p1", 8, at=10)], q, now=20.0)
    assert admitted(res) == ["b0"]
    assert {p.code for p in res.preemptions} == {R.RECLAIM}
    assert all(p.beneficiary == "b0" and p.project == "p0" for p in res.preemptions)
    assert len(res.preemptions) == 2                        # fewest victims: two 4-GPU borrowers
    assert set(res.placements[0].after) == {p.task_id for p in res.preemptions}


def test_no_reclaim_from_a_project_within_its_guarantee():
    c = Cluster()
    q = quotas(8, 8)
    c.cycle([wl("a0", "p0", 8), wl("b0", "p1", 8)], q)
    res = c.cycle([wl("b1", "p1", 4, at=5)], q, now=10.0)
    assert res.preemptions == []
    assert res.pending["b1"].code == R.COHORT_FULL


def test_higher_priority_preempts_lower_priority_of_the_same_project():
    c = Cluster(hosts=1)
    q = quotas(8, cohort=None)
    c.cycle([wl("lo", "p0", 8, prio=0)], q)
    res = c.cycle([wl("hi", "p0", 8, prio=10, at=1)], q, now=5.0)
    assert admitted(res) == ["hi"]
    assert [(p.workload_id, p.code) for p in res.preemptions] == [("lo", R.PRIORITY)]


def test_preemption_disabled_leaves_borrowers_running():
    c = Cluster()
    q = quotas(8, 8)
    c.cycle([wl(f"a{i}", "p0", 4, at=i) for i in range(4)], q)
    res = c.cycle([wl("b0", "p1", 8, at=10)], q, now=20.0, preemption=False)
    assert res.preemptions == [] and admitted(res) == []
    assert res.pending["b0"].code == R.WAITING_RECLAIM


def test_gang_is_placed_whole_or_not_at_all():
    c = Cluster(hosts=2)
    q = quotas(64, cohort=None)
    c.cycle([wl("small", "p0", 2)], q)
    big = wl("big", "p0", tasks=gang_tasks(16, 8), at=1)
    res = c.cycle([big], q, now=1.0)
    assert admitted(res) == []
    assert res.pending["big"].code in (R.NO_CAPACITY, R.RESERVED)
    assert sum(1 for t in c.running.values() if t.workload_id == "big") == 0
    fits = wl("fits", "p0", tasks=gang_tasks(12, 8), at=2)
    res = c.cycle([fits], q, now=2.0)
    assert len(res.placements[0].placements) == 2


def test_backfill_lets_short_work_pass_a_reservation_but_not_long_work():
    c = Cluster(hosts=1)
    q = quotas(64, cohort=None)
    c.cycle([wl("run", "p0", 6, dur=100.0)], q)
    pending = [wl("head", "p0", 8, at=1, dur=50.0), wl("long", "p0", 1, at=2, dur=500.0),
               wl("short", "p0", 1, at=3, dur=50.0)]
    res = c.cycle(pending, q, now=10.0)
    assert res.reservations == {"head": 100.0}
    assert admitted(res) == ["short"]
    assert res.pending["long"].code == R.RESERVED
    assert "head" in res.pending["long"].message


def test_strict_fifo_blocks_everything_behind_the_head():
    c = Cluster(hosts=1)
    q = quotas(8, 8, enforce=False)
    c.cycle([wl("run", "p0", 4)], q, strict_fifo=True)
    res = c.cycle([wl("head", "p0", 8, at=1), wl("next", "p1", 1, at=2)], q, now=1.0,
                  strict_fifo=True, fair_share=False, backfill=False)
    assert admitted(res) == []
    assert res.pending["next"].code == R.FIFO_BLOCKED


def test_fair_share_serves_the_project_with_the_smaller_dominant_share_first():
    c = Cluster(hosts=1)
    q = quotas(0, 0, 0, enforce=False)
    c.cycle([wl("a0", "p0", 4)], q)
    res = c.cycle([wl("a1", "p0", 4, at=1), wl("b0", "p1", 4, at=2)], q, now=1.0)
    assert admitted(res) == ["b0"]


def test_work_within_guarantee_goes_before_borrowing_work():
    c = Cluster(hosts=1)
    q = quotas(0, 4)
    res = c.cycle([wl("a0", "p0", 4, at=0), wl("a1", "p0", 4, at=1), wl("b0", "p1", 4, at=9)], q)
    assert admitted(res)[0] == "b0"


def test_every_pending_workload_gets_a_reason():
    c = Cluster(hosts=1)
    q = quotas(8, cohort=None)
    pending = [wl(f"a{i}", "p0", 8, at=i) for i in range(100)]
    res = c.cycle(pending, q)
    assert len(res.placements) == 1
    assert set(res.pending) == {w.id for w in pending[1:]}
    assert {r.code for r in res.pending.values()} <= {R.OVER_QUOTA, R.QUEUED}


@pytest.mark.parametrize("seed", [0, 1])
def test_same_inputs_same_decisions(seed):
    def once():
        c = Cluster(hosts=4)
        rng = np.random.default_rng(seed)
        q = quotas(8, 8, 16)
        pending = [wl(f"w{i}", f"p{rng.integers(3)}", int(rng.integers(1, 9)), at=float(i),
                      dur=float(rng.integers(10, 100))) for i in range(40)]
        res = c.cycle(pending, q)
        return [(a.workload_id, a.placements) for a in res.placements], sorted(
            (k, v.code) for k, v in res.pending.items())
    assert once() == once()


def test_run_cycle_leaves_the_snapshot_booked_with_its_decisions():
    c = Cluster(hosts=1)
    res = c.cycle([wl("a", "p0", 3)], quotas(8, cohort=None))
    assert admitted(res) == ["a"]
    assert int((c.snap.gpu_free == 1000).sum()) == 5


def test_a_failed_preemption_trial_leaves_the_snapshot_as_it_was():
    c = Cluster(hosts=2)
    q = quotas(12, 4)
    c.cycle([wl("a0", "p0", 4), wl("b0", "p1", 4, at=1), wl("b1", "p1", 8, at=2)], q)
    hosts = {w: r.placement.host for w, r in c.running.items()}
    assert hosts["a0/0"] == hosts["b0/0"] != hosts["b1/0"]
    r = c.running["b1/0"]                      # the 8-GPU borrower may not be preempted
    c.running["b1/0"] = RunningTask(r.id, r.workload_id, r.project, r.task, r.placement,
                                    preemptible=False)
    before = c.snap.copy()
    res = c.cycle([wl("a1", "p0", 8, at=3)], q, now=5.0)   # entitled: 4 + 8 <= 12
    assert admitted(res) == [] and res.preemptions == []
    assert res.pending["a1"].code == R.WAITING_RECLAIM
    assert c.snap.state_equal(before)          # the trial on b0 was rolled back


def test_preemption_reports_the_work_lost_since_the_last_checkpoint():
    c = Cluster(hosts=1)
    q = quotas(8, cohort=None)
    c.cycle([wl("lo", "p0", 8)], q)
    r = c.running["lo/0"]
    c.running["lo/0"] = RunningTask(r.id, r.workload_id, r.project, r.task, r.placement,
                                    started_at=0.0, checkpointed_at=90.0)
    res = c.cycle([wl("hi", "p0", 8, prio=5, at=1)], q, now=100.0)
    assert res.preemptions[0].lost_s == 10.0
    assert "higher-priority hi" in res.preemptions[0].message


def test_hierarchical_fair_share_serves_the_poorer_organisation_first():
    from gpuplane.domain.tenancy import Organisation

    c = Cluster(hosts=1)
    q = QuotaTree([Project("a1", organisation="A"), Project("a2", organisation="A"),
                   Project("b1", organisation="B")], [Organisation("A"), Organisation("B")],
                  enforce=False)
    c.cycle([wl("x", "a1", 4)], q)
    # a2 holds nothing, but its organisation A already holds 4 GPUs: B goes first.
    res = c.cycle([wl("y", "a2", 4, at=1), wl("z", "b1", 4, at=2)], q, now=1.0)
    assert admitted(res) == ["z"]


def test_a_gang_that_must_share_a_host_lands_on_one_host_or_waits():
    c = Cluster(hosts=2)
    q = quotas(64, cohort=None)
    c.cycle([wl("x", "p0", 4)], q)                    # h0 has 4 free, h1 has 8 free
    gang = PendingWorkload("g", "p0", gang_tasks(4, 8) + gang_tasks(4, 8), topology="host",
                           submitted_at=1.0)
    res = c.cycle([gang], q, now=1.0)
    pls = res.placements[0].placements
    assert len({p.host for p in pls}) == 1 and sorted(pls[0].gpu_indices + pls[1].gpu_indices) == \
        list(range(8))
    big = PendingWorkload("b", "p0", gang_tasks(4, 8) * 3, topology="host", submitted_at=2.0)
    res = c.cycle([big], q, now=2.0)
    assert res.placements == [] and "b" in res.pending
    loose = PendingWorkload("l", "p0", gang_tasks(2, 8) * 2, topology="host",
                            topology_required=False, submitted_at=3.0)
    assert [a.workload_id for a in c.cycle([loose], q, now=3.0).placements] == ["l"]


def test_a_victim_already_stopping_is_taken_before_another_that_would_lose_nothing():
    """The live loop re-decides while a victim runs out its grace period: the cycle must take
    that victim again, not a second one that just checkpointed (both lose nothing)."""
    c = Cluster()
    q = quotas(8, 8)
    c.cycle([wl(f"a{i}", "p0", 4, at=i) for i in range(4)], q)          # p0 borrows 8
    for k, r in list(c.running.items()):
        c.running[k] = RunningTask(r.id, r.workload_id, r.project, r.task, r.placement,
                                   started_at=0.0, checkpointed_at=100.0,
                                   stopping=r.workload_id == "a3")
    res = c.cycle([wl("b0", "p1", 4, at=50)], q, now=100.0)
    assert admitted(res) == ["b0"]
    assert [p.workload_id for p in res.preemptions] == ["a3"]
