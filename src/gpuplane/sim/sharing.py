"""The sprawl benchmark: one multi-tenant job history replayed three ways.

- ``dedicated``: one cluster per team, sized to the team's guaranteed GPUs; inside it, age order
  with backfill (gpuplane's cycle without sharing: no quota, no preemption).
- ``fifo``: one pool of the same total size, strict FIFO over all teams, no quotas, no backfill.
- ``gpuplane``: the same pool with quotas (each team guaranteed its dedicated size, all in one
  cohort, idle guarantees lent), reclaim by preemption, hierarchical DRF fair share with decayed
  usage, and backfill.

All three use :func:`gpuplane.sim.replay.replay` and therefore the one scheduling cycle. Jobs of
tenants absent from the quotas file are dropped (counted). A job larger than the cluster it must
run on (a team's dedicated cluster or the pool) can never start there: it is counted as
``unservable`` in that mode and left out of that mode's wait statistics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gpuplane.domain.errors import FieldError, InvalidInput
from gpuplane.domain.inventory import GpuDevice, Host
from gpuplane.domain.requests import TaskRequest
from gpuplane.domain.tenancy import MILLI, FlavorQuota, Project, QuotaTree
from gpuplane.scheduling.cycle import CycleOptions
from gpuplane.sim.replay import ReplayConfig, ReplayResult, SimJob, replay
from gpuplane.sim.traces import TeamQuota, TraceJob

MODES = ("dedicated", "fifo", "gpuplane")
SMALLER = "gpuplane_smaller_pool"
COHORT = "pool"
FLAVOR = "gpu"


@dataclass(frozen=True)
class SharingSetup:
    """Jobs in the window from known tenants, team sizes after scaling, host shape."""

    jobs: tuple[TraceJob, ...]
    teams: tuple[TeamQuota, ...]
    window: tuple[float, float]
    gpus_per_host: int = 8
    quota_scale: float = 1.0
    dropped_unknown_tenant: int = 0

    @property
    def owned_gpus(self) -> int:
        return sum(t.gpus for t in self.teams)


def prepare(jobs: Sequence[TraceJob], quotas: Sequence[TeamQuota], *, start: float | None = None,
            end: float | None = None, quota_scale: float = 1.0,
            gpus_per_host: int = 8) -> SharingSetup:
    """Select jobs submitted in ``[start, end)`` (default: the whole trace) from tenants with a
    quota, and scale every team's GPUs by ``quota_scale`` (rounded, at least 1 GPU)."""
    errors = []
    if not quota_scale > 0:
        errors.append(FieldError("quota_scale", f"must be > 0, got {quota_scale}"))
    if gpus_per_host < 1:
        errors.append(FieldError("gpus_per_host", f"must be >= 1, got {gpus_per_host}"))
    if start is not None and end is not None and end <= start:
        errors.append(FieldError("end", "must be after start"))
    if errors:
        raise InvalidInput("invalid sharing benchmark settings", errors)
    teams = tuple(TeamQuota(q.tenant, max(1, int(round(q.gpus * quota_scale)))) for q in quotas)
    known = {t.tenant for t in teams}
    lo = start if start is not None else min(j.submit for j in jobs)
    hi = end if end is not None else max(j.submit for j in jobs) + 1.0
    inside = [j for j in jobs if lo <= j.submit < hi]
    kept = tuple(j for j in inside if j.tenant in known)
    if not kept:
        raise InvalidInput("no jobs to replay",
                           [FieldError("jobs", f"{len(inside)} jobs in the window, none from a "
                                       "tenant listed in the quotas file")],
                           code="gpuplane.trace.empty")
    return SharingSetup(kept, teams, (lo, hi), gpus_per_host, quota_scale,
                        len(inside) - len(kept))


def team_hosts(team: str, gpus: int, gpus_per_host: int) -> list[Host]:
    """``ceil(gpus / gpus_per_host)`` hosts named ``<team>-<k>``; the last may have fewer GPUs."""
    hosts = []
    for k in range(math.ceil(gpus / gpus_per_host)):
        n = min(gpus_per_host, gpus - k * gpus_per_host)
        hosts.append(Host(f"{team}-{k}", cpu_milli=8000 * n, memory_mib=65536 * n,
                          gpus=tuple(GpuDevice(i, FLAVOR, memory_mib=0) for i in range(n))))
    return hosts


