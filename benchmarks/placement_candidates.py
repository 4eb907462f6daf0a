"""gpuplane's candidate search against Placement's ``GET /allocation_candidates``, side by side.

A fleet of ``--hosts`` hosts x ``--numa`` NUMA nodes x ``--gpus-per-numa`` whole GPUs (1,000 x
2 x 2 = 7,000 providers), four sites, is synced into a fresh Placement 16.x on SQLite
(``scripts/openstack/placement.sh``; or ``--placement-url``). Every host then gets one consumer
holding some of its memory, a different amount on each host (as VMs or tasks leave it in a
real cloud), and on ``--used`` of the hosts one or two of its GPUs. Two requests:

* ``numa``, the figure: two GPUs on one NUMA node, ``resources_G1=VGPU:1&resources_G2=VGPU:1
  &required_NUMA=HW_NUMA_ROOT&same_subtree=_G1,_G2,_NUMA&group_policy=isolate``;
* ``numa+memory``: the same and ``resources=MEMORY_MB:4096`` from the host, where no two
  roots hold the same usage.

Placement answers each ``--placement-reps`` times (wall time of the GET, JSON included);
gpuplane builds its index once from the fleet and the claims it made
(``drivers/openstack/candidates.py``) and answers ``--gpuplane-reps`` times. The answers are
compared: a random sample of ``--sample`` candidates each way, and the full sets. Prints a
table with the ratios (Placement median / gpuplane median), writes
``benchmarks/results/placement_candidates.json`` and a PNG beside it.

    .venv/bin/python benchmarks/placement_candidates.py [--hosts 1000] [--numa 2]
        [--gpus-per-numa 2] [--used 0.5] [--placement-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from placement_sync import bar, console, start, stop
from rich.console import Console
from rich.table import Table

from gpuplane.drivers.openstack import tree
from gpuplane.drivers.openstack.candidates import (
    AllocationRequest,
    CandidateIndex,
    candidates,
    parse_request,
)
from gpuplane.drivers.openstack.model import ProviderState
from gpuplane.drivers.openstack.placement import PlacementClient
from gpuplane.drivers.openstack.sync import PlacementSync

ROOT = Path(__file__).resolve().parents[1]
MARKER = "CUSTOM_GPUPLANE_BENCH_CANDIDATES"
NUMA = {"resources_G1": "VGPU:1", "resources_G2": "VGPU:1", "required_NUMA": "HW_NUMA_ROOT",
        "same_subtree": "_G1,_G2,_NUMA", "group_policy": "isolate"}
QUERIES = {"numa": NUMA, "numa+memory": {**NUMA, "resources": "MEMORY_MB:4096"}}


def fleet(hosts: int, numa: int, per_numa: int) -> list[dict[str, Any]]:
    return [{"name": f"cand-{h:04d}", "site": f"site-{h % 4}", "cpu": 64, "memory": "512Gi",
             "gpus": [{"index": g, "model": "H100-80GB", "memory_mib": 81920,
                       "numa": g // per_numa, "mode": "whole"}
                      for g in range(numa * per_numa)]}
            for h in range(hosts)]


def claim(client: PlacementClient, desired: list[ProviderState], used: float, seed: int,
          workers: int) -> tuple[list[str], dict[str, dict[str, int]]]:
    """One consumer per host: memory (1,024 MiB + 7 x the host's number) and, on ``used`` of
    the hosts, one or two random GPUs; returns the consumers and the usages (provider uuid ->
    class -> amount) they hold."""
    rng = random.Random(seed)
    gpus: dict[str, list[str]] = {}
    for p in desired:
        if p.kind == "gpu":
            gpus.setdefault(p.parent_uuid or "", []).append(p.uuid)
    hosts = [p for p in desired if p.kind == "host"]
    numa_root = {p.uuid: p.parent_uuid for p in desired if p.kind == "numa"}
    claims: list[dict[str, dict[str, int]]] = [{h.uuid: {"MEMORY_MB": 1024 + 7 * i}}
                                               for i, h in enumerate(hosts)]
    at = {h.uuid: i for i, h in enumerate(hosts)}
    for numa, uuids in sorted(gpus.items()):
        if rng.random() < used / 2:  # two NUMA nodes a host: about ``used`` of the hosts
            claims[at[numa_root[numa] or ""]].update(
                {rp: {"VGPU": 1} for rp in rng.sample(uuids, rng.choice((1, 2)))})
    consumers = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in claims]
    prog, update = bar("claiming             ", len(claims))

    def one(consumer: str, allocations: dict[str, dict[str, int]]) -> None:
        client.put_allocations(consumer, allocations, project_id="bench", user_id="bench",
                               consumer_generation=None)

    with prog, ThreadPoolExecutor(workers) as pool:
        for done, _ in enumerate(pool.map(one, consumers, claims), 1):
            update(done, len(claims))
    return consumers, {rp: res for c in claims for rp, res in c.items()}


def timed(fn: Callable[[], Any], reps: int) -> tuple[list[float], Any]:
    times, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def ms(times: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(times) * 1000, 2),
            "min_ms": round(min(times) * 1000, 2), "max_ms": round(max(times) * 1000, 2)}


def compare(name: str, placement_times: list[float], answer: Any, index: CandidateIndex,
            ours: set[str], args: argparse.Namespace) -> dict[str, Any]:
    """Time gpuplane on one request and compare its answer with Placement's."""
    theirs = {AllocationRequest.from_json(a) for a in answer.allocation_requests
              if ours.issuperset(a["allocations"])}
    request = parse_request(QUERIES[name])
    gpuplane_times, found = timed(lambda: candidates(index, request), args.gpuplane_reps)
    mine = set(found)
    rng = random.Random(args.seed)
    sample_theirs = rng.sample(sorted(theirs), min(args.sample, len(theirs)))
    sample_mine = rng.sample(sorted(mine), min(args.sample, len(mine)))
    out: dict[str, Any] = {
        "request": QUERIES[name], "placement": ms(placement_times),
        "gpuplane": ms(gpuplane_times),
        "placement_times_ms": [round(t * 1000, 1) for t in placement_times],
        "gpuplane_times_ms": [round(t * 1000, 2) for t in gpuplane_times],
        "candidates_placement": len(theirs), "candidates_gpuplane": len(found),
        "sample": len(sample_theirs) + len(sample_mine),
        "sample_equal": (all(c in mine for c in sample_theirs)
                         and all(c in theirs for c in sample_mine)),
        "full_sets_equal": mine == theirs and len(mine) == len(found)}
    out["ratio_placement_over_gpuplane"] = round(
        out["placement"]["median_ms"] / out["gpuplane"]["median_ms"], 1)
    return out


def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    desired = tree.fleet_tree(fleet(args.hosts, args.numa, args.gpus_per_numa), marker=MARKER)
    out: dict[str, Any] = {"providers": len(desired)}
    answers: dict[str, tuple[list[float], Any]] = {}
    with PlacementClient(url, timeout=600, max_connections=args.workers * 2) as client:
        prog, update = bar("syncing the fleet    ", args.hosts)
        with prog:
            report = PlacementSync(client, marker=MARKER, workers=args.workers).sync(
                desired, progress=update)
        out["sync_s"] = round(report.seconds, 1)
        consumers, usages = claim(client, desired, args.used, args.seed, args.workers)
        out["gpus_claimed"] = sum(1 for used in usages.values() if "VGPU" in used)
        for name, query in QUERIES.items():
            answers[name] = timed(partial(client.allocation_candidates, query),
                                  args.placement_reps)
        if args.placement_url:  # leave someone else's Placement as we found it
            with ThreadPoolExecutor(args.workers) as pool:
                list(pool.map(client.delete_allocations, consumers))
            PlacementSync(client, marker=MARKER, workers=args.workers).sync([])
            client.delete_trait(MARKER)
    t0 = time.perf_counter()
    index = CandidateIndex(desired, usages)
    out["index_build_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    out["tree_classes"] = len(index.trees)
    ours = {p.uuid for p in desired}
    out["requests"] = {name: compare(name, times, answer, index, ours, args)
                       for name, (times, answer) in answers.items()}
    out["meets_10x"] = all(r["ratio_placement_over_gpuplane"] >= 10 and r["sample_equal"]
                           for r in out["requests"].values())
    return out


def plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["requests"])
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    for k, (who, color) in enumerate((("placement", "#888888"), ("gpuplane", "#2a7ab0"))):
        values = [results["requests"][n][who]["median_ms"] for n in names]
        bars = ax.bar([i + (k - 0.5) * width for i in range(len(names))], values, width,
                      color=color, label="Placement GET /allocation_candidates"
                      if who == "placement" else "gpuplane candidates()")
        ax.bar_label(bars, labels=[f"{v:g} ms" for v in values])
    ax.set_xticks(range(len(names)),
                  [f"{n}\n{results['requests'][n]['candidates_placement']:,} candidates, "
                   f"x{results['requests'][n]['ratio_placement_over_gpuplane']}" for n in names])
    ax.set_yscale("log")
    ax.set_ylim(top=10 * max(r["placement"]["median_ms"] for r in results["requests"].values()))
    ax.set_ylabel("median time per request (ms, log)")
    ax.set_title(f"{results['providers']:,} providers ({results['hosts']:,} hosts), "
                 f"Placement on {results['backend']}")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--numa", type=int, default=2)
    ap.add_argument("--gpus-per-numa", type=int, default=2)
    ap.add_argument("--used", type=float, default=0.5,
                    help="share of hosts with a consumer holding 1 or 2 of their GPUs")
    ap.add_argument("--placement-reps", type=int, default=3)
    ap.add_argument("--gpuplane-reps", type=int, default=50)
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--placement-url", help="use this Placement instead of starting one "
                    "(its other providers are left out of the comparison, not of the timing)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results"
                    / "placement_candidates.json")
    args = ap.parse_args()
    results: dict[str, Any] = {"hosts": args.hosts, "numa_per_host": args.numa,
                               "gpus_per_numa": args.gpus_per_numa, "used": args.used,
                               "cpus": os.cpu_count(),
                               "python": platform.python_version(),
                               "backend": "external" if args.placement_url else "sqlite"}
    with tempfile.TemporaryDirectory(prefix="gpuplane-bench-candidates-") as tmp:
        url = args.placement_url or start("sqlite", Path(tmp))
        try:
            results.update(run(url, args))
        finally:
            if not args.placement_url:
                stop("sqlite", Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    table = Table(title=f"{results['providers']:,} providers, {results['gpus_claimed']} GPUs "
                        f"claimed, Placement on {results['backend']}")
    table.add_column("")
    for name in results["requests"]:
        table.add_column(name, justify="right")
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("Placement GET, median (min-max)",
         lambda r: f"{r['placement']['median_ms']:g} ms ({r['placement']['min_ms']:g}-"
                   f"{r['placement']['max_ms']:g})"),
        ("gpuplane candidates(), median (min-max)",
         lambda r: f"{r['gpuplane']['median_ms']:g} ms ({r['gpuplane']['min_ms']:g}-"
                   f"{r['gpuplane']['max_ms']:g})"),
        ("ratio Placement / gpuplane", lambda r: f"x{r['ratio_placement_over_gpuplane']}"),
        ("candidates Placement / gpuplane",
         lambda r: f"{r['candidates_placement']} / {r['candidates_gpuplane']}"),
        ("sample equal", lambda r: f"{r['sample_equal']} ({r['sample']})"),
        ("full sets equal", lambda r: str(r["full_sets_equal"])),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(r) for r in results["requests"].values()))
    table.caption = (f"index build {results['index_build_ms']} ms, "
                     f"{results['tree_classes']} classes of identical trees")
    Console().print(table)
    console.print(f"written {args.out} and {args.out.with_suffix('.png').name}")


if __name__ == "__main__":
    main()
