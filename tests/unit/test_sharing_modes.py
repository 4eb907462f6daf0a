"""Honest simulators: the five sharing modes, run-time knowledge, same-jobs accounting,
cycle skipping and incremental totals, the pool-size search and the trace generator."""

import json

import pytest
from typer.testing import CliRunner

import gpuplane.sim.replay as replay_mod
from gpuplane.cli.main import _register, app
from gpuplane.domain.tenancy import FlavorQuota, Project, QuotaTree
from gpuplane.scheduling.admission.state import borrowed_on, running_ends, running_totals
from gpuplane.sim.replay import ReplayConfig, SimJob, replay
from gpuplane.sim.runtime import requested_limits
from gpuplane.sim.sharing import (
    MODES, compare, gang_tasks, mode_config, pool_quotas, prepare, resize, run_all, run_mode,
    team_hosts)
from gpuplane.sim.sharing_search import find_min_gpus
from gpuplane.sim.tracegen import generate, write
from gpuplane.sim.traces import TeamQuota, TraceJob


def contended():
    """Team a floods its 4 GPUs and more; team b submits a few jobs; one 8-GPU job of a."""
    out = [TraceJob(f"a{i}", "a", i * 5.0, 1800.0 + 60 * i, 1) for i in range(10)]
    out += [TraceJob("a-big", "a", 60.0, 600.0, 8)]
    out += [TraceJob(f"a-s{i}", "a", 70.0 + i, 300.0, 1) for i in range(3)]
    out += [TraceJob(f"b{i}", "b", 900.0 + 30 * i, 1200.0, 2) for i in range(4)]
    return out


def setup_ab(**kw):
    return prepare(contended(), [TeamQuota("a", 4), TeamQuota("b", 4)], **kw)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_runs_the_same_jobs(mode):
    r = run_mode(mode, setup_ab(), mode_config(mode, grace_s=0.0))
    assert sum(t["jobs"] for t in r["teams"].values()) == len(contended())
    assert r["runtime_knowledge"] == "requested"


@pytest.mark.parametrize("mode", ["drf", "gpuplane"])
def test_fair_share_weights_are_team_sizes(mode):
    """Two teams flood a pool of 8 GPUs with equal one-GPU jobs; the team that brought 6 GPUs
    is served three times what the team that brought 2 is over the first hour (equal weights
    would split it 4:4 in drf)."""
    jobs = [TraceJob(f"{t}{i}", t, 0.0, 3600.0, 1) for t in "ab" for i in range(24)]
    s = prepare(jobs, [TeamQuota("a", 6), TeamQuota("b", 2)], start=0.0, end=3600.0)
    tree = pool_quotas(mode, s.teams)
    assert (tree.project("a").weight, tree.project("b").weight) == (6.0, 2.0)
    r = run_mode(mode, s, mode_config(mode, runtime_knowledge="oracle"))
    hours = {t: r["teams"][t]["gpu_hours_allocated"] for t in "ab"}
    assert hours == pytest.approx({"a": 6.0, "b": 2.0})


def test_fifo_plus_backfill_lets_short_work_pass_a_blocked_head_and_fifo_does_not():
    jobs = [TraceJob("long", "a", 0.0, 1000.0, 4), TraceJob("big", "a", 10.0, 100.0, 8),
            TraceJob("short", "b", 20.0, 100.0, 2)]
    s = prepare(jobs, [TeamQuota("a", 4), TeamQuota("b", 4)], gpus_per_host=4)
    waits = {}
    for mode in ("fifo", "fifo+backfill"):
        for k in ("oracle", "requested", "none"):
            r = run_mode(mode, s, mode_config(mode, runtime_knowledge=k))
            waits[mode, k] = r["teams"]["b"]["p95_wait_s"]
    assert waits["fifo", "oracle"] >= 1000.0          # behind big, which waits for long
    assert waits["fifo+backfill", "oracle"] < 60.0    # ends before big's shadow time
    assert waits["fifo+backfill", "none"] < 60.0      # no reservation at all: greedy


