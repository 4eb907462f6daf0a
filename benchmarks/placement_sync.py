"""Inventory sync into a real OpenStack Placement: a 200-host fleet, first and second sync.

A synthetic fleet of ``--hosts`` hosts x 8 GPUs on two NUMA nodes, four sites (2,200 providers
for 200 hosts): every fifth host has its GPUs in MIG mode (four layouts), every fifth shared
(time-sliced), the rest whole; some hosts have a TEE. For each backend (``--db``) a fresh
Placement 16.x is started with ``scripts/openstack/placement.sh`` (or ``--placement-url`` is
used) and:

* **gpuplane** (``PlacementSync``: diff, reshaper batch per host, ``--workers`` threads) syncs
  the fleet: first sync (target <= 60 s), second sync on the same object (target 0 writes),
  a cold second sync with a new object (no memory of generations: reads everything), a check;
* **naive** baseline, same process, same thread pool, on the same fleet under other host names:
  for every provider GET it (POST when missing), then PUT its inventories, traits and (roots)
  aggregates unconditionally, one request per write; run twice.

Prints a table with the ratios naive / gpuplane and writes JSON
(``benchmarks/results/placement_sync.json``).

    .venv/bin/python benchmarks/placement_sync.py [--hosts 200] [--db sqlite,postgresql]
        [--workers 4] [--placement-url URL] [--no-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gpuplane.drivers.openstack import tree
from gpuplane.drivers.openstack.model import ProviderState
from gpuplane.drivers.openstack.placement import PlacementClient
from gpuplane.drivers.openstack.sync import PlacementSync

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "openstack" / "placement.sh"
MODELS = ("H100-80GB", "A100-80GB", "H200", "L40S")
MIG_LAYOUTS = (
    [("1g.10gb", s) for s in range(7)],
    [("3g.40gb", 0), ("3g.40gb", 4)],
    [("7g.80gb", 0)],
    [("4g.40gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)],
)
console = Console(stderr=True)


def fleet(n: int, prefix: str = "bench") -> list[dict[str, Any]]:
    hosts = []
    for i in range(n):
        mode = "mig" if i % 5 == 0 else "shared" if i % 5 == 1 else "whole"
        model = "H100-80GB" if mode == "mig" else MODELS[i % len(MODELS)]
        gpus = []
        for g in range(8):
            gpu: dict[str, Any] = {"index": g, "model": model, "memory_mib": 81920,
                                   "numa": g // 4, "mode": mode}
            if mode == "mig":
                gpu["mig_layout"] = [{"profile": p, "start": s}
                                     for p, s in MIG_LAYOUTS[(i + g) % len(MIG_LAYOUTS)]]
            gpus.append(gpu)
        hosts.append({"name": f"{prefix}-{i:04d}", "site": f"site-{i % 4}", "cpu": 112,
                      "memory": "1Ti", "tee": ("sev-snp", "tdx", None)[i % 3], "gpus": gpus})
    return hosts


# -- the naive baseline ----------------------------------------------------------------------
def naive_sync(client: PlacementClient, desired: Sequence[ProviderState], workers: int,
               progress: Callable[[], None]) -> None:
    """Unconditional: every provider's inventories, traits and aggregates PUT every time."""
    for t in sorted({t for p in desired for t in p.traits if t.startswith("CUSTOM_")}):
        client.ensure_trait(t)
    for rc in sorted({rc for p in desired for rc in p.inventories if rc.startswith("CUSTOM_")}):
        client.ensure_resource_class(rc)
    trees: list[list[ProviderState]] = []
    for p in desired:
        if p.parent_uuid is None:
            trees.append([])
        trees[-1].append(p)

    def one(host: list[ProviderState]) -> None:
        for p in host:
            rp = client.get_resource_provider(p.uuid)
            if rp is None:
                rp = client.create_resource_provider(p.name, p.uuid, p.parent_uuid)
            gen = client.set_inventories(p.uuid, rp.generation, p.inventories)
            gen = client.set_provider_traits(p.uuid, gen, p.traits)
            if p.parent_uuid is None:
                client.set_aggregates(p.uuid, gen, p.aggregates)
        progress()

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, trees))


# -- running ---------------------------------------------------------------------------------
def start(db: str, state: Path) -> str:
    proc = subprocess.run([str(SCRIPT), "start", "--db", db, "--state", str(state)],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"placement.sh start --db {db} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def stop(db: str, state: Path) -> None:
    subprocess.run([str(SCRIPT), "stop", "--db", db, "--state", str(state)],
                   capture_output=True, timeout=120)


def bar(label: str, total: int) -> tuple[Progress, Callable[[int, int], None]]:
    prog = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)
    task = prog.add_task(label, total=total)
    return prog, lambda done, _total: prog.update(task, completed=done)


def timed_sync(label: str, syncer: PlacementSync, desired: Sequence[ProviderState],
               hosts: int) -> dict[str, Any]:
    prog, update = bar(label, hosts)
    with prog:
        report = syncer.sync(desired, progress=update)
    if report.problems:
        console.print(f"[red]{label}: {len(report.problems)} problems[/], e.g. "
                      f"{report.problems[0]}")
    return {"s": round(report.seconds, 3), "writes": report.writes, "reads": report.reads,
            "providers": report.providers, "drift": report.drift,
            "problems": len(report.problems), "reshaped": report.reshaped}


