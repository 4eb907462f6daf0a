"""What does the local driver's sandbox add to starting a task?

Scenario: one process, two ``LocalDriver``s on this host, one sandboxed (bubblewrap; as root
also ``setpriv`` to the project's uid) and one ``--unsandboxed``. ``--tasks`` trivial tasks
(``true``) are started alternately on each (so both see the same machine load), each with the
same CPU and memory request (so both create and remove the same cgroups when the host has
them), one at a time. Measured per task: ``start`` (the ``LocalDriver.start`` call: folders,
environment file, cgroups, spawning the runner) and ``start-to-exit`` (from the call until
the runner has written the exit code and ended, i.e. the whole life of an empty task).

Reported: p50/p95/max of both, the p95 ratio sandboxed/unsandboxed and the p95 milliseconds the
sandbox adds to start-to-exit. Target (issue 7): <= 50 ms p95.

Run: ``.venv/bin/python benchmarks/sandbox_start.py [--tasks 200]
[--out benchmarks/results/sandbox_start.json]`` (also writes the .png next to it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gpuplane.drivers.base import PlacedDevices, TaskSpec
from gpuplane.drivers.local import LocalDriver
from gpuplane.drivers.sandbox import find_bwrap


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def one(driver: LocalDriver, n: int) -> tuple[float, float]:
    spec = TaskSpec(task_id=f"bench.{n}", workload="bench", project="bench", project_id=1,
                    command=("true",), cpu_milli=1000, memory_mib=512)
    t0 = time.perf_counter()
    h = driver.start(spec, PlacedDevices(host="h1"))
    t1 = time.perf_counter()
    driver._children[h.task_id].wait()  # the runner: exits after writing the exit code
    t2 = time.perf_counter()
    code = int(Path(h.data["exit_file"]).read_text())
    if code != 0:
        raise SystemExit(f"task {n} exited {code}: {driver.read_logs(h)[0].decode()[-500:]}")
    driver.observe([h])
    driver.forget([h])
    return (t1 - t0) * 1000, (t2 - t0) * 1000


def summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(ms, 50), 2), "p95_ms": round(pct(ms, 95), 2),
            "max_ms": round(max(ms), 2), "mean_ms": round(statistics.fmean(ms), 2)}


def _plot(runs: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, what in zip(axes, ("start_ms", "start_to_exit_ms")):
        for mode, colour in (("unsandboxed", "tab:blue"), ("sandboxed", "tab:orange")):
            xs = sorted(runs[mode][what])
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=mode, color=colour)
        ax.axhline(0.95, color="grey", lw=0.5, ls="--")
        ax.set_xlabel(f"{what.replace('_ms', '').replace('_', ' ')} (ms)")
        ax.set_ylabel("fraction of tasks")
        ax.legend()
    fig.suptitle("local driver: task start with and without the bubblewrap sandbox")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=200, help="tasks per mode")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sandbox_start.json"))
    args = ap.parse_args()
    console = Console()
    if find_bwrap() is None:
        raise SystemExit("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    with tempfile.TemporaryDirectory(prefix="gpuplane-sbx-bench-") as tmp:
        drivers = {"sandboxed": LocalDriver(Path(tmp, "a"), host="h1"),
                   "unsandboxed": LocalDriver(Path(tmp, "b"), host="h1", unsandboxed=True)}
        if drivers["sandboxed"].mode != "bwrap":
            raise SystemExit(f"no sandbox: {drivers['sandboxed'].notes}")
        runs = {m: {"start_ms": [], "start_to_exit_ms": []} for m in drivers}
        for m, d in drivers.items():  # warm-up (imports, page cache)
            for i in range(5):
                one(d, -1 - i)
        with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            bar = progress.add_task("starting tasks", total=2 * args.tasks)
            for n in range(args.tasks):
                for m in (("sandboxed", "unsandboxed") if n % 2 else ("unsandboxed", "sandboxed")):
                    s, e = one(drivers[m], n)
                    runs[m]["start_ms"].append(s)
                    runs[m]["start_to_exit_ms"].append(e)
                    progress.advance(bar)
        cg = drivers["sandboxed"].cgroups.mode
    stats = {m: {k: summary(v) for k, v in r.items()} for m, r in runs.items()}
    sb, un = stats["sandboxed"]["start_to_exit_ms"], stats["unsandboxed"]["start_to_exit_ms"]
    added_p95 = round(sb["p95_ms"] - un["p95_ms"], 2)
    ratio = round(sb["p95_ms"] / un["p95_ms"], 2) if un["p95_ms"] else None
    table = Table(title=f"{args.tasks} tasks per mode (`true`), cgroups {cg}, "
                        f"uid drop {'yes' if os.geteuid() == 0 else 'no'}")
    for col in ("mode", "measure", "p50 ms", "p95 ms", "max ms"):
        table.add_column(col)
    for m, per in stats.items():
        for what, s in per.items():
            table.add_row(m, what.replace("_ms", ""), f"{s['p50_ms']:.1f}", f"{s['p95_ms']:.1f}",
                          f"{s['max_ms']:.1f}")
    console.print(table)
    verdict = "OK" if added_p95 <= 50 else "OVER TARGET"
    console.print(f"start-to-exit p95: sandboxed/unsandboxed = {ratio}x, sandbox adds "
                  f"{added_p95} ms (target <= 50 ms: {verdict})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "tasks_per_mode": args.tasks, "cgroups": cg, "as_root": os.geteuid() == 0,
        "python": sys.version.split()[0], "platform": platform.platform(),
        "cpus": os.cpu_count(), "stats": stats, "p95_ratio": ratio,
        "p95_added_ms": added_p95, "target_added_p95_ms": 50, "verdict": verdict,
        "samples": runs}, indent=1) + "\n")
    png = args.out.with_suffix(".png")
    _plot(runs, png)
    console.print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