def test_requested_limits_are_deterministic_inflated_and_never_below_the_run_time():
    d = [10.0, 3600.0, 86400.0] * 100
    a, b = requested_limits(d, seed=3), requested_limits(d, seed=3)
    assert a == b and a != requested_limits(d, seed=4)
    assert all(lim >= x for lim, x in zip(a, d))
    assert all(lim <= max(60.0, x * 20 + 60) for lim, x in zip(a, d))
    ratio = sum(lim / x for lim, x in zip(a, d) if x >= 3600) / 200
    assert 2.0 < ratio < 4.5          # mean inflation ~ ln(20) / 0.95 = 3.2


def test_runtime_knowledge_is_what_backfill_sees(monkeypatch):
    seen = {}
    real = replay_mod.run_cycle

    def spy(snap, queues, running, *a, **k):
        for w in queues.all().values():
            seen.setdefault(k["options"].backfill, {})[w.id] = w.expected_duration
        return real(snap, queues, running, *a, **k)

    monkeypatch.setattr(replay_mod, "run_cycle", spy)
    hosts = team_hosts("h", 2, 8)
    q = QuotaTree([Project("a")], enforce=False)
    js = [SimJob(f"j{i}", "a", 0.0, 100.0, gang_tasks(2, 8), limit=400.0) for i in range(2)]
    out = {}
    for k in ("oracle", "requested", "none"):
        seen.clear()
        replay(js, hosts, q, ReplayConfig(runtime_knowledge=k, cycle_s=10.0))
        out[k] = seen[True]["j1"]
    assert out == {"oracle": 100.0, "requested": 400.0, "none": None}


def test_a_victim_returns_to_its_queue_when_its_grace_period_is_over(monkeypatch):
    """As in the live loop, where a task cannot start again before its previous attempt has
    stopped: a GPU that frees during the victim's grace period does not restart it."""
    log = []
    real = replay_mod.run_cycle

    def spy(snap, queues, running, quotas, now, *a, **k):
        res = real(snap, queues, running, quotas, now, *a, **k)
        log.append((now, {p.workload_id for p in res.preemptions},
                    {x.workload_id for x in res.placements}))
        return res

    monkeypatch.setattr(replay_mod, "run_cycle", spy)
    # a borrows b's host; b reclaims it whole at 100; c's only GPU frees at 105
    hosts = team_hosts("a", 4, 4) + team_hosts("b", 4, 4) + team_hosts("c", 1, 4)
    q = QuotaTree([Project(t, cohort="x", quotas={"gpu": FlavorQuota(g * 1000)})
                   for t, g in (("a", 4), ("b", 4), ("c", 1))])
    one = gang_tasks(1, 4)
    js = [SimJob("c0", "c", 0.0, 105.0, one)]
    js += [SimJob(f"a{i}", "a", 0.0, 9000.0, one) for i in range(8)]
    js.append(SimJob("b0", "b", 100.0, 1000.0, gang_tasks(4, 4)))
    replay(js, hosts, q, ReplayConfig(cycle_s=10.0, grace_s=30.0, runtime_knowledge="oracle"))
    signalled = {w: t for t, pre, _ in log for w in pre}
    assert len(signalled) == 4 and set(signalled.values()) == {100.0}
    again = {w: t for t, _, adm in log for w in adm if w in signalled and t > signalled[w]}
    assert min(again.values()) == 130.0     # not at 110, on the GPU c0 left at 105


def test_a_job_over_its_requested_limit_is_killed_at_the_limit():
    hosts = team_hosts("h", 8, 8)
    q = QuotaTree([Project("a")], enforce=False)
    js = [SimJob("j", "a", 0.0, 1000.0, gang_tasks(1, 8), limit=300.0)]
    r = replay(js, hosts, q, ReplayConfig(runtime_knowledge="requested"))
    assert r.killed == 1 and r.outcomes["j"].end == 300.0
    r = replay(js, hosts, q, ReplayConfig(runtime_knowledge="oracle"))
    assert r.killed == 0 and r.outcomes["j"].end == 1000.0


