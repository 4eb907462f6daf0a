"""Lanes: borrowed work is placed apart from guaranteed work, so reclaim can free whole hosts."""

from gpuplane.domain.requests import Placement
from gpuplane.scheduling.admission import reasons as R
from gpuplane.scheduling.queueing import PendingWorkload, RunningTask
from tests.unit.test_sharing_cycle import Cluster, admitted, gpus, quotas

# p0 guaranteed nothing (all it runs is borrowed), p1 6 GPUs, p2 16, one cohort; 3 hosts of 8
QUOTAS = (0, 6, 16)


def wl(wid, project, n=2, at=0.0, tasks=None):
    return PendingWorkload(wid, project, tasks or (gpus(n),), submitted_at=at, preemptible=True)


def hosts_of(c, project):
    return sorted({r.placement.host for r in c.running.values() if r.project == project})


def fill(c, q, **opts):
    """p1 and p0 take turns; best fit alone would put g1 beside b0 (the fuller host) and b1
    beside g0."""
    for k, (wid, project, n) in enumerate((("g0", "p1", 4), ("b0", "p0", 6), ("g1", "p1", 2),
                                           ("b1", "p0", 2))):
        c.cycle([wl(wid, project, n, at=k)], q, now=10.0 * k, **opts)


def test_borrowed_and_guaranteed_work_keep_to_their_own_hosts():
    c, q = Cluster(hosts=3), quotas(*QUOTAS)
    fill(c, q)
    assert all(r.borrowed == (r.project == "p0") for r in c.running.values())
    assert hosts_of(c, "p1") == ["h-0"] and hosts_of(c, "p0") == ["h-1"]


def test_without_lanes_best_fit_mixes_them():
    c, q = Cluster(hosts=3), quotas(*QUOTAS)
    fill(c, q, lanes=False)
    assert hosts_of(c, "p1") == hosts_of(c, "p0") == ["h-0", "h-1"]


def test_a_guaranteed_gang_reclaims_a_whole_host_only_with_lanes():
    gang = PendingWorkload("big", "p2", (gpus(8), gpus(8)), submitted_at=50.0)
    c, q = Cluster(hosts=3), quotas(*QUOTAS)
    fill(c, q)
    res = c.cycle([gang], q, now=60.0)
    assert admitted(res) == ["big"]
    assert {(p.code, p.project) for p in res.preemptions} == {(R.RECLAIM, "p0")}
    assert {p.placement.host for p in c.running.values() if p.project == "p2"} == {"h-1", "h-2"}

    c, q = Cluster(hosts=3), quotas(*QUOTAS)
    fill(c, q, lanes=False)                      # p1's guaranteed work on both busy hosts
    res = c.cycle([gang], q, now=60.0, lanes=False)
    assert admitted(res) == [] and not res.preemptions


def test_an_empty_host_is_opened_only_when_no_host_in_use_has_room():
    c, q = Cluster(hosts=3), quotas(*QUOTAS)
    c.cycle([wl("g0", "p1", 2)], q)
    c.cycle([wl("b0", "p0", 2)], q, now=10.0)   # h-0 has room: packed there, as best fit does
    assert hosts_of(c, "p0") == hosts_of(c, "p1") == ["h-0"]


def test_work_marked_borrowed_of_a_project_back_within_its_guarantee_counts_as_guaranteed():
    def place_g(q):
        c = Cluster(hosts=3)
        for wid, project, host, n, borrowed in (("own", "p1", "h-0", 4, False),
                                                ("old", "p0", "h-1", 6, True)):
            where = Placement(host, tuple(range(n)), 1000)
            c.snap.assign(gpus(n), where)
            c.running[f"{wid}/0"] = RunningTask(f"{wid}/0", wid, project, gpus(n), where,
                                                borrowed=borrowed)
        return c.cycle([wl("g", "p1", 2)], q).placements[0].placements[0].host

    assert place_g(quotas(6, 6, 12)) == "h-1"   # p0 holds its guarantee: best fit, as for g
    assert place_g(quotas(4, 6, 14)) == "h-0"   # p0 above it: g keeps away from its work


def test_a_borrowing_gang_kept_on_one_host_goes_to_the_borrowed_host_too():
    gang = PendingWorkload("bg", "p0", (gpus(1), gpus(1)), submitted_at=20.0, topology="host")
    for lanes, host in ((True, "h-1"), (False, "h-0")):   # best fit alone: the fuller h-0
        c, q = Cluster(hosts=3), quotas(*QUOTAS)
        c.cycle([wl("g0", "p1", 6)], q, lanes=lanes)
        c.cycle([wl("b0", "p0", 4, at=1)], q, now=10.0, lanes=lanes)   # opens h-1
        res = c.cycle([gang], q, now=20.0, lanes=lanes)
        assert res.placements[0].borrowing
        assert {p.host for p in res.placements[0].placements} == {host}