def gang_tasks(gpus: int, gpus_per_host: int) -> tuple[TaskRequest, ...]:
    """A job of ``gpus`` whole GPUs as ``ceil(gpus / gpus_per_host)`` tasks as equal as possible."""
    k = max(1, math.ceil(gpus / gpus_per_host))
    base, extra = divmod(gpus, k)
    return tuple(TaskRequest(cpu_milli=0, memory_mib=0, gpus=base + (1 if i < extra else 0))
                 for i in range(k))


def servable(job: SimJob, hosts: Sequence[Host]) -> bool:
    """Could the job start on these hosts when they are empty (first-fit decreasing)?"""
    free = sorted((h.gpu_count for h in hosts), reverse=True)
    for t in sorted(job.tasks, key=lambda t: -t.gpus):
        for i, f in enumerate(free):
            if f >= t.gpus:
                free[i] -= t.gpus
                break
        else:
            return False
    return True


def mode_config(mode: str, seed: int = 0, cycle_s: float = 10.0,
                checkpoint_s: float | None = 3600.0, half_life_s: float = 7 * 86400.0,
                grace_s: float = 30.0, checkpoint_on_signal: bool = False,
                profile: str | None = "bestfit") -> ReplayConfig:
    """The cycle policy of each mode (see the module docstring). ``profile`` is the placement
    profile (default ``bestfit``: whole-GPU jobs packed onto the fullest host that fits, which
    keeps whole hosts free for gangs)."""
    if mode == "dedicated":
        opts = CycleOptions(fair_share=False, preemption=False, backfill=True, explain_all=False,
                            profile=profile)
    elif mode == "fifo":
        opts = CycleOptions(fair_share=False, preemption=False, backfill=False, strict_fifo=True,
                            explain_all=False, profile=profile)
    elif mode == "gpuplane":
        opts = CycleOptions(fair_share=True, preemption=True, backfill=True, explain_all=False,
                            profile=profile)
    else:
        raise InvalidInput(f"unknown mode {mode!r}", [FieldError("mode", "valid: " + ", ".join(MODES))])
    return ReplayConfig(opts, cycle_s=cycle_s, checkpoint_s=checkpoint_s, half_life_s=half_life_s,
                        grace_s=grace_s, checkpoint_on_signal=checkpoint_on_signal, seed=seed)


def run_mode(mode: str, setup: SharingSetup, config: ReplayConfig,
             progress: Callable[[float, float], None] | None = None) -> dict:
    """Replay ``setup`` in ``mode``; returns the mode's report (see :func:`report`)."""
    gph = setup.gpus_per_host
    sim_jobs = [SimJob(j.id, j.tenant, j.submit, j.duration, gang_tasks(j.gpus, gph))
                for j in setup.jobs]
    t0 = time.perf_counter()
    unservable: set[str] = set()
    if mode == "dedicated":
        results = []
        for team in setup.teams:
            hosts = team_hosts(team.tenant, team.gpus, gph)
            mine = [j for j in sim_jobs if j.tenant == team.tenant]
            ok = [j for j in mine if servable(j, hosts)]
            unservable.update(j.id for j in mine if not servable(j, hosts))
            quotas = QuotaTree([Project(team.tenant)], enforce=False)
            if ok:
                results.append(replay(ok, hosts, quotas, config, window=setup.window,
                                      progress=progress))
        merged = _merge(results)
    else:
        hosts = [h for t in setup.teams for h in team_hosts(t.tenant, t.gpus, gph)]
        ok = [j for j in sim_jobs if servable(j, hosts)]
        unservable.update(j.id for j in sim_jobs if not servable(j, hosts))
        if mode == "fifo":
            quotas = QuotaTree([Project(t.tenant) for t in setup.teams], enforce=False)
        else:
            quotas = QuotaTree([Project(t.tenant, cohort=COHORT,
                                        quotas={FLAVOR: FlavorQuota(t.gpus * MILLI)})
                                for t in setup.teams])
        merged = replay(ok, hosts, quotas, config, window=setup.window, progress=progress)
    merged.wall_s = time.perf_counter() - t0
    return report(setup, merged, unservable)