def test_unservable_jobs_count_as_waiting_to_the_end_of_the_window():
    s = setup_ab(start=0.0, end=10_000.0, gpus_per_host=4)
    ded = run_mode("dedicated", s, mode_config("dedicated"))
    pool = run_mode("fifo+backfill", s, mode_config("fifo+backfill"))
    assert ded["unservable_jobs"] == 1 and ded["teams"]["a"]["never_started"] == 1
    assert pool["unservable_jobs"] == 0 and pool["teams"]["a"]["never_started"] == 0
    # the 8-GPU job (submitted at 60 s) waits 10,000 - 60 s in dedicated: the max wait
    assert ded["teams"]["a"]["mean_wait_s"] >= (10_000.0 - 60.0) / 14


@pytest.mark.parametrize("mode", ["gpuplane", "fifo+backfill", "drf", "dedicated", "fifo"])
def test_skipping_idle_cycles_changes_no_decision(mode):
    jobs = [TraceJob(f"x{i}", "ab"[i % 2], i * 7.0, 500.0 + 37 * (i % 5), 1 + (i % 3))
            for i in range(60)]
    s = prepare(jobs, [TeamQuota("a", 4), TeamQuota("b", 4)])
    cfg = mode_config(mode)
    a = run_mode(mode, s, cfg)
    from dataclasses import replace
    b = run_mode(mode, s, replace(cfg, skip_idle=False))
    assert a["teams"] == b["teams"] and a["preemptions"] == b["preemptions"]
    assert a["cycles"] + a["skipped_cycles"] == b["cycles"]
    if mode != "dedicated":
        assert a["skipped_cycles"] > 0


def test_incremental_totals_equal_a_scan_of_the_running_tasks(monkeypatch):
    real = replay_mod.run_cycle
    checked = []

    def check(snap, queues, running, quotas, *a, totals=None, **k):
        ref = running_totals(running, quotas)
        assert {k2: v for k2, v in totals.usage.items() if v} == ref.usage
        assert {p: v for p, v in totals.holding.items() if any(v)} == ref.holding
        assert totals.low == ref.low
        assert totals.ends == running_ends(running)     # kept sorted by the simulator
        assert totals.lent == borrowed_on(running, quotas)
        checked.append(bool(totals.lent))
        return real(snap, queues, running, quotas, *a, totals=totals, **k)

    monkeypatch.setattr(replay_mod, "run_cycle", check)
    run_mode("gpuplane", setup_ab(), mode_config("gpuplane"))
    assert any(checked)                                  # some cycles saw borrowed work


@pytest.mark.parametrize("mode", MODES)
def test_the_placement_fast_path_changes_no_decision(mode, monkeypatch):
    import gpuplane.scheduling.placement as placement
    jobs = [TraceJob(f"x{i}", "ab"[i % 2], i * 11.0, 400.0 + 53 * (i % 7), (1, 2, 4, 8, 12)[i % 5])
            for i in range(80)]
    s = prepare(jobs, [TeamQuota("a", 12), TeamQuota("b", 8)])
    fast = run_mode(mode, s, mode_config(mode))
    general = placement.place

    def no_fast(*a, **k):
        return general(*a, **{**k, "fast": False})

    monkeypatch.setattr(placement, "place", no_fast)
    slow = run_mode(mode, s, mode_config(mode))
    fast.pop("seconds"), slow.pop("seconds")
    assert fast == slow


def test_resize_keeps_proportions_and_the_exact_total():
    s = prepare(contended(), [TeamQuota("a", 12), TeamQuota("b", 4)])
    r = resize(s, 10)
    assert r.owned_gpus == 10 and [t.gpus for t in r.teams] == [8, 2]


