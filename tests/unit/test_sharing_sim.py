"""The dynamic simulator and the sprawl benchmark on small synthetic traces, and the CLI."""

import json

import pytest
from typer.testing import CliRunner

from gpuplane.cli.main import _register, app
from gpuplane.sim.replay import ReplayConfig, SimJob, replay
from gpuplane.sim.sharing import (
    compare, gang_tasks, mode_config, prepare, run_mode, servable, team_hosts)
from gpuplane.sim.traces import TeamQuota, TraceJob
from gpuplane.domain.tenancy import FlavorQuota, Project, QuotaTree
from gpuplane.scheduling.cycle import CycleOptions

DAY = 86400.0


def jobs():
    """Team a is busy (6 GPUs of work on a 4-GPU share), team b is idle then bursts."""
    out = [TraceJob(f"a{i}", "a", i * 10.0, 3600.0, 2) for i in range(6)]
    out += [TraceJob(f"b{i}", "b", 1800.0 + i, 600.0, 1) for i in range(4)]
    out += [TraceJob("big", "a", 100.0, 60.0, 16)]
    return out


def test_gang_tasks_split_evenly_over_hosts():
    assert [t.gpus for t in gang_tasks(12, 8)] == [6, 6]
    assert [t.gpus for t in gang_tasks(24, 8)] == [8, 8, 8]
    assert [t.gpus for t in gang_tasks(3, 8)] == [3]


def test_team_hosts_and_servable():
    hosts = team_hosts("t", 12, 8)
    assert [h.gpu_count for h in hosts] == [8, 4]
    job = SimJob("j", "t", 0, 1, gang_tasks(16, 8))
    assert not servable(job, hosts)
    assert not servable(SimJob("k", "t", 0, 1, gang_tasks(12, 8)), hosts)   # 6+6 on 8+4
    assert servable(SimJob("k", "t", 0, 1, gang_tasks(12, 8)), team_hosts("t", 16, 8))


def test_replay_runs_every_job_and_accounts_preemption_loss():
    hosts = team_hosts("h", 8, 8)
    q = QuotaTree([Project("a", cohort="c", quotas={"gpu": FlavorQuota(4000)}),
                   Project("b", cohort="c", quotas={"gpu": FlavorQuota(4000)})])
    js = [SimJob(f"a{i}", "a", 0.0, 1000.0, gang_tasks(2, 8)) for i in range(4)]
    js += [SimJob("b0", "b", 100.0, 50.0, gang_tasks(4, 8))]
    r = replay(js, hosts, q, ReplayConfig(CycleOptions(profile="bestfit"), cycle_s=10.0,
                                          checkpoint_s=None, grace_s=30.0))
    assert all(o.end is not None for o in r.outcomes.values())
    assert r.preemptions == 2                       # b reclaims its 4 GPUs from two borrowers
    assert (r.acks, r.timeouts) == (0, 2)           # no checkpoint on signal: grace times out
    assert r.lost_gpu_s == pytest.approx(2 * 2 * 100.0)
    b = r.outcomes["b0"]
    assert b.first_start == 130.0      # reclaimed in the cycle it arrived, starts after the grace
    acked = replay(js, hosts, q, ReplayConfig(CycleOptions(profile="bestfit"), cycle_s=10.0,
                                              checkpoint_s=None, checkpoint_on_signal=True))
    assert (acked.acks, acked.lost_gpu_s) == (2, 0.0)


def test_three_modes_on_a_small_trace():
    setup = prepare(jobs(), [TeamQuota("a", 4), TeamQuota("b", 4)], gpus_per_host=8)
    res = {m: run_mode(m, setup, mode_config(m, grace_s=0.0))
           for m in ("dedicated", "fifo", "gpuplane")}
    assert res["dedicated"]["unservable_jobs"] == 1            # 16 GPUs never fit 4
    assert res["gpuplane"]["unservable_jobs"] == 1              # nor the 8-GPU pool
    for m in res.values():
        assert set(m["teams"]) == {"a", "b"}
        assert {"p50_wait_s", "p95_wait_s", "mean_jct_s"} <= set(m["teams"]["a"])
    # a borrows b's idle share in the pool, so its work waits less than in its own cluster
    assert res["gpuplane"]["teams"]["a"]["p95_wait_s"] < res["dedicated"]["teams"]["a"][
        "p95_wait_s"]
    cmp = compare(res)
    assert cmp["sharing_incentive"]["holds"]


def test_unknown_tenants_are_dropped_and_counted():
    setup = prepare(jobs() + [TraceJob("x", "zz", 5.0, 1.0, 1)], [TeamQuota("a", 4),
                                                                  TeamQuota("b", 4)])
    assert setup.dropped_unknown_tenant == 1


def test_cli_sharing_json_and_clear_errors(tmp_path):
    _register()
    jp = tmp_path / "jobs.csv"
    jp.write_text("submit_time,duration,gpus,tenant\n" + "".join(
        f"{j.submit},{j.duration},{j.gpus},{j.tenant}\n" for j in jobs()))
    qp = tmp_path / "quotas.csv"
    qp.write_text("tenant,gpus\na,4\nb,4\n")
    runner = CliRunner()
    r = runner.invoke(app, ["sim", "sharing", "--jobs", str(jp), "--quotas", str(qp), "--json",
                            "--quiet", "--plot", str(tmp_path / "plots")])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert set(doc["modes"]) >= {"dedicated", "fifo", "gpuplane"}
    for m in ("dedicated", "fifo", "gpuplane"):
        assert {"allocation_mean", "gpu_hours_served", "jain_index", "preemptions",
                "lost_gpu_hours", "teams"} <= set(doc["modes"][m])
    assert (tmp_path / "plots" / "allocation.png").stat().st_size > 0
    bad = tmp_path / "bad.csv"
    bad.write_text("submit_time,duration,gpus,tenant\n1,x,1,a\n")
    r = runner.invoke(app, ["sim", "sharing", "--jobs", str(bad), "--quotas", str(qp), "--json"])
    assert r.exit_code == 2
    assert "bad.csv:2:duration" in r.output and "Traceback" not in r.output
