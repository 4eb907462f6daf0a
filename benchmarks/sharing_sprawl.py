"""The sprawl benchmark: one cluster per team vs one FIFO pool vs gpuplane's shared pool.

Replays a multi-tenant job history (default: Microsoft Philly, Oct 1 - Dec 1 2017, the 11 main
virtual clusters as teams; ../shared/data/philly, see SOURCE.md there) at several quota scales
(default 1, 1/2, 1/4: the published quotas leave the pool mostly idle) through the one scheduling
cycle, in three modes (plus gpuplane on a 20 % smaller pool), and checks the issue's figures:

- sharing incentive: no team's p95 wait in gpuplane worse than in its dedicated cluster;
- GPU-hours served per GPU owned >= 1.25x dedicated, or the same service with >= 20 % fewer GPUs
  (``gpuplane_smaller_pool``: served GPU-hours >= dedicated and the sharing incentive holding);
- against FIFO: the worst-off team's p95 wait at least halved, allocation within 2 points.

The FIFO and dedicated baselines run in the same process, on the same jobs, through the same
cycle. Writes ``<out>/sharing_<scale>.json``, PNG figures under ``<out>/scale_<scale>/`` and a
``<out>/sharing_summary.json``; prints the tables.

Run: ``.venv/bin/python benchmarks/sharing_sprawl.py [--jobs CSV --quotas CSV] [--scales 1,0.5,0.25]
[--start ISO --end ISO] [--out benchmarks/results]``. Nothing here is specific to Philly: any
``submit_time,duration,gpus,tenant`` / ``tenant,gpus`` pair works.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gpuplane.sim.sharing import prepare, run_all
from gpuplane.sim.sharing_plots import write_plots
from gpuplane.sim.sharing_tables import print_tables
from gpuplane.sim.traces import parse_time, read_jobs, read_quotas

ROOT = Path(__file__).resolve().parents[1]
PHILLY = ROOT.parent / "shared" / "data" / "philly"


def verdict(doc: dict) -> dict:
    """The issue's pass/fail figures for one scale."""
    c = doc["comparison"]
    sp = c.get("smaller_pool_vs_dedicated", {})
    return {
        "quota_scale": doc["quota_scale"],
        "sharing_incentive": c["sharing_incentive"]["holds"],
        "served_per_gpu_vs_dedicated": c["served_per_gpu_vs_dedicated"],
        "served_per_gpu_ok": c["served_per_gpu_vs_dedicated"] >= 1.25,
        "smaller_pool_gpus_fewer_pct": sp.get("gpus_fewer_pct"),
        "smaller_pool_served_ratio": sp.get("gpu_hours_served_ratio"),
        "smaller_pool_sharing_incentive": sp.get("sharing_incentive_holds"),
        "same_service_fewer_gpus_ok": bool(sp) and sp["gpu_hours_served_ratio"] >= 0.999
        and sp["sharing_incentive_holds"] and sp["gpus_fewer_pct"] >= 19.9,
        "worst_team_p95_ratio_vs_fifo": c["worst_team_p95_ratio"],
        "worst_team_halved_ok": c["worst_team_p95_ratio"] <= 0.5,
        "allocation_points_vs_fifo": c["allocation_points_vs_fifo"],
        "allocation_ok": c["allocation_points_vs_fifo"] >= -2.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=Path, default=PHILLY / "philly_pollux.csv")
    ap.add_argument("--quotas", type=Path, default=PHILLY / "philly_vc_quota.csv")
    ap.add_argument("--start", default="2017-10-01")
    ap.add_argument("--end", default="2017-12-01")
    ap.add_argument("--scales", default="1,0.5,0.25")
    ap.add_argument("--fewer-gpus", type=float, default=0.2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = ap.parse_args()

    _, jobs = read_jobs(a.jobs)
    _, teams = read_quotas(a.quotas)
    a.out.mkdir(parents=True, exist_ok=True)
    summary = []
    for scale in [float(x) for x in a.scales.split(",")]:
        setup = prepare(jobs, teams, start=parse_time(a.start) if a.start else None,
                        end=parse_time(a.end) if a.end else None, quota_scale=scale)
        t0 = time.perf_counter()
        doc = run_all(setup, fewer_gpus=a.fewer_gpus)
        doc["seconds"] = time.perf_counter() - t0
        (a.out / f"sharing_{scale:g}.json").write_text(json.dumps(doc, indent=1))
        folder = a.out / f"scale_{scale:g}"
        folder.mkdir(exist_ok=True)
        write_plots(doc, folder)
        print_tables(doc)
        summary.append(verdict(doc))
        print(json.dumps(summary[-1]))
    (a.out / "sharing_summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