def test_find_min_gpus_on_a_tiny_trace():
    jobs = [TraceJob(f"a{i}", "a", i * 3600.0, 600.0, 1) for i in range(6)]
    jobs += [TraceJob(f"b{i}", "b", 1800.0 + i * 3600.0, 600.0, 1) for i in range(6)]
    s = prepare(jobs, [TeamQuota("a", 4), TeamQuota("b", 4)], gpus_per_host=2)
    cfg = {"runtime_knowledge": "oracle"}
    ded = run_mode("dedicated", s, mode_config("dedicated", **cfg))
    out = find_min_gpus("gpuplane", s, ded, cfg, resolution=1)
    assert out["found"] and out["min_gpus"] == 2      # a and b never overlap: one GPU each
    assert out["consolidation_factor"] == 4.0
    assert all(p["passes"] == (p["gpus"] >= 2) for p in out["probes"])


def test_run_all_in_two_processes_equals_one():
    s = setup_ab()
    seen = []
    one = run_all(s, ["fifo", "drf"], workers=1)
    two = run_all(s, ["fifo", "drf"], workers=2,
                  progress=lambda m: (lambda t, last: seen.append(m)))
    for m in ("fifo", "drf"):
        assert one["modes"][m]["teams"] == two["modes"][m]["teams"]
    assert set(seen) == {"fifo", "drf"}       # worker progress reaches the parent
    assert "per_mode" in compare(one["modes"])


def test_trace_generator_is_deterministic(tmp_path):
    a, b = generate(500, 4, 3.0, seed=1), generate(500, 4, 3.0, seed=1)
    assert a == b and a != generate(500, 4, 3.0, seed=2)
    assert len(a.jobs) == 500 and {t for _, _, _, t in a.jobs} <= {"t00", "t01", "t02", "t03"}
    assert all(g % 8 == 0 for _, g in a.quotas)
    write(a, tmp_path / "x")
    write(b, tmp_path / "y")
    assert (tmp_path / "x" / "jobs.csv").read_bytes() == (tmp_path / "y" / "jobs.csv").read_bytes()