def run_backend(url: str, hosts: int, workers: int, baseline: bool) -> dict[str, Any]:
    ours_fleet = tree.fleet_tree(fleet(hosts, "bench"))
    out: dict[str, Any] = {"providers": len(ours_fleet)}
    with PlacementClient(url, max_connections=workers * 2) as client:
        syncer = PlacementSync(client, workers=workers)
        out["first"] = timed_sync("gpuplane first sync ", syncer, ours_fleet, hosts)
        out["second"] = timed_sync("gpuplane second sync", syncer, ours_fleet, hosts)
        cold = PlacementSync(client, workers=workers)
        out["second_cold"] = timed_sync("gpuplane cold sync  ", cold, ours_fleet, hosts)
        t0 = time.perf_counter()
        check = PlacementSync(client, workers=workers).check(ours_fleet)
        out["check"] = {"s": round(time.perf_counter() - t0, 3), "drift": check.drift,
                        "reads": check.reads}
        if baseline:
            naive_fleet = tree.fleet_tree(fleet(hosts, "naive"), marker="CUSTOM_GPUPLANE_NAIVE")
            for run in ("naive_first", "naive_second"):
                w0, r0, t0 = client.writes, client.reads, time.perf_counter()
                prog, update = bar(run.replace("_", " ").ljust(20), hosts)
                done = [0]

                def tick() -> None:
                    done[0] += 1
                    update(done[0], hosts)

                with prog:
                    naive_sync(client, naive_fleet, workers, tick)
                out[run] = {"s": round(time.perf_counter() - t0, 3),
                            "writes": client.writes - w0, "reads": client.reads - r0}
            out["ratios"] = {
                "first_time_naive_over_gpuplane": round(out["naive_first"]["s"]
                                                        / out["first"]["s"], 2),
                "first_writes_naive_over_gpuplane": round(out["naive_first"]["writes"]
                                                          / out["first"]["writes"], 2),
                "second_time_naive_over_gpuplane": round(out["naive_second"]["s"]
                                                         / max(out["second"]["s"], 1e-3), 1),
                "second_time_naive_over_gpuplane_cold": round(
                    out["naive_second"]["s"] / out["second_cold"]["s"], 2),
                "second_writes": [out["naive_second"]["writes"], out["second"]["writes"]],
            }
    out["meets_first_sync_60s"] = out["first"]["s"] <= 60.0
    out["meets_second_sync_zero_writes"] = (out["second"]["writes"] == 0
                                            and out["second_cold"]["writes"] == 0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--db", default="sqlite,postgresql",
                    help="comma-separated backends to start: sqlite, postgresql")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--placement-url", help="use this Placement instead of starting one")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results"
                    / "placement_sync.json")
    args = ap.parse_args()
    backends = ["external"] if args.placement_url else args.db.split(",")
    results: dict[str, Any] = {
        "hosts": args.hosts, "gpus": args.hosts * 8,
        "mig_gpus": sum(8 for i in range(args.hosts) if i % 5 == 0),
        "workers": args.workers, "cpus": os.cpu_count(), "python": platform.python_version(),
        "backends": {}}
    for db in backends:
        console.rule(f"Placement on {db}")
        with tempfile.TemporaryDirectory(prefix=f"gpuplane-bench-{db}-") as tmp:
            url = args.placement_url or start(db, Path(tmp))
            try:
                results["backends"][db] = run_backend(url, args.hosts, args.workers,
                                                      not args.no_baseline)
            finally:
                if not args.placement_url:
                    stop(db, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    table = Table(title=f"{args.hosts} hosts, {results['gpus']} GPUs "
                        f"({results['mig_gpus']} in MIG mode), {args.workers} workers")
    table.add_column("")
    for db in results["backends"]:
        table.add_column(db, justify="right")
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("providers", lambda r: str(r["providers"])),
        ("first sync", lambda r: f"{r['first']['s']:.1f} s, {r['first']['writes']} writes"),
        ("second sync (same object)",
         lambda r: f"{r['second']['s']:.2f} s, {r['second']['writes']} writes"),
        ("second sync (cold)",
         lambda r: f"{r['second_cold']['s']:.1f} s, {r['second_cold']['writes']} writes"),
        ("check: drift", lambda r: str(r["check"]["drift"])),
        ("naive first", lambda r: f"{r['naive_first']['s']:.1f} s, "
                                  f"{r['naive_first']['writes']} writes"
         if "naive_first" in r else "-"),
        ("naive second", lambda r: f"{r['naive_second']['s']:.1f} s, "
                                   f"{r['naive_second']['writes']} writes"
         if "naive_second" in r else "-"),
        ("naive/gpuplane first: time, writes",
         lambda r: f"x{r['ratios']['first_time_naive_over_gpuplane']}, "
                   f"x{r['ratios']['first_writes_naive_over_gpuplane']}"
         if "ratios" in r else "-"),
        ("naive/gpuplane second: time (cold)",
         lambda r: f"x{r['ratios']['second_time_naive_over_gpuplane']:g} "
                   f"(x{r['ratios']['second_time_naive_over_gpuplane_cold']})"
         if "ratios" in r else "-"),
        ("first sync <= 60 s", lambda r: "yes" if r["meets_first_sync_60s"] else "NO"),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(r) for r in results["backends"].values()))
    Console().print(table)
    console.print(f"written {args.out}")


if __name__ == "__main__":
    main()
