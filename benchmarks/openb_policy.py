"""Our default policy ``gpuplane`` against the faithful ``fgd`` baseline on openb.

Runs both policies over the five openb pod lists and seeds 42..51 (or ``--seeds``)
in one process, through the same engine and simulator as ``gpuplane sim openb``
(FGD_PROTOCOL: tuning 1.3, seeded tie rank, integer KPI discretisation). ``gpuplane`` runs
with both target distributions (``--distributions``): ``online`` (what the live control plane
does: learned from the pods as they arrive, ``sim openb``'s default) and ``trace`` (the pod
list's own, as FGD's paper gives FGD). ``fgd`` always gets the trace's. Prints

    trace | gpuplane online @100 @130 | gpuplane trace @100 @130 | fgd measured @100 @130
          | FGD published @100 @130 | online - published @130

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
#: (label, policy, distribution) of each column group
RUNS = (("online", "gpuplane", "online"), ("trace", "gpuplane", "trace"), ("fgd", "fgd", "trace"))


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
    ap.add_argument("--distributions", default="online,trace",
                    help="gpuplane's distributions to run: online, trace or both")
    a = ap.parse_args(argv)
    dists = [d for d in a.distributions.split(",") if d]
    runs_spec = [r for r in RUNS if r[0] == "fgd" or r[0] in dists]
    labels = [r[0] for r in runs_spec]
    seeds = parse_seeds(a.seeds)
    traces = [t for t in a.traces.split(",") if t]
    data = Path(a.data)
    pub = published(Path(a.published))
    hosts = read_nodes(data / "openb_node_list_gpu_node.csv")

    runs: list[dict] = []
    t_start = time.perf_counter()
    for trace in traces:
        pods = read_pods(data / f"openb_pod_list_{trace}.csv")
        for label, policy, dist in runs_spec:
            for seed in seeds:
                r = run_experiment(hosts, pods, policy, seed, frag=False, distribution=dist)
                runs.append({"trace": trace, "policy": label, "distribution": dist,
                             "seed": seed, "alloc_ratio": r.alloc_ratio,
                             "failed_pods": r.failed_pods, "seconds": r.seconds})
                print(f"  {trace:11s} {label:9s} seed {seed}: @100 {r.alloc_ratio['100']:6.2f} "
                      f"@130 {r.alloc_ratio['130']:6.2f}  {r.seconds:5.2f} s",
                      file=sys.stderr, flush=True)

    def cell(trace: str, policy: str, col: str) -> float:
        return statistics.fmean(r["alloc_ratio"][col] for r in runs
                                if r["trace"] == trace and r["policy"] == policy)

    rows = []
    names = {"online": "gpuplane online", "trace": "gpuplane trace", "fgd": "fgd measured"}
    head = f"{'trace':11s} | " + " | ".join(f"{names[x] + ' @100':>20s} {'@130':>6s}"
                                            for x in labels)
    head += f" | {'FGD publ. @100':>14s} {'@130':>6s} | {'d130 ' + labels[0] + ' vs publ.':>20s}"
    print(f"\nseeds {seeds[0]}..{seeds[-1]} ({len(seeds)}), mean allocation % of GPU milli")
    print(head)
    print("-" * len(head))
    for t in traces:
        p = pub.get(t)
        row: dict = {"trace": t}
        line = f"{t:11s} | "
        for x in labels:
            row[f"{x}_100"] = round(cell(t, x, "100"), 2)
            row[f"{x}_130"] = round(cell(t, x, "130"), 2)
            row[f"{x}_min130"] = min(r["alloc_ratio"]["130"] for r in runs
                                     if r["trace"] == t and r["policy"] == x)
            line += f"{row[x + '_100']:20.2f} {row[x + '_130']:6.2f} | "
        row["fgd_published_100"], row["fgd_published_130"] = (p[0], p[1]) if p else (None, None)
        for x in labels:
            if x != "fgd":
                row[f"{x}_beats_published_130"] = bool(p and row[f"{x}_130"] > p[1])
        rows.append(row)
        first = row[f"{labels[0]}_130"]
        line += (f"{p[0]:14.2f} {p[1]:6.2f} | {first - p[1]:+20.2f}" if p
                 else f"{'-':>14s} {'-':>6s} |")
        print(line)

    summary: dict = {"seeds": seeds, "rows": rows}
    if "default" in traces:
        g = cell("default", labels[0], "130")
        base = pub.get("default", (None, cell("default", "fgd", "130")))[1]
        cut = (g - base) / (100.0 - base)
        summary["default_unallocated_cut_vs_fgd_published"] = round(cut, 4)
        print(f"\ndefault @130: unallocated {100 - g:.2f} % vs FGD published {100 - base:.2f} % "
              f"-> cut {100 * cut:.1f} % of FGD's unallocated share")
        fgd_s = statistics.fmean(r["seconds"] for r in runs
                                 if r["trace"] == "default" and r["policy"] == "fgd")
        summary["default_seconds"] = {"fgd": round(fgd_s, 3)}
        for x in labels[:-1]:
            gp_s = statistics.fmean(r["seconds"] for r in runs
                                    if r["trace"] == "default" and r["policy"] == x)
            summary["default_seconds"][x] = round(gp_s, 3)
            print(f"speed (default, one seed, simulation only): gpuplane {x} {gp_s:.2f} s, "
                  f"fgd {fgd_s:.2f} s, ratio {gp_s / fgd_s:.2f}")
    summary["wall_seconds"] = round(time.perf_counter() - t_start, 1)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "openb_policy.json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
    png = plot(runs, traces, pub, out / "openb_policy.png", labels)
    print(f"wrote {out / 'openb_policy.json'}" + (f" and {png}" if png else ""))
    return 0


def plot(runs: list[dict], traces: list[str], pub: dict, path: Path,
         labels: list[str]) -> Path | None:
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
        styles = {"online": "-", "trace": ":", "fgd": "--"}
        for label in labels:
            rs = [r for r in runs if r["trace"] == t and r["policy"] == label]
            ys = [statistics.fmean(r["alloc_ratio"][str(x)] for r in rs) for x in xs]
            name = "fgd" if label == "fgd" else f"gpuplane {label}"
            ax.plot(xs, ys, styles[label], label=f"{name} (measured)")
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
