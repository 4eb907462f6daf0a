"""Placement as the ledger under contention: 1,000 claims by 8 concurrent gpuplane workers.

A fresh Placement 16.x on PostgreSQL (``scripts/openstack/placement.sh``, with
``allocation_conflict_retry_count = 1``; or ``--placement-url``) gets a fleet of ``--hosts``
hosts x 8 GPUs (5 whole, 2 shared, 1 MIG with seven ``1g.10gb``). ``--claims`` mixed requests
(1 or 2 whole GPUs of one host, a quarter or half of a shared GPU, a MIG instance;
``contention.mixed_requests``) are claimed by ``--workers`` workers, each planning on its own
view and learning about the others only from Placement's refusals
(``drivers/openstack/contention.py``); then, on a second fleet of the same shape, by one worker
(the baseline: same requests, no contention).

Checks, for each run: no provider's usage exceeds its capacity (zero over-allocation), and the
consumers the workers say they hold are exactly the consumers Placement holds, with the same
amounts. Prints a table with the ratio of claim rates (8 workers / 1) and writes
``benchmarks/results/placement_claims.json`` and a PNG of claims over time.

    .venv/bin/python benchmarks/placement_claims.py [--hosts 125] [--claims 1000]
        [--workers 8] [--placement-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from placement_sync import bar, console, start, stop
from rich.console import Console
from rich.table import Table

from gpuplane.drivers.openstack import claims, contention, tree
from gpuplane.drivers.openstack.model import ProviderState
from gpuplane.drivers.openstack.placement import PlacementClient
from gpuplane.drivers.openstack.sync import PlacementSync

ROOT = Path(__file__).resolve().parents[1]


def fleet(n: int, prefix: str) -> list[dict[str, Any]]:
    gpus: list[dict[str, Any]] = [{"index": i, "model": "H100-80GB", "numa": i // 4}
                                  for i in range(5)]
    gpus += [{"index": i, "model": "L40S", "mode": "shared", "numa": 1} for i in (5, 6)]
    gpus.append({"index": 7, "model": "A100-80GB", "mode": "mig", "numa": 1,
                 "mig_layout": [{"profile": "1g.10gb", "start": s} for s in range(7)]})
    return [{"name": f"{prefix}-{h:04d}", "cpu": 64, "memory": 524288, "gpus": gpus}
            for h in range(n)]


def run(url: str, label: str, desired: list[ProviderState], requests: list[dict[str, Any]],
        workers: int) -> dict[str, Any]:
    client = PlacementClient(url, timeout=120)
    PlacementSync(client, workers=4).sync(desired)
    times: list[float] = []
    lock = threading.Lock()
    t0 = time.perf_counter()

    prog, update = bar(f"{label}: {workers} worker(s)", len(requests))

    def on_claim() -> None:
        with lock:
            times.append(time.perf_counter() - t0)
            update(len(times), len(requests))

    with prog:
        report = contention.run_workers(url, "admin", desired, requests, workers=workers,
                                        on_claim=on_claim)
    gpus = [p for p in desired if p.kind == "gpu"]
    over = 0
    for p in gpus:
        used = client.provider_usages(p.uuid)
        over += sum(1 for rc, inv in p.inventories.items() if used.get(rc, 0) > inv.total)
    held = claims.observe_allocations(client, [p.uuid for p in gpus])
    agree = held == report.claimed
    for consumer in held:  # leave the Placement as we found it
        client.delete_allocations(consumer)
    PlacementSync(client).sync([])
    client.close()
    return {"workers": workers, "requests": len(requests), "claimed": len(report.claimed),
            "unplaced": report.unplaced, "replanned_409": report.replans,
            "seconds": round(report.seconds, 2),
            "claims_per_s": round(len(report.claimed) / report.seconds, 1),
            "over_allocated_providers": over, "workers_agree_with_placement": agree,
            "claim_times_s": [round(t, 3) for t in times]}


def plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("contended", "baseline"):
        r = results[key]
        ax.plot(r["claim_times_s"], range(1, len(r["claim_times_s"]) + 1),
                label=f"{r['workers']} worker(s): {r['claims_per_s']} claims/s")
    ax.set_xlabel("seconds")
    ax.set_ylabel("claims made")
    ax.set_title(f"Claims in Placement ({results['backend']}), {results['hosts']} hosts")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=125)
    ap.add_argument("--claims", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--db", default="postgresql", choices=("postgresql", "sqlite"))
    ap.add_argument("--placement-url", help="use this Placement instead of starting one")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "placement_claims.json")
    args = ap.parse_args()
    requests = contention.mixed_requests(args.claims, seed=42)
    results: dict[str, Any] = {"hosts": args.hosts, "gpus": args.hosts * 8,
                               "backend": "external" if args.placement_url else args.db,
                               "cpus": os.cpu_count(), "python": platform.python_version()}
    with tempfile.TemporaryDirectory(prefix="gpuplane-bench-claims-") as tmp:
        url = args.placement_url or start(args.db, Path(tmp))
        try:
            results["contended"] = run(url, "contended", tree.fleet_tree(
                fleet(args.hosts, "claims")), requests, args.workers)
            results["baseline"] = run(url, "baseline", tree.fleet_tree(
                fleet(args.hosts, "serial")), requests, 1)
        finally:
            if not args.placement_url:
                stop(args.db, Path(tmp))
    c, b = results["contended"], results["baseline"]
    results["ratio_claims_per_s_contended_over_serial"] = round(
        c["claims_per_s"] / b["claims_per_s"], 2)
    results["meets_zero_over_allocation"] = (c["over_allocated_providers"] == 0
                                             and c["workers_agree_with_placement"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    table = Table(title=f"{args.claims} requests on {args.hosts} hosts "
                        f"({results['gpus']} GPUs), Placement on {results['backend']}")
    for col in ("", f"{args.workers} workers", "1 worker"):
        table.add_column(col, justify="right")
    for key in ("claimed", "unplaced", "replanned_409", "seconds", "claims_per_s",
                "over_allocated_providers", "workers_agree_with_placement"):
        table.add_row(key, str(c[key]), str(b[key]))
    table.add_row("claim rate ratio", f"x{results['ratio_claims_per_s_contended_over_serial']}",
                  "x1")
    Console().print(table)
    console.print(f"written {args.out} and {args.out.with_suffix('.png').name}")


if __name__ == "__main__":
    main()
