"""MIG placement quality and speed: gpuplane's MIG plugins against first-fit and random choice.

A fleet of H100-80GB GPUs in MIG mode receives a seeded stream of MIG requests (mixed profiles).
Two scenarios: ``fill`` (no departures, until the requests ask for 130 % of the fleet's compute
slices, as in the openb protocol) and ``churn`` (exponential lifetimes sized for a steady offered
load of 110 %, four fleets' worth of requests in all). Every policy sees the same stream in the
same process. Reported per policy: compute slices held at the end (% of the fleet), requests
refused, mean decision time, and the ratios against first-fit. ``gpuplane`` weighs every profile
alike; ``gpuplane-mix`` weighs them by the request mix learned online from the arrivals so far
(``profile_mix``, refreshed every 200 arrivals).

    .venv/bin/python benchmarks/mig_packing.py [--hosts 200] [--seeds 3] [--json results/mig_packing.json]

First-fit: lowest host, lowest GPU, a free instance if any, else the lowest creatable start (what
a scheduler without a layout model of its own would do). Random: a uniformly random feasible
(host, GPU, start). Both reuse free instances before creating, like gpuplane.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from gpuplane.domain.inventory import GpuDevice, Host
from gpuplane.domain.mig import (
    MigInstanceRef,
    MigLayout,
    creatable_starts,
    free_instances,
    get_profile,
    reclaim_options,
)
from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.scheduling.placement import Profile, place
from gpuplane.scheduling.placement.plugins.mig import mig_plugins, profile_mix
from gpuplane.scheduling.snapshot import ClusterSnapshot

POLICIES = ("first-fit", "random", "gpuplane", "gpuplane-mix")
MIX = {"1g.10gb": 0.35, "1g.20gb": 0.10, "2g.20gb": 0.20, "3g.40gb": 0.15, "4g.40gb": 0.10,
       "7g.80gb": 0.10}


def fleet(n_hosts: int) -> list[Host]:
    return [Host(name=f"h{i}", cpu_milli=10**6, memory_mib=10**7, gpus=tuple(
        GpuDevice(index=g, model="H100-80GB", mode="mig") for g in range(8)))
        for i in range(n_hosts)]


def stream(n_hosts: int, seed: int, scenario: str) -> list[tuple[str, float, float]]:
    """(profile, arrival, duration) for ``scenario`` ("fill" or "churn")."""
    rng = np.random.default_rng(seed)
    names, p = list(MIX), np.array(list(MIX.values()))
    p = p / p.sum()
    capacity = n_hosts * 8 * 7
    mean_slices = sum(pi * get_profile("H100-80GB", n).compute_slices for n, pi in zip(names, p))
    total = 1.3 if scenario == "fill" else 4.0
    life = np.inf if scenario == "fill" else 1.1 * capacity / mean_slices
    out, t, offered = [], 0.0, 0
    while offered < total * capacity:
        name = names[rng.choice(len(names), p=p)]
        t += rng.exponential(1.0)
        out.append((name, t, float(rng.exponential(life)) if np.isfinite(life) else np.inf))
        offered += get_profile("H100-80GB", name).compute_slices
    return out


def _candidates(snap: ClusterSnapshot, profile: str) -> list[tuple[int, MigInstanceRef]]:
    """Feasible choices in (host, GPU, start) order: free instances, else creatable starts,
    else starts that need idle instances destroyed (the same preference order as gpuplane)."""
    layouts = [(h, g, lay or MigLayout.empty("H100-80GB"))
               for (h, g), lay in sorted(snap.mig_layouts.items())]
    reuse = [(h, MigInstanceRef(g, profile, i.start))
             for h, g, lay in layouts for i in free_instances(lay, profile)]
    if reuse:
        return reuse
    create = [(h, MigInstanceRef(g, profile, s, created=True))
              for h, g, lay in layouts for s in creatable_starts(lay, profile)]
    if create:
        return create
    return [(h, MigInstanceRef(g, profile, s, created=True, reclaims=r))
            for h, g, lay in layouts for s, r in reclaim_options(lay, profile)]


def first_fit(snap, task, rng):
    c = _candidates(snap, task.mig_profile)
    return c[0] if c else None


def random_fit(snap, task, rng):
    c = _candidates(snap, task.mig_profile)
    return c[int(rng.integers(len(c)))] if c else None


def run(policy: str, n_hosts: int, seed: int, scenario: str) -> dict:
    snap = ClusterSnapshot.build(fleet(n_hosts))
    rng = np.random.default_rng(seed)
    def profile(weights=None) -> Profile:
        fit, pack, choose = mig_plugins(weights)
        return Profile(name="mig", filters=(fit,), scores=((pack, 1),), choosers=(choose,))

    prof = profile()
    seen: list[TaskRequest] = []
    running: list[tuple[float, TaskRequest, Placement]] = []
    refused = 0
    spent = 0.0
    requests = stream(n_hosts, seed, scenario)
    for name, t, dur in requests:
        running.sort(key=lambda r: r[0])
        while running and running[0][0] <= t:
            _end, task0, p0 = running.pop(0)
            snap.release(task0, p0)
        task = TaskRequest(cpu_milli=1, memory_mib=1, gpus=1, mig_profile=name)
        t0 = time.perf_counter()
        seen.append(task)
        if policy == "gpuplane-mix" and len(seen) % 200 == 1:  # learn the mix online
            prof = profile({k: round(v, 2) for k, v in profile_mix(seen).items()})
        if policy.startswith("gpuplane"):
            out = place(snap, task, prof, rng)
            p = out if isinstance(out, Placement) else None
        else:
            pick = (first_fit if policy == "first-fit" else random_fit)(snap, task, rng)
            p = None if pick is None else Placement(host=snap.names[pick[0]],
                                                    gpu_indices=(pick[1].gpu_index,),
                                                    mig=(pick[1],))
        spent += time.perf_counter() - t0
        if p is None:
            refused += 1
            continue
        snap.assign(task, p)
        running.append((t + dur, task, p))
    used = sum(get_profile("H100-80GB", i.profile).compute_slices
               for lay in snap.mig_layouts.values() if lay for i in lay.instances if i.occupied)
    n = len(requests)
    return {"policy": policy, "scenario": scenario, "seed": seed, "alloc_pct": 100.0 * used / (n_hosts * 8 * 7),
            "refused": refused, "requests": n, "ms_per_decision": 1000 * spent / n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", default="results/mig_packing.json")
    a = ap.parse_args()
    rows = [run(pol, a.hosts, 42 + s, sc) for sc in ("fill", "churn") for s in range(a.seeds)
            for pol in POLICIES]
    summary: dict[str, dict] = {}
    for sc in ("fill", "churn"):
        summary[sc] = {}
        for pol in POLICIES:
            rs = [r for r in rows if r["policy"] == pol and r["scenario"] == sc]
            summary[sc][pol] = {k: float(np.mean([r[k] for r in rs]))
                                for k in ("alloc_pct", "refused", "ms_per_decision")}
        base = summary[sc]["first-fit"]
        print(f"[{sc}] {a.hosts} hosts x 8 H100-80GB, {a.seeds} seed(s)")
        print(f"  {'policy':10} {'alloc %':>8} {'refused':>8} {'ms/dec':>8}  vs first-fit")
        for pol, r in summary[sc].items():
            print(f"  {pol:10} {r['alloc_pct']:8.2f} {r['refused']:8.1f} {r['ms_per_decision']:8.3f}"
                  f"  alloc x{r['alloc_pct'] / base['alloc_pct']:.3f}, refused "
                  f"{r['refused'] - base['refused']:+.1f}, time "
                  f"x{r['ms_per_decision'] / base['ms_per_decision']:.3f}")
    os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"hosts": a.hosts, "seeds": a.seeds, "mix": MIX, "rows": rows,
                   "summary": summary}, f, indent=1)
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
