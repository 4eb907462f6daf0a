"""The sprawl benchmark: one multi-tenant job history replayed in five modes.

- ``dedicated``: one cluster per team, sized to the team's guaranteed GPUs; inside it, age order
  with EASY backfill (the cycle without sharing: no quota, no preemption).
- ``fifo``: one pool of the same total size, strict FIFO over all teams, no quotas, no backfill.
- ``fifo+backfill``: the pool, FIFO (age) order over all teams, no quotas, the same EASY backfill
  and run-time knowledge as gpuplane.
- ``drf``: the pool, no quotas or guarantees, teams served by dominant-resource fair share
  (usage decayed over the half-life), backfill, no preemption.
- ``gpuplane``: the pool with quotas (each team guaranteed its dedicated size, all in one
  cohort, idle guarantees lent), reclaim by preemption, hierarchical DRF, and backfill.

In both fair-share modes a team's fair-share weight is its dedicated size, as an operator sets
shares in proportion to what each team brought (Slurm's fair-share *shares*): a team's standing
is its use over its size, so a large team is not ranked behind a small one for using more.

Every mode runs the same jobs through :func:`gpuplane.sim.replay.replay` and so the one
scheduling cycle (``run_cycle``; only ``CycleOptions`` and the quota tree differ). Jobs of tenants
absent from the quotas file are dropped (counted). A job larger than the cluster it must run on
can never start there: it is counted as ``unservable`` in that mode and as waiting until the end
of the window (see ``sharing_report``). ``runtime_knowledge`` (``oracle``, ``requested``,
``none``) is what backfill is told about run times (``sim/replay.py``, ``sim/runtime.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpuplane.domain.errors import FieldError, InvalidInput
from gpuplane.domain.inventory import GpuDevice, Host
from gpuplane.domain.requests import TaskRequest
from gpuplane.domain.tenancy import MILLI, FlavorQuota, Project, QuotaTree
from gpuplane.scheduling.cycle import CycleOptions
from gpuplane.sim.replay import RUNTIME_KNOWLEDGE, ReplayConfig, ReplayResult, SimJob, replay
from gpuplane.sim.runtime import requested_limits
from gpuplane.sim.sharing_report import compare, document, merge, report
from gpuplane.sim.traces import TeamQuota, TraceJob

MODES = ("dedicated", "fifo", "fifo+backfill", "drf", "gpuplane")
POOLED = ("fifo", "fifo+backfill", "drf", "gpuplane")
SMALLER = "gpuplane_smaller_pool"
COHORT = "pool"
FLAVOR = "gpu"

__all__ = ["MODES", "POOLED", "SharingSetup", "compare", "document", "mode_config", "prepare",
           "resize", "run_all", "run_mode", "shrink"]


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


def servable(job: SimJob, hosts: Sequence[Host] | Sequence[int]) -> bool:
    """Could the job start on these hosts (or host GPU counts) when they are empty
    (first-fit decreasing)?"""
    sizes = [h if isinstance(h, int) else h.gpu_count for h in hosts]
    if len(job.tasks) == 1:
        return job.tasks[0].gpus <= max(sizes, default=0)
    free = sorted(sizes, reverse=True)
    for t in sorted(job.tasks, key=lambda t: -t.gpus):
        for i, f in enumerate(free):
            if f >= t.gpus:
                free[i] -= t.gpus
                break
        else:
            return False
    return True


def _servable_all(jobs: Sequence[SimJob], sizes: list[int]) -> list[bool]:
    """:func:`servable` of each job on hosts of these GPU counts (memoised by gang shape)."""
    memo: dict[tuple[int, ...], bool] = {}
    out = []
    for j in jobs:
        shape = tuple(t.gpus for t in j.tasks)
        if shape not in memo:
            memo[shape] = servable(j, sizes)
        out.append(memo[shape])
    return out


def mode_config(mode: str, seed: int = 0, cycle_s: float = 10.0,
                checkpoint_s: float | None = 3600.0, half_life_s: float = 7 * 86400.0,
                grace_s: float = 30.0, checkpoint_on_signal: bool = False,
                profile: str | None = "bestfit",
                runtime_knowledge: str = "requested") -> ReplayConfig:
    """The cycle policy of each mode (see the module docstring). ``profile`` is the placement
    profile (default ``bestfit``: whole-GPU jobs packed onto the fullest host that fits, which
    keeps whole hosts free for gangs)."""
    common = dict(explain_all=False, profile=profile)
    if mode == "dedicated":
        opts = CycleOptions(fair_share=False, preemption=False, backfill=True, **common)
    elif mode == "fifo":
        opts = CycleOptions(fair_share=False, preemption=False, backfill=False, strict_fifo=True,
                            **common)
    elif mode == "fifo+backfill":
        opts = CycleOptions(fair_share=False, preemption=False, backfill=True, **common)
    elif mode == "drf":
        opts = CycleOptions(fair_share=True, preemption=False, backfill=True, **common)
    elif mode == "gpuplane":
        opts = CycleOptions(fair_share=True, preemption=True, backfill=True, **common)
    else:
        raise InvalidInput(f"unknown mode {mode!r}",
                           [FieldError("mode", "valid: " + ", ".join(MODES))])
    if runtime_knowledge not in RUNTIME_KNOWLEDGE:
        raise InvalidInput("unknown run-time knowledge",
                           [FieldError("runtime_knowledge", f"got {runtime_knowledge!r}; valid: "
                                       + ", ".join(RUNTIME_KNOWLEDGE))])
    return ReplayConfig(opts, cycle_s=cycle_s, checkpoint_s=checkpoint_s, half_life_s=half_life_s,
                        grace_s=grace_s, checkpoint_on_signal=checkpoint_on_signal, seed=seed,
                        runtime_knowledge=runtime_knowledge)


def sim_jobs(setup: SharingSetup, seed: int = 0) -> list[SimJob]:
    """The setup's jobs as gangs, each with its requested limit (``sim/runtime.py``; the same
    for every mode of one seed)."""
    limits = requested_limits([j.duration for j in setup.jobs], seed)
    gph = setup.gpus_per_host
    shapes: dict[int, tuple[TaskRequest, ...]] = {}     # requests are immutable: share them
    for j in setup.jobs:
        if j.gpus not in shapes:
            shapes[j.gpus] = gang_tasks(j.gpus, gph)
    return [SimJob(j.id, j.tenant, j.submit, j.duration, shapes[j.gpus], limit=lim)
            for j, lim in zip(setup.jobs, limits)]


def pool_quotas(mode: str, teams: Sequence[TeamQuota]) -> QuotaTree:
    """The quota tree of a pooled mode: guarantees in one cohort for gpuplane, none otherwise;
    every team's fair-share weight is its GPUs."""
    if mode == "gpuplane":
        return QuotaTree([Project(t.tenant, cohort=COHORT, weight=float(t.gpus),
                                  quotas={FLAVOR: FlavorQuota(t.gpus * MILLI)}) for t in teams])
    return QuotaTree([Project(t.tenant, weight=float(t.gpus)) for t in teams], enforce=False)