def _merge(results: list[ReplayResult]) -> ReplayResult:
    outcomes, alloc, samples = {}, {}, {}
    for r in results:
        outcomes.update(r.outcomes)
        for k, v in r.alloc_gpu_s.items():
            alloc[k] = alloc.get(k, 0.0) + v
        for t, total, per in r.samples:
            s = samples.setdefault(t, [0.0, {}])
            s[0] += total
            s[1].update(per)
    return ReplayResult(outcomes, [(t, v[0], v[1]) for t, v in sorted(samples.items())], alloc,
                        sum(r.cycles for r in results),
                        preemptions=sum(r.preemptions for r in results),
                        lost_gpu_s=sum(r.lost_gpu_s for r in results),
                        acks=sum(r.acks for r in results),
                        timeouts=sum(r.timeouts for r in results),
                        grace_gpu_s=sum(r.grace_gpu_s for r in results))


def report(setup: SharingSetup, r: ReplayResult, unservable: set[str]) -> dict:
    """Metrics of one mode: allocation, service, fairness, preemption, per-team waits."""
    lo, hi = setup.window
    span = hi - lo
    owned = setup.owned_gpus
    alloc_s = sum(r.alloc_gpu_s.values())
    lost_s = r.lost_gpu_s + r.grace_gpu_s    # work lost, and GPUs booked but idle in a grace
    teams: dict[str, dict] = {}
    xs = []
    for team in setup.teams:
        mine = [o for o in r.outcomes.values() if o.job.tenant == team.tenant]
        waits = np.array([o.first_start - o.job.submit for o in mine if o.first_start is not None])
        jcts = np.array([o.end - o.job.submit for o in mine if o.end is not None])
        offered = sum(j.gpus * j.duration for j in setup.jobs if j.tenant == team.tenant)
        served = r.alloc_gpu_s.get(team.tenant, 0.0)
        due = min(offered, team.gpus * span)
        x = min(1.0, served / due) if due > 0 else 1.0
        xs.append(x)
        teams[team.tenant] = {
            "gpus": team.gpus,
            "jobs": int(sum(1 for j in setup.jobs if j.tenant == team.tenant)),
            "unservable": int(sum(1 for j in setup.jobs
                                  if j.tenant == team.tenant and j.id in unservable)),
            "p50_wait_s": _pct(waits, 50), "p95_wait_s": _pct(waits, 95),
            "mean_wait_s": float(waits.mean()) if waits.size else 0.0,
            "mean_jct_s": float(jcts.mean()) if jcts.size else 0.0,
            "gpu_hours_allocated": served / 3600.0,
            "share_of_due": x,
        }
    xs_a = np.array(xs)
    jain = float(xs_a.sum() ** 2 / (len(xs_a) * (xs_a ** 2).sum())) if (xs_a ** 2).sum() else 1.0
    timeline = [(t, 100.0 * a / owned) for t, a, _ in r.samples if lo <= t < hi]
    due_gpus = {t.tenant: t.gpus for t in setup.teams}
    borrowed = [[t, sum(max(0.0, v - due_gpus.get(k, 0)) for k, v in per.items())]
                for t, _, per in r.samples if lo <= t < hi]
    return {
        "allocation_mean": 100.0 * alloc_s / (owned * span) if span > 0 else 0.0,
        "gpu_hours_allocated": alloc_s / 3600.0,
        "gpu_hours_served": max(0.0, alloc_s - lost_s) / 3600.0,
        "served_per_gpu_owned": max(0.0, alloc_s - lost_s) / 3600.0 / owned,
        "jain_index": jain,
        "preemptions": r.preemptions,
        "preemption_acks": r.acks,
        "preemption_timeouts": r.timeouts,
        "lost_gpu_hours": r.lost_gpu_s / 3600.0,
        "grace_gpu_hours": r.grace_gpu_s / 3600.0,
        "unservable_jobs": len(unservable),
        "cycles": r.cycles,
        "seconds": r.wall_s,
        "teams": teams,
        "allocation_over_time": [[t, round(a, 3)] for t, a in timeline],
        "borrowed_over_time": borrowed,
    }


def _pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if a.size else 0.0


def shrink(setup: SharingSetup, fraction: float) -> SharingSetup:
    """The same jobs with every team's GPUs (so the pool) multiplied by ``fraction``."""
    if not 0 < fraction <= 1:
        raise InvalidInput("invalid pool fraction",
                           [FieldError("fewer_gpus", f"must be in [0, 1), got {1 - fraction:g}")])
    teams = tuple(TeamQuota(t.tenant, max(1, int(round(t.gpus * fraction)))) for t in setup.teams)
    return SharingSetup(setup.jobs, teams, setup.window, setup.gpus_per_host,
                        setup.quota_scale * fraction, setup.dropped_unknown_tenant)


