"""What ``gpuplane sim sharing`` (mode ``gpuplane``) measures is what the live control loop does
(issue 11, the Philly half).

A small Philly slice -- 3 teams in one cohort at 1/20 of their quotas (22 GPUs), the jobs they
submitted on 2017-10-16 00:00-03:00 (70, one team borrowing past its guarantee and being
reclaimed: 16 preemptions) -- runs through the REAL ``ControlLoop`` (SQLite store, service
layer, a ``sim`` driver with the simulator's job model, one virtual clock) and through the
simulator; the harness is ``benchmarks/live_replay_philly.py`` (its ``main`` runs a larger
slice).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "philly"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (DATA / "philly_pollux.csv").is_file()
                                 or not (DATA / "philly_vc_quota.csv").is_file(),
                                 reason="Philly data not present")]


@pytest.fixture(scope="module")
def harness():
    return load_benchmark("live_replay_philly")


@pytest.fixture(scope="module")
def replayed(harness, tmp_path_factory):
    setup = harness.make_setup(DATA / "philly_pollux.csv", DATA / "philly_vc_quota.csv",
                               "2017-10-16T00:00:00", "2017-10-16T03:00:00", 0.05,
                               ["11cb48", "6c71a0", "ed69ec"])
    return setup, harness.run(setup, tmp_path_factory.mktemp("philly"))


def test_the_harness_simulates_what_sim_sharing_reports(harness, replayed):
    from gpuplane.sim.sharing import mode_config, run_mode

    setup, res = replayed
    ours = res["sim"]["report"]
    theirs = run_mode("gpuplane", setup, mode_config("gpuplane"))
    same = (set(ours) & set(theirs)) - {"seconds"}   # run_mode may add labels of its own
    assert {"teams", "preemptions", "allocation_mean", "cycles"} <= same
    assert {k: ours[k] for k in same} == {k: theirs[k] for k in same}
    # the slice exercises queueing, borrowing and reclaim
    assert ours["preemptions"] >= 5
    assert max(t["p95_wait_s"] for t in ours["teams"].values()) > 3600


def test_the_live_loop_admits_what_the_simulator_admits_when_it_does(replayed):
    setup, res = replayed
    c, live = res["comparison"], res["live"]
    assert live["errors"] == [] and live["failures"] == {}
    assert live["lease_acquired"] == 1 and live["lease_lost"] == 0
    assert c["admitted_same_set"] and c["started_ever_same_set"]
    assert c["all_teams_p95_within_10pct"], c["teams"]
    # on this slice the loop matches the simulator job for job
    assert c["same_first_start"] == c["jobs"], c["first_divergence"]
    assert c["preemptions_live"] == c["preemptions_sim"]
    assert abs(c["allocation_mean_live"] - c["allocation_mean_sim"]) < 0.5