def run_mode(mode: str, setup: SharingSetup, config: ReplayConfig,
             progress: Callable[[float, float], None] | None = None) -> dict:
    """Replay ``setup`` in ``mode``; returns the mode's report (``sharing_report.report``)."""
    gph = setup.gpus_per_host
    jobs = sim_jobs(setup, config.seed)
    unservable: set[str] = set()
    if mode == "dedicated":
        results = []
        for team in setup.teams:
            hosts = team_hosts(team.tenant, team.gpus, gph)
            mine = [j for j in jobs if j.tenant == team.tenant]
            fits = _servable_all(mine, [h.gpu_count for h in hosts])
            ok = [j for j, f in zip(mine, fits) if f]
            unservable.update(j.id for j, f in zip(mine, fits) if not f)
            quotas = QuotaTree([Project(team.tenant)], enforce=False)
            if ok:
                results.append(replay(ok, hosts, quotas, config, window=setup.window,
                                      progress=progress))
        merged = merge(results)
    else:
        hosts = [h for t in setup.teams for h in team_hosts(t.tenant, t.gpus, gph)]
        fits = _servable_all(jobs, [h.gpu_count for h in hosts])
        ok = [j for j, f in zip(jobs, fits) if f]
        unservable.update(j.id for j, f in zip(jobs, fits) if not f)
        merged = replay(ok, hosts, pool_quotas(mode, setup.teams), config, window=setup.window,
                        progress=progress)
    out = report(setup, merged, unservable)
    out["runtime_knowledge"] = config.runtime_knowledge
    return out


