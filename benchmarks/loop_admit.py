"""How long does one control-loop pass take to admit and start a large backlog?

Scenario: a store (SQLite file in WAL mode, or PostgreSQL with ``--pg-url``) with ``--hosts``
simulated hosts of 8 H100s each (125 hosts: room for all 1,000) and ``--workloads`` pending
one-GPU jobs submitted through the service layer. One ``ControlLoop.tick`` then decides
(``run_cycle``), writes the admissions (``lifecycle.admit_many``: batches of
``apply.ADMIT_BATCH`` workloads, each locked, checked and written with a few executemany
statements; ``admit_tasks`` per workload before that existed), starts every admitted task with
the ``sim`` driver and records the handles (``lifecycle.mark_many_running``; before,
``mark_task_running`` per task). Reported: tick seconds, each step's seconds (``schedule`` =
read + decide + write the admissions), the seconds inside the ``sim`` driver's ``start`` (a
log file created per task: file-system time, not the control plane's), admitted tasks, and the
seconds spent inside the admit and the mark-running functions (total and per call).

Baseline, in the same process on the same database: the bare write of the same state changes
with SQLAlchemy Core (for every admitted task one guarded task update, one host generation bump
per host, one workload update, one event; then one update per started task), no domain
conversion, no audit. The ratio is time inside the lifecycle functions / bare-write time.

Run: ``.venv/bin/python benchmarks/loop_admit.py [--pg-url URL]
[--out benchmarks/results/loop_admit.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from _pgdb import throwaway_database  # benchmarks/_pgdb.py, beside this script
from gpuplane.control.loop import ControlLoop
from gpuplane.domain.workloads import Phase, WorkloadSpec
from gpuplane.drivers.sim import SimDriver
from gpuplane.process import tune_gc
from gpuplane.service import lifecycle
from gpuplane.service.auth import AuthService
from gpuplane.service.authz import Principal
from gpuplane.service.inventory import InventoryService
from gpuplane.service.specs import HostSpec, SiteSpec
from gpuplane.service.workloads import WorkloadService
from gpuplane.store import Store
from gpuplane.store.tables import EventRow, HostRow, TaskRow, WorkloadRow


def _timed(name: str, fn: Callable[..., Any], acc: dict[str, list[float]]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            acc.setdefault(name, []).append(time.perf_counter() - t0)
    return wrapper


def setup(db_url: str, hosts: int, workloads: int) -> Store:
    store = Store(db_url)
    store.migrate()
    AuthService(store).bootstrap_admin()
    system = Principal.system()
    inv = InventoryService(store)
    inv.create_site(system, SiteSpec(name="bench", jurisdiction="CH"))
    for h in range(hosts):
        inv.register_host(system, HostSpec(
            name=f"sim-{h:03d}", site="bench", cpu=128, memory="1024Gi", driver="sim",
            gpus=[{"index": g, "model": "H100-80GB", "memory_mib": 81920} for g in range(8)]))
    svc = WorkloadService(store)
    for i in range(workloads):
        svc.submit_workload(system, WorkloadSpec(
            name=f"job-{i:05d}", project="default",
            tasks=[{"resources": {"gpus": 1, "cpu": 4, "memory": "16Gi"}, "command": ["train"]}]))
    return store


def loop_run(db_url: str, home: Path, hosts: int, workloads: int) -> dict:
    store = setup(db_url, hosts, workloads)
    acc: dict[str, list[float]] = {}
    # time whichever admit / mark-running function the loop calls (older versions: per task)
    admit_name = next(n for n in ("admit_many", "admit_tasks", "admit_workload")
                      if hasattr(lifecycle, n))
    running_name = next(n for n in ("mark_many_running", "mark_task_running")
                        if hasattr(lifecycle, n))
    orig_admit, orig_running = getattr(lifecycle, admit_name), getattr(lifecycle, running_name)
    setattr(lifecycle, admit_name, _timed("admit", orig_admit, acc))
    setattr(lifecycle, running_name, _timed("mark_task_running", orig_running, acc))
    driver = SimDriver(home)
    driver.start = _timed("driver_start", driver.start, acc)  # type: ignore[method-assign]
    try:
        loop = ControlLoop(store, {"sim": driver}, holder="bench", lease_ttl_s=600)
        assert loop._lease(loop.clock())  # take the lease outside the timed tick
        for step in ("schedule", "launch", "stop_due", "observe"):
            timed = _timed(f"step_{step}", getattr(loop, step), acc)
            timed.__name__ = step  # type: ignore[attr-defined]
            setattr(loop, step, timed)
        tune_gc()  # as `gpuplane up` does once started (src/gpuplane/process.py)
        t0, c0 = time.perf_counter(), time.process_time()
        report = loop.tick(renew=False)
        tick_s, tick_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    finally:
        setattr(lifecycle, admit_name, orig_admit)
        setattr(lifecycle, running_name, orig_running)
    with store.read() as tx:
        running = sum(1 for t in tx.tasks.list_active() if t.phase == Phase.RUNNING)
    store.dispose()
    out = {"admit_function": admit_name, "running_function": running_name,
           "tick_s": round(tick_s, 3),
           # this process's CPU seconds in the tick (the database server's are not in it):
           # less sensitive than wall time to other work on a shared machine
           "tick_cpu_s": round(tick_cpu_s, 3),
           "tick_without_driver_s": round(tick_s - sum(acc.get("driver_start", [])), 3),
           "admitted": report.admitted, "started": report.started, "running_after": running,
           "conflicts": report.conflicts}
    for name, times in acc.items():
        out[f"{name}_s"] = round(sum(times), 3)
        out[f"{name}_calls"] = len(times)
        out[f"{name}_ms_per_call"] = round(1000 * sum(times) / len(times), 3)
    return out


def bare_run(db_url: str, hosts: int, workloads: int) -> dict:
    """The same state changes as SQLAlchemy Core statements, one transaction each phase."""
    store = setup(db_url, hosts, workloads)
    with store.read() as tx:
        host_rows = tx.session.execute(select(HostRow.id, HostRow.generation)
                                       .order_by(HostRow.id)).all()
        tasks = tx.session.execute(select(TaskRow.id, TaskRow.generation, TaskRow.workload_pk,
                                    WorkloadRow.generation, WorkloadRow.project_id)
                             .join(WorkloadRow, WorkloadRow.pk == TaskRow.workload_pk)
                             .order_by(TaskRow.id)).all()
    slots = [(h_id, g) for h_id, _ in host_rows for g in range(8)]
    chosen = list(zip(tasks, slots))
    t0 = time.perf_counter()
    with store.write() as tx:
        s = tx.session
        claimed: set[int] = set()
        for (tid, tgen, wpk, wgen, project_id), (host_id, gpu) in chosen:
            n = s.execute(update(TaskRow).where(TaskRow.id == tid, TaskRow.generation == tgen)
                          .values(generation=tgen + 1, phase=Phase.ADMITTED.value,
                                  host_id=host_id, attempt=1,
                                  placement={"host": str(host_id), "gpu_indices": [gpu],
                                             "gpu_milli": 1000, "mig": []})).rowcount
            assert n == 1
            if host_id not in claimed:
                gen = dict(host_rows)[host_id]
                s.execute(update(HostRow).where(HostRow.id == host_id,
                                                HostRow.generation == gen)
                          .values(generation=gen + 1))
                claimed.add(host_id)
            s.execute(update(WorkloadRow).where(WorkloadRow.pk == wpk,
                                                WorkloadRow.generation == wgen)
                      .values(generation=wgen + 1, phase=Phase.ADMITTED.value,
                              pending_reason=None))
            s.execute(insert(EventRow).values(at=0.0, type="Normal", reason="Admitted",
                                              message="1 task(s) placed", project_id=project_id,
                                              workload_pk=wpk))
    admit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with store.write() as tx:
        s = tx.session
        for (tid, tgen, wpk, wgen, project_id), _ in chosen:
            s.execute(update(TaskRow).where(TaskRow.id == tid, TaskRow.generation == tgen + 1)
                      .values(generation=tgen + 2, phase=Phase.RUNNING.value, started_at=0.0,
                              handle={"driver": "sim", "task_id": str(tid)}))
            s.execute(update(WorkloadRow).where(WorkloadRow.pk == wpk)
                      .values(generation=wgen + 2, phase=Phase.RUNNING.value))
            s.execute(insert(EventRow).values(at=0.0, type="Normal", reason="Started",
                                              message="task 0 started", project_id=project_id,
                                              workload_pk=wpk))
    running_s = time.perf_counter() - t0
    store.dispose()
    return {"admit_s": round(admit_s, 3), "running_s": round(running_s, 3),
            "tasks": len(chosen)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=125)
    ap.add_argument("--workloads", type=int, default=1000)
    ap.add_argument("--pg-url", default=None, help="also run on this PostgreSQL server (throwaway databases are created "
                    "and dropped on it)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    kinds = [("sqlite", None)] + ([("postgresql", args.pg_url)] if args.pg_url else [])
    results: dict[str, Any] = {"hosts": args.hosts, "workloads": args.workloads,
                               "load_before": os.getloadavg(), "cpus": os.cpu_count(),
                               "python": platform.python_version(), "runs": {}}
    for kind, url in kinds:
        drops: list[Callable[[], None]] = []
        with tempfile.TemporaryDirectory() as tmp:
            def fresh(name: str) -> str:
                if url is None:
                    return f"sqlite:///{tmp}/{name}.db"
                db, drop = throwaway_database(url)  # a throwaway database on that server
                drops.append(drop)
                return db

            try:
                loop = loop_run(fresh("loop"), Path(tmp) / "home", args.hosts, args.workloads)
                bare = bare_run(fresh("bare"), args.hosts, args.workloads)
            finally:
                for drop in drops:
                    drop()
        inside = loop.get("admit_s", 0.0) + loop.get("mark_task_running_s", 0.0)
        ratio = inside / max(bare["admit_s"] + bare["running_s"], 1e-9)
        results["runs"][kind] = {"loop": loop, "bare_write": bare,
                                 "lifecycle_over_bare": round(ratio, 2)}
        steps = ", ".join(f"{k[5:-2]} {v:.2f}s" for k, v in loop.items()
                          if k.startswith("step_") and k.endswith("_s"))
        print(f"{kind}: tick {loop['tick_s']:.2f}s (CPU {loop['tick_cpu_s']:.2f}s; {steps}; "
              "sim driver start "
              f"{loop.get('driver_start_s', 0):.2f}s), admitted {loop['admitted']}, "
              f"started {loop['started']}; {loop['admit_function']} "
              f"{loop.get('admit_s', 0):.2f}s "
              f"({loop.get('admit_ms_per_call', 0):.2f} ms/call), mark_task_running "
              f"{loop.get('mark_task_running_s', 0):.2f}s "
              f"({loop.get('mark_task_running_ms_per_call', 0):.2f} ms/call); bare write "
              f"{bare['admit_s'] + bare['running_s']:.2f}s; lifecycle / bare = {ratio:.1f}x")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
