"""Live-loop replay of an openb slice: is what ``gpuplane sim openb`` measures what the live
control plane does?

A slice of the FGD_PROTOCOL experiment: every ``--every``-th node of the openb node list (in
name order) and the arrival sequence ``sim openb`` draws for that node set with ``--seed``
(shuffle, tuning to 1.3 x capacity, seeded tie rank by name). The same slice runs twice:

* **live**: the REAL control loop (``ControlLoop`` with a real ``Store`` on SQLite, the
  ``sim`` driver). The nodes are registered as gpuplane hosts in tie-rank order (the loop's
  snapshot breaks ties by store order, so both runs share the tie rank); the pods are
  submitted through ``WorkloadService`` in arrival order, ``--per-tick`` per tick (a virtual
  clock: pod ``k`` is submitted at ``t = k``), then the loop ticks (schedule, launch, stop,
  observe: one new snapshot per tick). openb pods never finish; a pod still pending after the
  tick of its arrival is cancelled, as FGD_PROTOCOL drops a pod that does not fit on arrival
  (capacity only shrinks, so it would never fit later either).
* **sim**: ``openb_run.place_in_order`` -- the loop of ``gpuplane sim openb`` -- on the same
  hosts, tie rank, pods and distribution mode.

Reported: allocation (% of GPU milli) at the end of the slice for both and their difference,
placements that agree, the online model of both (count, version, types), seconds, load.
Writes ``benchmarks/results/live_replay_openb.json`` and ``.png`` (allocation vs arrivals).

    .venv/bin/python benchmarks/live_replay_openb.py [--trace default] [--every 5]
        [--per-tick 4] [--seed 42] [--distribution online|trace] [--data DIR] [--out DIR]

``tests/control/test_live_replay_openb.py`` runs the same harness on a small slice.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gpuplane.domain.inventory import Host
from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.scheduling.placement.fragmentation import TypicalWorkload
from gpuplane.scheduling.snapshot import ClusterSnapshot
from gpuplane.sim.openb import read_nodes, read_pods
from gpuplane.sim.openb_run import arrival_sequence, make_profile, place_in_order, tie_rank_by_name

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "openb"
OUT = ROOT / "benchmarks" / "results"
FOREVER = "1e12"  #: openb pods never finish (FGD_PROTOCOL: they only arrive)


@dataclasses.dataclass
class Slice:
    """Hosts in tie-rank order (rank = position), pods in arrival order, and the trace's
    own distribution (for ``trace`` mode)."""

    trace: str
    hosts: list[Host]
    tasks: list[TaskRequest]
    trace_workload: TypicalWorkload

    @property
    def capacity(self) -> int:
        return sum(len(h.gpus) for h in self.hosts) * 1000


def make_slice(data: Path, trace: str, every: int, seed: int, tuning: float = 1.3) -> Slice:
    """Every ``every``-th node (name order) and ``sim openb``'s arrival sequence for it."""
    nodes = sorted(read_nodes(data / "openb_node_list_gpu_node.csv"), key=lambda h: h.name)
    hosts = nodes[::every]
    pods = read_pods(data / f"openb_pod_list_{trace}.csv")
    rng = np.random.default_rng(seed)
    seq = arrival_sequence(pods, sum(len(h.gpus) for h in hosts) * 1000, tuning, rng)
    rank = tie_rank_by_name(hosts, rng)
    ordered = [hosts[i] for i in np.argsort(rank, kind="stable")]
    return Slice(pods.stem, ordered, [pods.tasks[j] for j in seq],
                 TypicalWorkload.from_tasks(pods.tasks))


def run_sim(sl: Slice, distribution: str, policy: str = "gpuplane") -> dict[str, Any]:
    """The simulator's loop on the slice: placements per pod, the online model."""
    t0 = time.perf_counter()
    snap = ClusterSnapshot.build(sl.hosts)
    profile, online = make_profile(policy, sl.trace_workload, distribution)
    got = place_in_order(snap, sl.tasks, profile, online, np.random.default_rng(0))
    return {"placements": [_key(p) for p in got], "model": online,
            "seconds": time.perf_counter() - t0}


def _key(p: Placement | Any | None) -> tuple | None:
    if p is None:
        return None
    return (p.host, tuple(int(i) for i in p.gpu_indices), int(p.gpu_milli))


