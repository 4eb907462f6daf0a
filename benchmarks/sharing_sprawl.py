"""The sprawl benchmark: one cluster per team vs pooled baselines vs gpuplane's shared pool.

Replays a multi-tenant job history (default: Microsoft Philly, Oct 1 - Dec 1 2017, the 11 main
virtual clusters as teams; ../shared/data/philly, see SOURCE.md there) at several quota scales
(default 1, 1/2, 1/4: the published quotas leave the pool mostly idle) through the one scheduling
cycle in five modes -- ``dedicated``, ``fifo``, ``fifo+backfill``, ``drf``, ``gpuplane`` -- with
the run-time knowledge given (default ``requested``: user limits, see sim/runtime.py), and for
each pooled mode searches the smallest pool in which every team's p95 wait is no worse than in
its dedicated cluster (``--find-min``: the consolidation factor = dedicated GPUs / that pool).

Figures checked (issue 11):

- consolidation factor of gpuplane >= 2.5 at scale 1 and >= 1.3 at 1/4;
- at 1/4, the worst-off team's p95 wait in gpuplane at most half of fifo+backfill's;
- sharing incentive: no team's p95 wait in gpuplane worse than in its dedicated cluster.

Writes ``<out>/sharing_<scale>.json``, PNG figures under ``<out>/scale_<scale>/`` (copied to
``--docs`` as ``philly_q<scale>_*.png``) and ``<out>/sharing_summary.json``; prints the tables.

Run: ``.venv/bin/python benchmarks/sharing_sprawl.py [--jobs CSV --quotas CSV] [--scales 1,0.5,0.25]
[--start ISO --end ISO] [--runtime-knowledge requested] [--find-min MODES|none]
[--resolution-pct 2] [--workers 2]
[--out benchmarks/results] [--docs docs/sharing] [--name philly]``. Nothing here is specific to
Philly: any ``submit_time,duration,gpus,tenant`` / ``tenant,gpus`` pair works (e.g. the
synthetic trace of ``gpuplane sim trace-gen``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from gpuplane.sim.sharing import POOLED, prepare, run_all
from gpuplane.sim.sharing_plots import write_plots
from gpuplane.sim.sharing_search import find_all
from gpuplane.sim.sharing_tables import print_tables
from gpuplane.sim.traces import parse_time, read_jobs, read_quotas

ROOT = Path(__file__).resolve().parents[1]
PHILLY = ROOT.parent / "shared" / "data" / "philly"


def verdict(doc: dict) -> dict:
    """The issue's figures for one scale."""
    c = doc["comparison"]
    g = c["per_mode"].get("gpuplane", {})
    found = doc.get("find_min_gpus", {})
    factors = {m: v["consolidation_factor"] for m, v in found.items()}
    scale = doc["quota_scale"]
    target = 2.5 if scale >= 1 else (1.3 if scale <= 0.25 else None)
    fg = factors.get("gpuplane")
    ratio_fb = g.get("worst_team_p95_ratio_vs_fifo+backfill")
    return {
        "quota_scale": scale,
        "runtime_knowledge": doc.get("runtime_knowledge"),
        "sharing_incentive": g.get("sharing_incentive"),
        "consolidation_factor": factors,
        "consolidation_target": target,
        "consolidation_ok": None if target is None or fg is None else fg >= target,
        "worst_team_p95_s": {m: v["worst_team_p95_s"] for m, v in c["per_mode"].items()},
        "worst_team_p95_ratio_vs_fifo_backfill": ratio_fb,
        "worst_team_halved_ok": None if ratio_fb is None or scale > 0.25 else ratio_fb <= 0.5,
        "seconds": doc.get("seconds"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=Path, default=PHILLY / "philly_pollux.csv")
    ap.add_argument("--quotas", type=Path, default=PHILLY / "philly_vc_quota.csv")
    ap.add_argument("--start", default="2017-10-01")
    ap.add_argument("--end", default="2017-12-01")
    ap.add_argument("--scales", default="1,0.5,0.25")
    ap.add_argument("--runtime-knowledge", default="requested")
    ap.add_argument("--find-min", default=",".join(POOLED),
                    help="pooled modes to search the smallest pool for, or 'none'")
    ap.add_argument("--resolution-pct", type=float, default=2.0,
                    help="stop the pool-size bisection at this %% of the dedicated GPUs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="philly")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "sharing")
    a = ap.parse_args()

    _, jobs = read_jobs(a.jobs)
    _, teams = read_quotas(a.quotas)
    a.out.mkdir(parents=True, exist_ok=True)
    search = [] if a.find_min == "none" else [m for m in a.find_min.split(",") if m]
    config = {"runtime_knowledge": a.runtime_knowledge}
    summary = []
    for scale in [float(x) for x in a.scales.split(",")]:
        setup = prepare(jobs, teams, start=parse_time(a.start) if a.start else None,
                        end=parse_time(a.end) if a.end else None, quota_scale=scale)
        t0 = time.perf_counter()
        doc = run_all(setup, workers=a.workers, **config)
        doc["seconds_modes"] = time.perf_counter() - t0
        if search:
            res = max(setup.gpus_per_host,
                      int(round(setup.owned_gpus * a.resolution_pct / 100.0)))
            doc["find_min_gpus"] = find_all(setup, search, doc["modes"]["dedicated"], config,
                                            workers=a.workers, resolution=res)
        doc["seconds"] = time.perf_counter() - t0
        tag = f"{a.name}_{scale:g}"
        (a.out / f"sharing_{tag}.json").write_text(json.dumps(doc, indent=1))
        folder = a.out / f"scale_{tag}"
        folder.mkdir(exist_ok=True)
        a.docs.mkdir(parents=True, exist_ok=True)
        for p in write_plots(doc, folder):
            shutil.copy(p, a.docs / f"{a.name}_q{f'{scale:g}'.replace('.', '')}_{p.name}")
        print_tables(doc)
        summary.append(verdict(doc))
        print(json.dumps(summary[-1]))
    path = a.out / f"sharing_summary_{a.name}.json"     # merged with earlier runs, by scale
    old = json.loads(path.read_text()) if path.exists() else []
    done = {v["quota_scale"] for v in summary}
    merged = [v for v in old if v["quota_scale"] not in done] + summary
    path.write_text(json.dumps(sorted(merged, key=lambda v: -v["quota_scale"]), indent=1))


if __name__ == "__main__":
    main()
