"""Our default policy ``gpuplane`` against the faithful ``fgd`` baseline on openb.

Runs both policies over the five openb pod lists and seeds 42..51 (or ``--seeds``)
in one process, through the same engine and simulator as ``gpuplane sim openb``
(FGD_PROTOCOL: tuning 1.3, seeded tie rank, integer KPI discretisation), and prints

    trace | gpuplane @100 @130 | fgd measured @100 @130 | FGD published @100 @130 | delta @130

plus the cut of FGD's unallocated share on ``default`` and the speed of one
``default`` experiment (ratio against ``fgd`` in the same process). Writes
``results/openb_policy.json`` and ``results/openb_policy.png`` (allocation vs
arrival, mean over seeds, per trace).

    .venv/bin/python benchmarks/openb_policy.py [--seeds 42-51] [--traces default,...]
        [--data ../shared/data/openb] [--published ../shared/benchmarks/fgd_expected_summary.csv]
        [--out results]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

from gpuplane.sim.openb import read_nodes, read_pods
from gpuplane.sim.openb_grid import parse_seeds
from gpuplane.sim.openb_run import run_experiment

ROOT = Path(__file__).resolve().parents[1]
TRACES = ("default", "cpu050", "gpushare40", "multigpu30", "gpuspec20")
POLICIES = ("gpuplane", "fgd")


def published(path: Path) -> dict[str, tuple[float, float, float, float]]:
    """FGD's published (mean100, mean130, min130, max130) per trace."""
    out = {}
    if not path.exists():
        return out
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            if r["policy"] == "06-FGD":
                out[r["workload"].removeprefix("openb_pod_list_")] = (
                    float(r["mean100"]), float(r["mean130"]), float(r["min130"]), float(r["max130"]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="42-51")
    ap.add_argument("--traces", default=",".join(TRACES))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "openb"))
    ap.add_argument("--published",
                    default=str(ROOT.parent / "shared" / "benchmarks" / "fgd_expected_summary.csv"))
    ap.add_argument("--out", default=str(ROOT / "results"))
    a = ap.parse_args(argv)
    seeds = parse_seeds(a.seeds)
    traces = [t for t in a.traces.split(",") if t]
    data = Path(a.data)
    pub = published(Path(a.published))
    hosts = read_nodes(data / "openb_node_list_gpu_node.csv")

    runs: list[dict] = []
    t_start = time.perf_counter()
    for trace in traces:
        pods = read_pods(data / f"openb_pod_list_{trace}.csv")
        for policy in POLICIES:
            for seed in seeds:
                r = run_experiment(hosts, pods, policy, seed, frag=False)
                runs.append({"trace": trace, "policy": policy, "seed": seed,
                             "alloc_ratio": r.alloc_ratio, "failed_pods": r.failed_pods,
                             "seconds": r.seconds})
                print(f"  {trace:11s} {policy:9s} seed {seed}: @100 {r.alloc_ratio['100']:6.2f} "
                      f"@130 {r.alloc_ratio['130']:6.2f}  {r.seconds:5.2f} s",
                      file=sys.stderr, flush=True)

    def cell(trace: str, policy: str, col: str) -> float:
        return statistics.fmean(r["alloc_ratio"][col] for r in runs
                                if r["trace"] == trace and r["policy"] == policy)

    rows = []
    head = (f"{'trace':11s} | {'gpuplane @100':>13s} {'@130':>6s} | {'fgd meas. @100':>14s} "
            f"{'@130':>6s} | {'FGD publ. @100':>14s} {'@130':>6s} | {'d130 vs publ.':>13s}")
    print(f"\nseeds {seeds[0]}..{seeds[-1]} ({len(seeds)}), mean allocation % of GPU milli")
    print(head)
    print("-" * len(head))
    for t in traces:
        g100, g130 = cell(t, "gpuplane", "100"), cell(t, "gpuplane", "130")
        f100, f130 = cell(t, "fgd", "100"), cell(t, "fgd", "130")
        p = pub.get(t)
        row = {"trace": t, "gpuplane_100": round(g100, 2), "gpuplane_130": round(g130, 2),
               "fgd_measured_100": round(f100, 2), "fgd_measured_130": round(f130, 2),
               "fgd_published_100": p[0] if p else None, "fgd_published_130": p[1] if p else None,
               "gpuplane_min130": min(r["alloc_ratio"]["130"] for r in runs
                                      if r["trace"] == t and r["policy"] == "gpuplane"),
               "beats_published_130": bool(p and g130 > p[1])}
        rows.append(row)
        ps = f"{p[0]:14.2f} {p[1]:6.2f} | {g130 - p[1]:+13.2f}" if p else f"{'-':>14s} {'-':>6s} |"
        print(f"{t:11s} | {g100:13.2f} {g130:6.2f} | {f100:14.2f} {f130:6.2f} | {ps}")

    summary: dict = {"seeds": seeds, "rows": rows}
    if "default" in traces:
        g = cell("default", "gpuplane", "130")
        base = pub.get("default", (None, cell("default", "fgd", "130")))[1]
        cut = (g - base) / (100.0 - base)
        summary["default_unallocated_cut_vs_fgd_published"] = round(cut, 4)
        print(f"\ndefault @130: unallocated {100 - g:.2f} % vs FGD published {100 - base:.2f} % "
              f"-> cut {100 * cut:.1f} % of FGD's unallocated share")
        fgd_s = statistics.fmean(r["seconds"] for r in runs
                                 if r["trace"] == "default" and r["policy"] == "fgd")
        gp_s = statistics.fmean(r["seconds"] for r in runs
                                if r["trace"] == "default" and r["policy"] == "gpuplane")
        summary["default_seconds"] = {"gpuplane": round(gp_s, 3), "fgd": round(fgd_s, 3),
                                      "ratio": round(gp_s / fgd_s, 3)}
        print(f"speed (default, one seed, simulation only): gpuplane {gp_s:.2f} s, "
              f"fgd {fgd_s:.2f} s, ratio {gp_s / fgd_s:.2f}")
    summary["wall_seconds"] = round(time.perf_counter() - t_start, 1)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "openb_policy.json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
    png = plot(runs, traces, pub, out / "openb_policy.png")
    print(f"wrote {out / 'openb_policy.json'}" + (f" and {png}" if png else ""))
    return 0


def plot(runs: list[dict], traces: list[str], pub: dict, path: Path) -> Path | None:
    """Allocation vs arrival (70..130), mean over seeds, one panel per trace."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    xs = list(range(70, 131))
    fig, axes = plt.subplots(1, len(traces), figsize=(4 * len(traces), 3.6), squeeze=False)
    for ax, t in zip(axes[0], traces):
        for policy, style in (("gpuplane", "-"), ("fgd", "--")):
            rs = [r for r in runs if r["trace"] == t and r["policy"] == policy]
            ys = [statistics.fmean(r["alloc_ratio"][str(x)] for r in rs) for x in xs]
            ax.plot(xs, ys, style, label=f"{policy} (measured)")
        if t in pub:
            ax.scatter([100, 130], pub[t][:2], marker="x", color="k", label="FGD published", zorder=3)
        ax.set_title(t)
        ax.set_xlabel("arrived GPU demand, % of capacity")
        ax.set_ylim(85, 100)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("allocated GPU, %")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
