"""Metrics of the sprawl benchmark: one mode's report, the comparison between modes, the document.

Same jobs in every mode: a job a mode never starts -- larger than the cluster it must run on
(``unservable``) or still queued when the replay ends -- counts as waiting from its submission to
the end of the window (a censored wait: a lower bound), so it raises its team's waits instead of
vanishing from them. JCT means cover the jobs that finished.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

import numpy as np

from gpuplane.sim.replay import ReplayResult

# a pooled mode is "no worse" than dedicated for a team when its p95 wait is at most the
# dedicated p95 plus this (waits quantised by a 10 s cycle; under a minute is no queueing)
WAIT_TOLERANCE_S = 60.0
# guarantee delivery: team-days with at least this much due (GPU-hours) count, and a day is
# "short" when less than this fraction of what was due was served
DELIVERY_MIN_DUE_GPU_H = 1.0
DELIVERY_TARGET = 0.95
DAY_S = 86400.0


def merge(results: list[ReplayResult]) -> ReplayResult:
    """One result from the per-team replays of ``dedicated``."""
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
                        wall_s=sum(r.wall_s for r in results),
                        preemptions=sum(r.preemptions for r in results),
                        lost_gpu_s=sum(r.lost_gpu_s for r in results),
                        acks=sum(r.acks for r in results),
                        timeouts=sum(r.timeouts for r in results),
                        grace_gpu_s=sum(r.grace_gpu_s for r in results),
                        skipped_cycles=sum(r.skipped_cycles for r in results),
                        killed=sum(r.killed for r in results))


def report(setup: Any, r: ReplayResult, unservable: set[str]) -> dict:
    """Metrics of one mode: allocation, service, fairness, preemption, per-team waits."""
    lo, hi = setup.window
    span = hi - lo
    owned = setup.owned_gpus
    alloc_s = sum(r.alloc_gpu_s.values())
    lost_s = r.lost_gpu_s + r.grace_gpu_s    # work lost, and GPUs booked but idle in a grace
    by_team: dict[str, list] = {t.tenant: [] for t in setup.teams}
    for j in setup.jobs:
        by_team[j.tenant].append(j)
    teams: dict[str, dict] = {}
    xs = []
    never = 0
    for team in setup.teams:
        mine = by_team[team.tenant]
        waits, jcts, not_started = [], [], 0
        for j in mine:
            o = r.outcomes.get(j.id)
            if o is None or o.first_start is None:
                not_started += 1
                waits.append(max(0.0, hi - j.submit))      # censored at the end of the window
            else:
                waits.append(o.first_start - j.submit)
                if o.end is not None:
                    jcts.append(o.end - j.submit)
        never += not_started
        w = np.array(waits)
        offered = sum(j.gpus * j.duration for j in mine)
        served = r.alloc_gpu_s.get(team.tenant, 0.0)
        due = min(offered, team.gpus * span)
        x = min(1.0, served / due) if due > 0 else 1.0
        xs.append(x)
        teams[team.tenant] = {
            "gpus": team.gpus,
            "jobs": len(mine),
            "unservable": sum(1 for j in mine if j.id in unservable),
            "never_started": not_started,
            "p50_wait_s": _pct(w, 50), "p95_wait_s": _pct(w, 95),
            "mean_wait_s": float(w.mean()) if w.size else 0.0,
            "mean_jct_s": float(np.mean(jcts)) if jcts else 0.0,
            "gpu_hours_allocated": served / 3600.0,
            "share_of_due": x,
        }
    xs_a = np.array(xs)
    jain = float(xs_a.sum() ** 2 / (len(xs_a) * (xs_a ** 2).sum())) if (xs_a ** 2).sum() else 1.0
    ends = {jid: o.end for jid, o in r.outcomes.items() if o.first_start is not None}
    step = _sample_step(r.samples)
    daily = daily_delivery(((j.tenant, j.submit, j.gpus, ends.get(j.id)) for j in setup.jobs),
                           {t.tenant: t.gpus for t in setup.teams}, r.samples, setup.window,
                           step)
    delivery = {**delivery_summary(daily, lo), "sample_s": step}
    for team, d in delivery.pop("per_team").items():
        teams[team].update(d)
    timeline = [(t, 100.0 * a / owned) for t, a, _ in r.samples if lo <= t < hi]
    due_gpus = {t.tenant: t.gpus for t in setup.teams}
    borrowed = [[t, sum(max(0.0, v - due_gpus.get(k, 0)) for k, v in per.items())]
                for t, _, per in r.samples if lo <= t < hi]
    return {
        "gpus": owned,
        "allocation_mean": 100.0 * alloc_s / (owned * span) if span > 0 else 0.0,
        "gpu_hours_allocated": alloc_s / 3600.0,
        "gpu_hours_served": max(0.0, alloc_s - lost_s) / 3600.0,
        "served_per_gpu_owned": max(0.0, alloc_s - lost_s) / 3600.0 / owned,
        "jain_index": jain,
        "preemptions": r.preemptions,
        "preemption_acks": r.acks,
        "preemption_timeouts": r.timeouts,
        "lost_gpu_hours": r.lost_gpu_s / 3600.0,
        "lost_pct_of_served": (100.0 * r.lost_gpu_s / max(0.0, alloc_s - lost_s)
                               if alloc_s > lost_s else 0.0),
        "grace_gpu_hours": r.grace_gpu_s / 3600.0,
        "unservable_jobs": len(unservable),
        "never_started_jobs": never,
        "killed_at_limit_jobs": r.killed,
        "cycles": r.cycles,
        "skipped_cycles": r.skipped_cycles,
        "seconds": r.wall_s,
        "teams": teams,
        "guarantee_delivery": delivery,
        "allocation_over_time": [[t, round(a, 3)] for t, a in timeline],
        "borrowed_over_time": borrowed,
    }


def _sample_step(samples: list, default: float = 3600.0) -> float:
    """The replay's sampling period (``ReplayConfig.sample_s``), read off its samples."""
    ts = sorted({t for t, _, _ in samples})
    # rounded: instants stepped from a start such as 2.6 s differ by 3599.99999999997 s
    return round(min((b - a for a, b in zip(ts, ts[1:])), default=default), 6)


