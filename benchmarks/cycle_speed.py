"""How fast is one scheduling cycle at scale? (1,000 projects, 100,000 pending tasks, 10,000 hosts)

Scenario (seeded): 10,000 hosts of 8 whole GPUs (80,000 GPUs); 1,000 projects in 10
organisations and 10 cohorts, each guaranteed 80 GPUs; steady state: each project runs its
guarantee minus a slack of -2..6 GPUs (negative = borrowing), so ~2.5 % of GPUs are free and
some owners are entitled to reclaim; 100,000 pending single-task workloads (70 % 1 GPU, 15 %
2, 10 % 4, 5 % 8) from the 1,000 projects, plus priorities 0/1. One ``run_cycle`` (quota,
cohort borrowing and reclaim preemption, DRF fair share, backfill, placement through the
``bestfit`` profile on the snapshot) is timed cold, including building the cycle state from the
running tasks; the pending queues are built before (a caller keeps them between cycles, as the
simulator does). The figure is **admissions per second**: workloads the cycle actually started
(``len(result.placements)``), divided by the cycle's time -- not "decisions", which would count
the shared ``queue.behind_head`` labels of work the cycle never examined. Explanations are in the
cheap mode (``explain_all=False``) the control loop and the simulator use.

Baseline, the same cycle on an identical copy of the inputs with its indexes and memos turned
off (``CycleOptions(indexes=False)``: no free-GPU count to skip ``place``, no project fast path,
no quota/preemption memos; ``lookahead`` still bounds each project's blocked workloads). The
ratio is the indexed cycle's admissions/s over the unindexed one's. (The two may admit a few
different workloads: the memos are approximations, see docs/sharing.md.) A third run times the
indexed cycle with every ``place`` through the general plugin path (``place(..., fast=False)``):
what the exact placement fast path for whole-GPU tasks buys (the decisions are the same).

Published figures, for scale (not like-for-like: they include an API server and real objects):
kube-scheduler's own benchmark (``scheduler_perf`` ``SchedulingThroughput``) reports a few hundred
to ~900 pods/s on 500 nodes (e.g. 333 and 909 pods/s in runs posted for kubernetes PRs in 2020,
gist.github.com/alculquicondor), and the 5,000-node density test ran at about 30 pods/s
(kubernetes/kubernetes#56714, "~300 pods per 10s"). Kueue's MultiKueue benchmark admits about
1.3 workloads/s, bounded by client rate limits (kubernetes-sigs/kueue#8564); its large-scale test
(60k workloads, 2k ClusterQueues) ran 1,405 s against a 900 s budget (kubernetes-sigs/kueue#11004).

Run: ``.venv/bin/python benchmarks/cycle_speed.py [--out benchmarks/results/cycle_speed.json]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from gpuplane.domain.inventory import GpuDevice, Host
from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.domain.tenancy import FlavorQuota, Organisation, Project, QuotaTree
from gpuplane.scheduling.cycle import CycleOptions, run_cycle
from gpuplane.scheduling.placement import place, profiles
from gpuplane.scheduling.queueing import PendingQueues, PendingWorkload, RunningTask
from gpuplane.scheduling.snapshot import ClusterSnapshot

SIZES = (1, 2, 4, 8)
PROBS = (0.70, 0.15, 0.10, 0.05)


def build(hosts: int, projects: int, pending: int, seed: int):
    rng = np.random.default_rng(seed)
    inv = [Host(f"h{i}", 128_000, 1_048_576, tuple(GpuDevice(g, "H100-80GB") for g in range(8)))
           for i in range(hosts)]
    total = hosts * 8
    per = total // projects
    projs = [Project(f"p{i}", organisation=f"o{i % 10}", cohort=f"c{i % 10}",
                     quotas={"gpu": FlavorQuota(per * 1000)}) for i in range(projects)]
    quotas = QuotaTree(projs, [Organisation(f"o{k}") for k in range(10)])
    tasks = {g: TaskRequest(cpu_milli=1000 * g, memory_mib=8192 * g, gpus=g) for g in SIZES}
    # Running work, steady state: each project holds its guarantee minus a slack drawn from
    # -2..6 GPUs (negative: it borrows), packed onto hosts in order; ~2.5 % of GPUs stay free.
    # Running work has the top priority (1): in steady state a pending workload of higher
    # priority would already have preempted it.
    running: list[RunningTask] = []
    placements = []
    free = [8] * hosts
    h = 0
    k = 0
    for i in range(projects):
        target = per - int(rng.integers(-2, 7))
        held = 0
        while held < target and h < hosts:
            g = min(int(rng.choice(SIZES, p=PROBS)), target - held, free[h])
            g = max(x for x in SIZES if x <= g)   # fill holes: no host is left half empty
            start = 8 - free[h]
            p = Placement(f"h{h}", tuple(range(start, start + g)), 1000)
            free[h] -= g
            held += g
            if free[h] == 0:
                h += 1
            running.append(RunningTask(f"r{k}", f"r{k}", f"p{i}", tasks[g], p, started_at=0.0,
                                       priority=1,
                                       expected_end=float(rng.integers(60, 36000))))
            placements.append((tasks[g], p))
            k += 1
    snap = ClusterSnapshot.build(inv, placements)
    sizes = rng.choice(SIZES, size=pending, p=PROBS)
    owners = rng.integers(projects, size=pending)
    prios = rng.integers(0, 2, size=pending)
    pend = [PendingWorkload(f"w{i}", f"p{int(owners[i])}", (tasks[int(sizes[i])],),
                            priority=int(prios[i]), submitted_at=float(i) / 100.0,
                            expected_duration=float(600 + (i % 7) * 600))
            for i in range(pending)]
    return inv, placements, snap, running, pend, quotas


def timed_cycle(inv, placements, running, pend, quotas, seed: int, indexes: bool,
                fast: bool = True) -> dict:
    """One cold cycle on fresh copies of the inputs; admissions and timings. ``fast=False``:
    every ``place`` takes the general path (no placement fast path)."""
    snap = ClusterSnapshot.build(inv, placements)
    opts = CycleOptions(profile=profiles.get("bestfit"), explain_all=False, indexes=indexes)
    t0 = time.perf_counter()
    queues = PendingQueues.of(pend)        # what a caller keeps between cycles (sim, loop)
    queue_s = time.perf_counter() - t0
    calls = {"n": 0, "s": 0.0}

    def timed_place(*args, **kw):
        t = time.perf_counter()
        r = place(*args, **kw) if fast else place(*args, **kw, fast=False)
        calls["n"] += 1
        calls["s"] += time.perf_counter() - t
        return r

    t0 = time.perf_counter()
    res = run_cycle(snap, queues, running, quotas, 100.0, np.random.default_rng(seed),
                    options=opts, place_fn=timed_place)
    cycle_s = time.perf_counter() - t0
    codes: dict[str, int] = {}
    for r in res.pending.values():
        codes[r.code] = codes.get(r.code, 0) + 1
    return {"indexes": indexes, "placement_fast_path": fast, "cycle_seconds": cycle_s, "queue_build_seconds": queue_s,
            "admitted": len(res.placements), "admissions_per_s": len(res.placements) / cycle_s,
            "preemptions": len(res.preemptions), "reservations": len(res.reservations),
            "examined_reasons": codes, "place_calls": calls["n"],
            "place_seconds": calls["s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--projects", type=int, default=1_000)
    ap.add_argument("--pending", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cycle_speed.json"))
    a = ap.parse_args()

    inv, placements, snap, running, pend, quotas = build(a.hosts, a.projects, a.pending, a.seed)
    free_before = int((snap.gpu_free == 1000).sum())
    on = timed_cycle(inv, placements, running, pend, quotas, a.seed, indexes=True)
    off = timed_cycle(inv, placements, running, pend, quotas, a.seed, indexes=False)
    general = timed_cycle(inv, placements, running, pend, quotas, a.seed, indexes=True,
                          fast=False)
    out = {
        "hosts": a.hosts, "gpus": a.hosts * 8, "projects": a.projects, "pending": len(pend),
        "running_tasks": len(running), "free_gpus_before": free_before,
        "indexed": on, "indexes_off": off, "general_placement": general,
        "speedup_admissions_per_s": on["admissions_per_s"] / off["admissions_per_s"],
        "python": platform.python_version(), "machine": platform.machine(),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    for r in (on, off, general):
        label = "on " if r["indexes"] else "off"
        label += "" if r["placement_fast_path"] else ", general placement"
        print(f"indexes {label}: cycle {r['cycle_seconds']:.3f} s, "
              f"admitted {r['admitted']} ({r['admissions_per_s']:,.0f} admissions/s), "
              f"preempted {r['preemptions']}, place() {r['place_calls']} calls "
              f"{r['place_seconds']:.3f} s")
    print(f"ratio (admissions/s, on / off): {out['speedup_admissions_per_s']:.1f}x -> {a.out}")


if __name__ == "__main__":
    main()
