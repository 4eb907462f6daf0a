"""Speed of topology-constrained gangs (placement.topology) against plain gangs, same process.

A synthetic cluster of ``--hosts`` hosts x 8 whole GPUs in racks of ``--rack-size`` hosts; each
host's GPUs form two NVLink domains of 4 (``h-0``, ``h-1``). It is filled at random (1-, 2- and
4-GPU tasks on random hosts and GPUs) to ``--fill`` of its GPUs. Then, on copies of that
snapshot, each gang below is placed ``--repeat`` times (trial, undone: the snapshot does not
change) with the ``bestfit`` profile:

* ``rack 4x8``     4 members of 8 GPUs inside one rack, required (vs the same gang anywhere)
* ``nvlink 2x2``   2 members of 2 GPUs inside one NVLink domain, required (vs anywhere)
* ``rack 41x8``    more hosts than a rack has: rejected by the capacity checks (vs anywhere,
  which places it)

Prints median and p99 milliseconds per gang and the ratio against the plain gang (``place_gang``
with the same members); writes JSON (``--out``).

    .venv/bin/python benchmarks/topology_speed.py [--hosts 10000] [--rack-size 40] [--fill 0.5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from gpuplane.domain.inventory import GpuDevice, Host
from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.scheduling.placement import place_gang, profiles
from gpuplane.scheduling.placement.topology import place_gang_within
from gpuplane.scheduling.snapshot import ClusterSnapshot

ROOT = Path(__file__).resolve().parents[1]


def cluster(n: int, rack_size: int, fill: float, rng: np.random.Generator) -> ClusterSnapshot:
    hosts = [Host(f"h{i:05d}", 128_000, 1_048_576, tuple(
        GpuDevice(g, "H100-80GB", mode="whole", nvlink_domain=f"h{i:05d}-{g // 4}")
        for g in range(8)), rack=f"r{i // rack_size:04d}") for i in range(n)]
    snap = ClusterSnapshot.build(hosts)
    target = int(fill * n * 8)
    used = 0
    while used < target:
        k = int(rng.choice([1, 2, 4]))
        h = int(rng.integers(n))
        free = np.flatnonzero(snap.gpu_free[h] >= 1000)
        if len(free) < k:
            continue
        gpus = tuple(int(x) for x in rng.choice(free, size=k, replace=False))
        snap.assign(TaskRequest(1000, 1024, gpus=k), Placement(snap.names[h], gpus, 1000))
        used += k
    snap.shuffle_tie_rank(rng)
    return snap


def timed(fn, repeat: int) -> tuple[list[float], object]:
    out = []
    res = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--rack-size", type=int, default=40)
    ap.add_argument("--fill", type=float, default=0.5)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "results" / "topology_speed.json"))
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()
    snap = cluster(a.hosts, a.rack_size, a.fill, rng)
    build_s = time.perf_counter() - t0
    prof = profiles.get("bestfit")
    cases = [("rack 4x8", "rack", [TaskRequest(8000, 65536, gpus=8)] * 4),
             ("nvlink 2x2", "nvlink", [TaskRequest(2000, 8192, gpus=2)] * 2),
             ("rack 41x8", "rack", [TaskRequest(8000, 65536, gpus=8)] * 41)]
    rows = []
    print(f"{a.hosts} hosts x 8 GPUs, racks of {a.rack_size}, {a.fill:.0%} of GPUs used "
          f"(built in {build_s:.1f} s); bestfit; ms per gang (trial, undone), {a.repeat} runs")
    for name, level, gang in cases:
        base = snap.copy()
        within = snap.copy()
        g = np.random.default_rng(0)
        plain_ms, plain = timed(lambda: place_gang(base, gang, prof, g), a.repeat)
        topo_ms, topo = timed(lambda: place_gang_within(within, gang, prof, g, level), a.repeat)
        assert within.state_equal(snap) and base.state_equal(snap)
        row = {"case": name, "placed": isinstance(topo, list),
               "plain_placed": isinstance(plain, list),
               "p50_ms": round(float(np.median(topo_ms)), 2),
               "p99_ms": round(float(np.percentile(topo_ms, 99)), 2),
               "plain_p50_ms": round(float(np.median(plain_ms)), 2),
               "ratio_p50": round(float(np.median(topo_ms) / np.median(plain_ms)), 2),
               "message": None if isinstance(topo, list) else str(topo)}
        rows.append(row)
        print(f"  {name:11s} placed={row['placed']!s:5s} p50 {row['p50_ms']:7.2f} ms "
              f"p99 {row['p99_ms']:7.2f} ms | plain gang p50 {row['plain_p50_ms']:7.2f} ms "
              f"(placed={row['plain_placed']}) -> x{row['ratio_p50']}")
        if row["message"]:
            print(f"    reason: {row['message']}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"hosts": a.hosts, "rack_size": a.rack_size,
                                       "fill": a.fill, "cases": rows}, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