def daily_delivery(jobs: Iterable[tuple[str, float, int, float | None]],
                   guarantees: Mapping[str, float], samples: list, window: tuple[float, float],
                   sample_s: float, ready_s: float = 0.0
                   ) -> dict[str, list[tuple[int, float, float]]]:
    """Per team, per day of ``window``: ``(day, served GPU-h, due GPU-h)``.

    ``jobs`` are ``(team, submit, gpus, end)`` with ``end`` ``None`` for a job never finished
    (never started, unservable, still running). At each sample instant ``t`` (every ``sample_s``
    from the window start; holdings are read just before the events of ``t``, so demand is too):
    demand(t) = GPUs of the team's jobs with ``submit < t <= end`` (pending or running),
    due += min(demand, guarantee), served += min(held, demand, guarantee), each weighted by the
    sample's share of the window in hours. A sample missing from ``samples`` (the replay had
    ended: nothing ran) counts as nothing held. Days with nothing due are omitted.

    ``ready_s`` > 0 (e.g. the cycle period) counts a job only from the first multiple of
    ``ready_s`` at or after its submission -- the first cycle that could start it -- instead of
    from its submission; the report uses 0, the definition in ``docs/sharing.md``."""
    lo, hi = window
    grid = np.arange(lo, hi, sample_s) if sample_s > 0 and hi > lo else np.zeros(0)
    # samples by their index on the grid, not by instant: the replay steps its sample clock by
    # repeated addition, so from a start such as 2.6 s its instants and the grid's can differ in
    # the last bits
    held = {round((t - lo) / sample_s): per for t, _, per in samples} if grid.size else {}
    weight = np.minimum(sample_s, hi - grid) / 3600.0
    day = ((grid - lo) // DAY_S).astype(int)
    per_team: dict[str, list] = {t: [[], [], []] for t in guarantees}
    for team, submit, gpus, end in jobs:
        if team in per_team:
            p = per_team[team]
            p[0].append(math.ceil(submit / ready_s) * ready_s if ready_s > 0 else submit)
            p[1].append(math.inf if end is None else end)
            p[2].append(gpus)
    out: dict[str, list[tuple[int, float, float]]] = {}
    for team, g in guarantees.items():
        sub, end, gp = (np.asarray(x, dtype=float) for x in per_team[team])
        so, eo = np.argsort(sub, kind="stable"), np.argsort(end, kind="stable")
        csub = np.concatenate(([0.0], np.cumsum(gp[so])))
        cend = np.concatenate(([0.0], np.cumsum(gp[eo])))
        # submitted before t, minus finished before t
        demand = (csub[np.searchsorted(sub[so], grid, "left")]
                  - cend[np.searchsorted(end[eo], grid, "left")])
        hold = np.array([held.get(k, {}).get(team, 0.0) for k in range(grid.size)])
        due = np.minimum(demand, g)
        served = np.minimum(hold, due)
        d_due = np.bincount(day, weights=due * weight) if day.size else np.zeros(0)
        d_srv = np.bincount(day, weights=served * weight) if day.size else np.zeros(0)
        out[team] = [(k, float(d_srv[k]), float(d_due[k]))
                     for k in range(d_due.size) if d_due[k] > 0]
    return out


def delivery_summary(daily: Mapping[str, list[tuple[int, float, float]]], start: float,
                     min_due_gpu_h: float = DELIVERY_MIN_DUE_GPU_H,
                     target: float = DELIVERY_TARGET) -> dict:
    """Minimum of served/due over team-days with at least ``min_due_gpu_h`` due, how many of
    them fall below ``target``, the worst one, and the same per team (``per_team``)."""
    worst = None
    count = below = 0
    per_team: dict[str, dict] = {}
    for team, days in daily.items():
        rows = [(s / d, k, s, d) for k, s, d in days if d >= min_due_gpu_h]
        count += len(rows)
        n_below = sum(1 for x, *_ in rows if x < target)
        below += n_below
        mine = min(rows, default=None)
        per_team[team] = {"delivery_min": mine[0] if mine else None,
                          "delivery_days": len(rows), "delivery_days_below": n_below}
        if mine and (worst is None or mine[0] < worst[0]):
            worst = (mine[0], team) + mine[1:]
    return {
        "method": "samples",
        "min_due_gpu_hours": min_due_gpu_h,
        "target": target,
        "team_days": count,
        "team_days_below_target": below,
        "min": worst[0] if worst else None,
        "worst": None if worst is None else {
            "team": worst[1], "day": worst[2],
            "date": datetime.fromtimestamp(start + worst[2] * DAY_S,
                                           tz=timezone.utc).strftime("%Y-%m-%d"),
            "served_gpu_hours": worst[3], "due_gpu_hours": worst[4]},
        "per_team": per_team,
    }


def _pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if a.size else 0.0


def worse_teams(pooled: dict, dedicated: dict, tolerance_s: float = WAIT_TOLERANCE_S) -> dict:
    """Teams whose p95 wait in ``pooled`` exceeds their dedicated p95 (plus the tolerance)."""
    return {t: {"dedicated_p95_s": dedicated["teams"][t]["p95_wait_s"],
                "pooled_p95_s": v["p95_wait_s"]}
            for t, v in pooled["teams"].items()
            if v["p95_wait_s"] > dedicated["teams"][t]["p95_wait_s"] + tolerance_s}


def _worst(m: dict) -> float:
    return max(v["p95_wait_s"] for v in m["teams"].values())


def compare(modes: dict[str, dict]) -> dict:
    """Per pooled mode: sharing incentive and service against dedicated; worst-off team's p95
    and allocation against ``fifo`` and ``fifo+backfill``. Old top-level keys (gpuplane against
    dedicated and fifo) are kept. Only keys for the modes present are filled."""
    out: dict = {"per_mode": {}}
    d = modes.get("dedicated")
    for name, m in modes.items():
        if name == "dedicated":
            continue
        row: dict = {"worst_team_p95_s": _worst(m), "allocation_mean": m["allocation_mean"]}
        if d:
            worse = worse_teams(m, d)
            row["sharing_incentive"] = not worse
            row["teams_worse_than_dedicated"] = worse
            row["served_per_gpu_vs_dedicated"] = (
                m["served_per_gpu_owned"] / d["served_per_gpu_owned"]
                if d["served_per_gpu_owned"] else math.inf)
        for base in ("fifo", "fifo+backfill"):
            b = modes.get(base)
            if b and base != name:
                wb = _worst(b)
                row[f"worst_team_p95_ratio_vs_{base}"] = (
                    _worst(m) / wb if wb else (0.0 if _worst(m) == 0 else math.inf))
                row[f"allocation_points_vs_{base}"] = m["allocation_mean"] - b["allocation_mean"]
        out["per_mode"][name] = row
    g = out["per_mode"].get("gpuplane")
    if g and d:
        out["sharing_incentive"] = {"holds": g["sharing_incentive"],
                                    "teams_worse_than_dedicated": g["teams_worse_than_dedicated"]}
        out["served_per_gpu_vs_dedicated"] = g["served_per_gpu_vs_dedicated"]
    small = out["per_mode"].get("gpuplane_smaller_pool")
    if small and d:
        s = modes["gpuplane_smaller_pool"]
        out["smaller_pool_vs_dedicated"] = {
            "gpus_fewer_pct": 100.0 * (1 - s["gpus"] / d["gpus"]),
            "gpu_hours_served_ratio": (s["gpu_hours_served"] / d["gpu_hours_served"]
                                       if d["gpu_hours_served"] else math.inf),
            "sharing_incentive_holds": small["sharing_incentive"],
            "teams_worse_than_dedicated": small["teams_worse_than_dedicated"]}
    if g and "fifo" in modes:
        out["worst_team_p95_fifo_s"] = _worst(modes["fifo"])
        out["worst_team_p95_gpuplane_s"] = g["worst_team_p95_s"]
        out["worst_team_p95_ratio"] = g["worst_team_p95_ratio_vs_fifo"]
        out["allocation_points_vs_fifo"] = g["allocation_points_vs_fifo"]
    return out


def document(setup: Any, results: dict, comparison: dict) -> dict:
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