def shrink(setup: SharingSetup, fraction: float) -> SharingSetup:
    """The same jobs with every team's GPUs (so the pool) multiplied by ``fraction``."""
    if not 0 < fraction <= 1:
        raise InvalidInput("invalid pool fraction",
                           [FieldError("fewer_gpus", f"must be in [0, 1), got {1 - fraction:g}")])
    teams = tuple(TeamQuota(t.tenant, max(1, int(round(t.gpus * fraction)))) for t in setup.teams)
    return SharingSetup(setup.jobs, teams, setup.window, setup.gpus_per_host,
                        setup.quota_scale * fraction, setup.dropped_unknown_tenant)


def resize(setup: SharingSetup, gpus: int) -> SharingSetup:
    """The same jobs on a pool of exactly ``gpus`` GPUs: every team's guarantee scaled in
    proportion (largest remainder, at least 1 GPU each)."""
    owned = setup.owned_gpus
    n = max(gpus, len(setup.teams))
    raw = [t.gpus * n / owned for t in setup.teams]
    base = [max(1, int(math.floor(r))) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - math.floor(raw[i])), i))
    k = 0
    while sum(base) < n:
        base[order[k % len(order)]] += 1
        k += 1
    teams = tuple(TeamQuota(t.tenant, g) for t, g in zip(setup.teams, base))
    return SharingSetup(setup.jobs, teams, setup.window, setup.gpus_per_host,
                        setup.quota_scale * sum(base) / owned, setup.dropped_unknown_tenant)


def run_all(setup: SharingSetup, modes: Sequence[str] = MODES, *, fewer_gpus: float = 0.0,
            progress: Callable[[str], Callable[[float, float], None] | None] | None = None,
            workers: int = 1, **config: object) -> dict:
    """Run ``modes`` (and, with ``dedicated`` and ``fewer_gpus > 0``, gpuplane on a pool that
    much smaller) and return the benchmark document (``sharing_report.document``). ``config``
    goes to :func:`mode_config`; ``progress(mode)`` may return a per-mode progress callback;
    ``workers > 1`` runs modes in that many processes (``sim/parallel.py``)."""
    jobs: list[tuple[str, str, SharingSetup]] = [(m, m, setup) for m in modes]
    if fewer_gpus and "dedicated" in modes:
        jobs.append((SMALLER, "gpuplane", shrink(setup, 1.0 - fewer_gpus)))
    for m in modes:
        mode_config(m, **config)       # type: ignore[arg-type]  # validate before forking
    if workers > 1 and len(jobs) > 1:
        from gpuplane.sim.parallel import run_parallel

        results = run_parallel(jobs, config, workers, progress)
    else:
        results = {}
        for name, mode, s in jobs:
            cb = progress(name) if progress else None
            cfg = mode_config(mode, **config)   # type: ignore[arg-type]
            results[name] = run_mode(mode, s, cfg, cb)
    results = {name: results[name] for name, _, _ in jobs}
    doc = document(setup, results, compare(results))
    doc["runtime_knowledge"] = str(config.get("runtime_knowledge", "requested"))
    return doc