def test_cli_trace_gen_and_sharing_flags(tmp_path):
    _register()
    runner = CliRunner()
    r = runner.invoke(app, ["sim", "trace-gen", "--out", str(tmp_path / "g"), "--jobs", "300",
                            "--tenants", "3", "--days", "2"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["synthetic"] and info["n_jobs"] == 300
    args = ["sim", "sharing", "--jobs", info["jobs"], "--quotas", info["quotas"], "--json",
            "--quiet", "--workers", "1", "--runtime-knowledge", "none", "--modes",
            "dedicated,fifo+backfill"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["runtime_knowledge"] == "none"
    assert doc["modes"]["fifo+backfill"]["runtime_knowledge"] == "none"
    for bad, field in ((["--runtime-knowledge", "psychic"], "--runtime-knowledge"),
                       (["--workers", "0"], "--workers"),
                       (["--find-min-gpus", "--find-min-modes", "dedicated"], "--find-min-modes"),
                       (["--trace-gen-typo"], "")):
        r = runner.invoke(app, args + bad)
        assert r.exit_code == 2 and field in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["sim", "trace-gen", "--out", str(tmp_path / "h"), "--jobs", "0"])
    assert r.exit_code == 2 and "jobs" in r.output


def test_daily_delivery_from_samples_exact():
    """Guarantee 4; samples every hour over two days (held just before each instant)."""
    from gpuplane.sim.sharing_report import _sample_step, daily_delivery, delivery_summary

    day = 86400.0
    jobs = [("a", 0.0, 2, 7200.0),        # demand 2 at t = 1 h, 2 h (submit < t <= end)
            ("a", 100.0, 4, None),        # never finishes: demand 4 from t = 1 h on
            ("b", day + 10.0, 1, day + 3600.0),
            ("x", 0.0, 8, None)]          # a tenant without a guarantee is ignored
    samples = [(3600.0, 2.0, {"a": 2.0}), (7200.0, 6.0, {"a": 6.0}),
               (day + 3600.0, 1.0, {"a": 4.0, "b": 1.0})]   # other instants: nothing held
    d = daily_delivery(jobs, {"a": 4, "b": 2}, samples, (0.0, 2 * day), 3600.0)
    # a: day 0 has 23 samples with demand >= 4 (due 4 each = 92), served 2 + 4 = 6;
    #    day 1 has 24 samples (due 96), served 4 (at 25 h)
    assert d == {"a": [(0, 6.0, 92.0), (1, 4.0, 96.0)], "b": [(1, 1.0, 1.0)]}
    s = delivery_summary(d, 0.0)
    assert s["team_days"] == 3 and s["team_days_below_target"] == 2
    assert s["min"] == pytest.approx(4.0 / 96.0)
    assert s["worst"] == {"team": "a", "day": 1, "date": "1970-01-02",
                          "served_gpu_hours": 4.0, "due_gpu_hours": 96.0}
    assert s["per_team"]["b"] == {"delivery_min": 1.0, "delivery_days": 1,
                                  "delivery_days_below": 0}
    # counted from the first 10 s cycle after submission, a job submitted 5 s before a sample
    # is not due at it; with the default it is
    late = [("a", 3595.0, 1, 3700.0)]
    assert daily_delivery(late, {"a": 4}, [], (0.0, day), 3600.0) == {"a": [(0, 0.0, 1.0)]}
    assert daily_delivery(late, {"a": 4}, [], (0.0, day), 3600.0, ready_s=10.0) == {"a": []}
    # a team-day with less than 1 GPU-hour due does not count
    assert delivery_summary({"c": [(0, 0.0, 0.5)]}, 0.0)["min"] is None
    # a window starting at 2.6 s (a trace's first submission), samples stepped by addition as
    # the replay steps them: the step read off them is 3600 s and every sample is found (the
    # step came out as 3599.99999999997 s and no sample matched a grid instant: nothing held)
    t, stepped = 2.6, []
    while t < 3 * day:
        stepped.append((t, 1.0, {"a": 1.0}))
        t += 3600.0
    step = _sample_step(stepped)
    assert step == 3600.0
    assert daily_delivery([("a", 0.0, 1, None)], {"a": 4}, stepped, (2.6, 3 * day + 2.6),
                          step) == {"a": [(k, 24.0, 24.0) for k in range(3)]}


def test_guarantee_delivery_in_the_report_of_a_fifo_pool():
    """b fills the 4-GPU pool for 3 h at t=0; a's 2-GPU job (its guarantee) waits until 3 h."""
    jobs = [TraceJob("b", "b", 0.0, 10800.0, 4), TraceJob("a", "a", 100.0, 3600.0, 2)]
    s = prepare(jobs, [TeamQuota("a", 2), TeamQuota("b", 2)], start=0.0, end=86400.0,
                gpus_per_host=2)
    r = run_mode("fifo", s, mode_config("fifo"))
    g = r["guarantee_delivery"]
    # a: due 2 at 1 h, 2 h, 3 h, 4 h; held only at 4 h (just before its end) -> 2 of 8
    # b: due min(4, 2) = 2 at 1 h, 2 h, 3 h, held 4 -> 6 of 6
    assert g["sample_s"] == 3600.0 and g["team_days"] == 2
    assert g["team_days_below_target"] == 1 and g["min"] == 0.25
    assert g["worst"]["team"] == "a" and g["worst"]["day"] == 0
    assert (g["worst"]["served_gpu_hours"], g["worst"]["due_gpu_hours"]) == (2.0, 8.0)
    assert r["teams"]["b"]["delivery_min"] == 1.0
    assert r["lost_pct_of_served"] == 0.0