def _resources(t: TaskRequest) -> dict[str, Any]:
    r: dict[str, Any] = {"cpu": t.cpu_milli / 1000, "memory": t.memory_mib, "gpus": t.gpus}
    if t.gpus:
        r["gpu_milli"] = t.gpu_milli
        if t.gpu_models:
            r["gpu_models"] = sorted(t.gpu_models)
    return r


def run_live(sl: Slice, distribution: str, per_tick: int, home: Path,
             handover_at: int | None = None) -> dict[str, Any]:
    """The real control loop on the slice (SQLite store under ``home``). ``handover_at``: after
    that many ticks the leader steps down (``release`` writes the scheduler memory) and a new
    ``ControlLoop`` takes the lease and resumes the online model from the store."""
    from gpuplane.control.execution import SIM_DURATION_LABEL
    from gpuplane.control.loop import ControlLoop
    from gpuplane.domain.workloads import WorkloadSpec
    from gpuplane.drivers.sim import SimDriver
    from gpuplane.scheduling.placement import profiles
    from gpuplane.service.auth import AuthService
    from gpuplane.service.authz import Principal
    from gpuplane.service.inventory import InventoryService
    from gpuplane.service.specs import HostSpec, SiteSpec
    from gpuplane.service.workloads import WorkloadService
    from gpuplane.store import Store

    clock = [0.0]

    def now() -> float:
        return clock[0]

    store = Store(f"sqlite:///{home / 'replay.db'}")
    store.migrate()
    AuthService(store).bootstrap_admin()
    system = Principal.system()
    inv = InventoryService(store, clock=now)
    inv.create_site(system, SiteSpec(name="openb", jurisdiction="CH"))
    for h in sl.hosts:  # registration order = store order = the loop's tie rank
        inv.register_host(system, HostSpec(
            name=h.name, site="openb", cpu=h.cpu_milli / 1000, memory=h.memory_mib, driver="sim",
            gpus=[{"index": g.index, "model": g.model, "memory_mib": g.memory_mib or 16384,
                   "mode": "shared"} for g in h.gpus]))
    svc = WorkloadService(store, clock=now)
    def new_loop(holder: str) -> ControlLoop:
        loop = ControlLoop(store, {"sim": SimDriver(home, clock=now)}, holder=holder,
                           lease_ttl_s=3600, clock=now)
        if distribution == "trace":
            loop.cycle_options = dataclasses.replace(
                loop.cycle_options, profile=profiles.get(workload=sl.trace_workload))
        return loop

    loop = new_loop("replay")
    t0 = time.perf_counter()
    ids: list[str] = []
    ticks = failed = 0
    for start in range(0, len(sl.tasks), per_tick):
        for k in range(start, min(start + per_tick, len(sl.tasks))):
            clock[0] = float(k)
            w = svc.submit_workload(system, WorkloadSpec(
                name=f"pod-{k:05d}", project="default", labels={SIM_DURATION_LABEL: FOREVER},
                tasks=[{"resources": _resources(sl.tasks[k]), "command": ["openb"]}]))
            ids.append(w.id)
        if ticks == handover_at:   # the leader steps down; the next resumes the stored model
            loop.release()
            loop = new_loop("replay-next")
        rep = loop.tick()
        ticks += 1
        if rep.errors:
            raise RuntimeError(f"tick {ticks}: {rep.errors}")
        with store.read() as tx:
            left = [w.id for w in tx.workloads.list_schedulable(clock[0])]
        for wid in left:  # did not fit on arrival: dropped, as in FGD_PROTOCOL
            svc.cancel_workload(system, wid)
            failed += 1
    seconds = time.perf_counter() - t0
    loop.tick()  # process the last cancels
    placements: dict[str, tuple | None] = {}
    with store.read() as tx:
        for w in tx.workloads.list_active():
            t = w.tasks[0]
            placements[w.id] = _key(t.placement) if t.placement is not None else None
    model = loop.workload_model
    loop.release()
    store.dispose()
    return {"placements": [placements.get(i) for i in ids], "model": model, "ticks": ticks,
            "failed": failed, "seconds": seconds}