def compare(modes: dict[str, dict]) -> dict:
    """The issue's figures: sharing incentive and service against dedicated; worst-off p95 and
    allocation against FIFO. Only keys for the modes present are filled."""
    out: dict = {}
    g = modes.get("gpuplane")
    d = modes.get("dedicated")
    f = modes.get("fifo")
    if g and d:
        worse = {t: {"dedicated_p95_s": d["teams"][t]["p95_wait_s"],
                     "gpuplane_p95_s": v["p95_wait_s"]}
                 for t, v in g["teams"].items() if v["p95_wait_s"] > d["teams"][t]["p95_wait_s"]}
        out["sharing_incentive"] = {"holds": not worse, "teams_worse_than_dedicated": worse}
        ratio = g["served_per_gpu_owned"] / d["served_per_gpu_owned"] if d[
            "served_per_gpu_owned"] else math.inf
        out["served_per_gpu_vs_dedicated"] = ratio
    small = modes.get(SMALLER)
    if small and d:
        worse = {t: {"dedicated_p95_s": d["teams"][t]["p95_wait_s"],
                     "smaller_pool_p95_s": v["p95_wait_s"]}
                 for t, v in small["teams"].items()
                 if v["p95_wait_s"] > d["teams"][t]["p95_wait_s"]}
        owned_d = sum(v["gpus"] for v in d["teams"].values())
        owned_s = sum(v["gpus"] for v in small["teams"].values())
        out["smaller_pool_vs_dedicated"] = {
            "gpus_fewer_pct": 100.0 * (1 - owned_s / owned_d),
            "gpu_hours_served_ratio": (small["gpu_hours_served"] / d["gpu_hours_served"]
                                       if d["gpu_hours_served"] else math.inf),
            "sharing_incentive_holds": not worse, "teams_worse_than_dedicated": worse}
    if g and f:
        wf = max(v["p95_wait_s"] for v in f["teams"].values())
        wg = max(v["p95_wait_s"] for v in g["teams"].values())
        out["worst_team_p95_fifo_s"] = wf
        out["worst_team_p95_gpuplane_s"] = wg
        out["worst_team_p95_ratio"] = (wg / wf) if wf else (0.0 if wg == 0 else math.inf)
        out["allocation_points_vs_fifo"] = g["allocation_mean"] - f["allocation_mean"]
    return out


def run_all(setup: SharingSetup, modes: Sequence[str] = MODES, *, fewer_gpus: float = 0.2,
            progress: Callable[[str], Callable[[float, float], None] | None] | None = None,
            **config: object) -> dict:
    """Run ``modes`` (and, with ``dedicated`` and ``fewer_gpus > 0``, gpuplane on a pool that
    much smaller) and return the benchmark document (see :func:`document`). ``config`` goes to
    :func:`mode_config`; ``progress(mode)`` may return a per-mode progress callback."""
    results: dict[str, dict] = {}
    for m in modes:
        cb = progress(m) if progress else None
        results[m] = run_mode(m, setup, mode_config(m, **config), cb)   # type: ignore[arg-type]
    if fewer_gpus and "dedicated" in modes:
        cb = progress("smaller") if progress else None
        results[SMALLER] = run_mode("gpuplane", shrink(setup, 1.0 - fewer_gpus),
                                    mode_config("gpuplane", **config), cb)  # type: ignore[arg-type]
    return document(setup, results, compare(results))


def document(setup: SharingSetup, results: dict, comparison: dict) -> dict:
    """The JSON document printed by ``gpuplane sim sharing --json``."""
    from gpuplane.sim.traces import format_time

    return {
        "window": {"start": format_time(setup.window[0]), "end": format_time(setup.window[1])},
        "jobs": len(setup.jobs),
        "jobs_dropped_unknown_tenant": setup.dropped_unknown_tenant,
        "quota_scale": setup.quota_scale,
        "owned_gpus": setup.owned_gpus,
        "teams": {t.tenant: t.gpus for t in setup.teams},
        "modes": results,
        "comparison": comparison,
    }