def allocation(sl: Slice, placements: list[tuple | None]) -> list[float]:
    """Allocated GPU milli in % of capacity after each arrival."""
    used, out = 0, []
    for t, p in zip(sl.tasks, placements):
        if p is not None:
            used += t.gpu_milli * t.gpus
        out.append(100.0 * used / sl.capacity)
    return out


def model_summary(m: Any) -> dict[str, Any] | None:
    if m is None:
        return None
    wl = m.workload
    return {"count": m.count, "version": m.version, "built_at": m.built_at,
            "types": None if wl is None else [[t.cpu_milli, t.gpu_milli, t.gpus,
                                               sorted(t.models), t.freq] for t in wl.types]}


def compare(sl: Slice, distribution: str, per_tick: int, home: Path) -> dict[str, Any]:
    live = run_live(sl, distribution, per_tick, home)
    sim = run_sim(sl, distribution)
    a_live, a_sim = allocation(sl, live["placements"]), allocation(sl, sim["placements"])
    same = sum(1 for x, y in zip(live["placements"], sim["placements"]) if x == y)
    return {
        "trace": sl.trace, "distribution": distribution, "hosts": len(sl.hosts),
        "gpus": sl.capacity // 1000, "pods": len(sl.tasks), "per_tick": per_tick,
        "ticks": live["ticks"], "alloc_live": round(a_live[-1], 4),
        "alloc_sim": round(a_sim[-1], 4), "alloc_diff_points": round(a_live[-1] - a_sim[-1], 4),
        "same_placements": same, "failed_live": live["failed"],
        "failed_sim": sum(p is None for p in sim["placements"]),
        "live_seconds": round(live["seconds"], 2), "sim_seconds": round(sim["seconds"], 3),
        "model_live": model_summary(live["model"] if distribution == "online" else None),
        "model_sim": model_summary(sim["model"]),
        "curve_live": [round(x, 3) for x in a_live], "curve_sim": [round(x, 3) for x in a_sim],
    }


def plot(results: list[dict], path: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.8), squeeze=False)
    for ax, r in zip(axes[0], results):
        xs = range(1, r["pods"] + 1)
        ax.plot(xs, r["curve_sim"], "-", label=f"sim openb ({r['alloc_sim']:.2f} %)")
        ax.plot(xs, r["curve_live"], "--", label=f"live loop ({r['alloc_live']:.2f} %)")
        ax.set_title(f"{r['trace']} / {r['distribution']}: {r['hosts']} hosts, "
                     f"{r['pods']} pods, {r['per_tick']}/tick")
        ax.set_xlabel("pods arrived")
        ax.set_ylabel("allocated GPU, % of capacity")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", default="default")
    ap.add_argument("--every", type=int, default=5, help="Take every n-th node (name order).")
    ap.add_argument("--per-tick", type=int, default=4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--distribution", default="online,trace",
                    help="online, trace, or both comma-separated")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    sl = make_slice(Path(a.data), a.trace, a.every, a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for dist in [d for d in a.distribution.split(",") if d]:
        with tempfile.TemporaryDirectory() as tmp:
            r = compare(sl, dist, a.per_tick, Path(tmp))
        results.append(r)
        print(f"{r['trace']} / {dist}: {r['hosts']} hosts, {r['gpus']} GPUs, {r['pods']} pods, "
              f"{r['ticks']} ticks ({r['per_tick']}/tick): allocation live {r['alloc_live']:.3f} % "
              f"vs sim {r['alloc_sim']:.3f} % (diff {r['alloc_diff_points']:+.3f} points); "
              f"same placements {r['same_placements']}/{r['pods']}; failed live "
              f"{r['failed_live']} / sim {r['failed_sim']}; live {r['live_seconds']:.1f} s, "
              f"sim {r['sim_seconds']:.2f} s", flush=True)
        if r["model_live"] is not None:
            same = r["model_live"] == r["model_sim"]
            print(f"  online model: live count {r['model_live']['count']} version "
                  f"{r['model_live']['version']}; identical to the simulator's: {same}")
        meta = {"seed": a.seed, "every": a.every, "load_after": os.getloadavg(),
                "python": sys.version.split()[0]}
        (out / "live_replay_openb.json").write_text(  # after each run: a long run keeps its part
            json.dumps({"meta": meta, "runs": results}, indent=1))
    png = plot(results, out / "live_replay_openb.png")
    print(f"wrote {out / 'live_replay_openb.json'}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
