"""How many workload submissions per second does the API accept, durably?

Scenario: ``gpuplane api --workers N`` (API-only uvicorn worker processes sharing one port, no
control loop) on 127.0.0.1, on SQLite (WAL) and, with ``--pg-url``, on PostgreSQL. ``--clients``
threads (in this process) each submit ``--per-client`` two-task jobs over HTTP with the admin
token (authentication, validation, tenancy checks, the insert of the workload, its tasks and an
event, and the audit chain append all happen per request; a 201 means committed). Each database
kind is run with one API process and with ``--api-processes`` (default 2) on fresh databases;
reported: submissions/s, latency p50/p95/p99/max, the CPU time each submission cost the API
processes, the PostgreSQL server when it runs on this machine, and the clients (from /proc),
and the ratios N processes / one process.
After each run the audit chain is verified and the workloads counted (none lost or doubled).

Baseline, run in the same process on the same database kind: the bare durable write of the
same rows (one transaction per workload inserting the workload, its tasks and one event with
SQLAlchemy Core, no HTTP, no auth, no audit). The ratio is API rate / bare-write rate: the
price of everything the API does around the write.

Run: ``.venv/bin/python benchmarks/api_submit.py [--pg-url URL] [--api-processes 2]
[--out benchmarks/results/api_submit.json]`` (writes the JSON and a PNG beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import insert

from _pgdb import throwaway_database  # benchmarks/_pgdb.py, beside this script
from gpuplane.store import Store
from gpuplane.store.tables import EventRow, ProjectRow, TaskRow, WorkloadRow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _body(name: str) -> dict:
    return {"name": name, "project": "default",
            "tasks": [{"replicas": 2, "command": ["true"], "resources": {"cpu": 1}}]}


def _processes() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds used so far), from /proc (Linux; empty
    where /proc cannot be read)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                head, tail = (entry / "stat").read_text().rsplit(")", 1)
            except (OSError, ValueError):
                continue
            fields = tail.split()
            out[int(entry.name)] = (int(fields[1]), head.split("(", 1)[1],
                                    (int(fields[11]) + int(fields[12])) / tick)
    return out


def _cpu_s(api_pid: int) -> tuple[float, float]:
    """CPU seconds used so far by process ``api_pid`` with its descendants, and by the
    PostgreSQL server processes on this machine (0 when the server is elsewhere)."""
    procs = _processes()
    api, todo = 0.0, [api_pid]
    while todo:
        p = todo.pop()
        api += procs.get(p, (0, "", 0.0))[2]
        todo += [c for c, (parent, _, _) in procs.items() if parent == p]
    return api, sum(cpu for _, name, cpu in procs.values() if name == "postgres")


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * (len(sorted_values) - 1) + 0.5))]


def api_run(db_url: str, home: Path, clients: int, per_client: int, processes: int) -> dict:
    """Start ``gpuplane api --workers processes`` on a fresh database and submit through it."""
    store = Store(db_url)
    store.migrate()
    from gpuplane.service import Services

    token = Services(store).bootstrap_admin()
    store.dispose()
    port = _free_port()
    env = {**os.environ, "GPUPLANE_HOME": str(home), "GPUPLANE_DB_URL": db_url}
    server = subprocess.Popen(
        [sys.executable, "-m", "gpuplane", "api", "--port", str(port), "--workers",
         str(processes), "--log-level", "warning"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gpuplane api did not start: "
                                   + server.stderr.read().decode()[-2000:])
            time.sleep(0.2)
        time.sleep(1.0 if processes > 1 else 0.2)  # let every worker come up
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def client(k: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                              headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
                for i in range(per_client):
                    t0 = time.perf_counter()
                    r = c.post("/v1/workloads", json=_body(f"c{k}-w{i}"))
                    dt = time.perf_counter() - t0
                    with lock:
                        (latencies if r.status_code == 201 else errors).append(
                            dt if r.status_code == 201 else f"{r.status_code} {r.text[:100]}")

        t0, cpu0, client_cpu0 = time.perf_counter(), _cpu_s(server.pid), time.process_time()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        cpu1, client_cpu = _cpu_s(server.pid), time.process_time() - client_cpu0
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    check = _check(db_url, clients * per_client)
    latencies.sort()
    return {"api_processes": processes, "submissions": len(latencies), "errors": errors[:5],
            "seconds": round(wall, 3), "per_s": round(len(latencies) / wall, 1),
            "latency_ms": {"p50": round(_percentile(latencies, 0.50) * 1000, 1),
                           "p95": round(_percentile(latencies, 0.95) * 1000, 1),
                           "p99": round(_percentile(latencies, 0.99) * 1000, 1),
                           "max": round(latencies[-1] * 1000, 1)},
            "cpu_ms_per_submission": {
                "api_processes": round((cpu1[0] - cpu0[0]) / max(1, len(latencies)) * 1000, 2),
                "postgres_local": round((cpu1[1] - cpu0[1]) / max(1, len(latencies)) * 1000, 2),
                "clients": round(client_cpu / max(1, len(latencies)) * 1000, 2)}, **check}


def _check(db_url: str, expected: int) -> dict:
    """Count the stored workloads and verify the audit chain after a run."""
    from gpuplane.governance import audit

    store = Store(db_url)
    try:
        with store.read() as tx:
            stored = tx.workloads.count_by_phase().get("Pending", 0)
            entries, after = [], None
            while True:
                page, after = tx.audit.list(None, None, after, 5000)
                entries += [audit.entry_to_dict(e) for e in page]
                if after is None:
                    break
    finally:
        store.dispose()
    problems = audit.verify_entries(entries)
    submits = sum(1 for e in entries if e["action"] == "workload.submit")
    return {"stored_workloads": stored, "expected_workloads": expected,
            "audit_submit_entries": submits, "audit_problems": problems[:5]}


def bare_run(db_url: str, n: int) -> dict:
    store = Store(db_url)
    store.migrate()
    with store.read() as tx:
        project_id = tx.session.query(ProjectRow.id).first()
    project_id = project_id[0] if project_id else None
    if project_id is None:
        from gpuplane.service import Services

        Services(store).bootstrap_admin()
        with store.read() as tx:
            project_id = tx.session.query(ProjectRow.id).first()[0]
    t0 = time.perf_counter()
    for i in range(n):
        with store.write() as tx:
            pk = tx.session.execute(insert(WorkloadRow).values(
                uid=f"bare-{i}", project_id=project_id, name=f"bare-{i}", kind="job",
                spec=_body(f"bare-{i}"), phase="Pending", priority=500,
                priority_class="standard", preemptible=False, cancel_requested=False,
                submitted_by="bench", submitted_at=time.time(), generation=1)
                .returning(WorkloadRow.pk)).scalar_one()
            tx.session.execute(insert(TaskRow), [dict(
                workload_pk=pk, idx=j, group_name="main", replica=j, phase="Pending",
                attempt=0, cpu_milli=1000, memory_mib=1024, gpus=0, gpu_milli=1000,
                gpu_models=[], generation=1) for j in range(2)])
            tx.session.execute(insert(EventRow).values(
                at=time.time(), type="Normal", reason="Submitted", message="bare",
                workload_pk=pk, project_id=project_id))
    wall = time.perf_counter() - t0
    store.dispose()
    return {"writes": n, "seconds": round(wall, 3), "per_s": round(n / wall, 1)}


def _plot(results: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.35
    for j, key in enumerate(("one_process", "n_processes")):
        xs = [i + (j - 0.5) * width for i in range(len(kinds))]
        runs = [results[k][key] for k in kinds]
        label = f"{runs[0]['api_processes']} API process(es)"
        ax1.bar(xs, [r["per_s"] for r in runs], width, label=label)
        ax2.bar(xs, [r["latency_ms"]["p99"] for r in runs], width, label=label)
    for ax, title in ((ax1, "submissions/s"), (ax2, "p99 latency (ms)")):
        ax.set_xticks(range(len(kinds)), kinds)
        ax.set_title(title)
        ax.legend()
    ax1.axhline(500, color="grey", linestyle="--", linewidth=1)
    ax2.axhline(100, color="grey", linestyle="--", linewidth=1)
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per-client", type=int, default=50)
    ap.add_argument("--api-processes", type=int, default=2,
                    help="API worker processes of the second run (the first has one)")
    ap.add_argument("--pg-url", default=None, help="a PostgreSQL server URL (a database is "
                    "created and dropped on it)")
    ap.add_argument("--skip-sqlite", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/api_submit.json"))
    a = ap.parse_args()
    n = a.clients * a.per_client
    results = {}
    kinds = ([] if a.skip_sqlite else ["sqlite"]) + (["postgresql"] if a.pg_url else [])
    for kind in kinds:
        runs = {}
        for key, procs in (("one_process", 1), ("n_processes", a.api_processes)):
            with tempfile.TemporaryDirectory() as tmp:
                home = Path(tmp)
                if kind == "sqlite":
                    url, drop = f"sqlite:///{home}/api.db", None
                else:
                    url, drop = throwaway_database(a.pg_url)
                try:
                    runs[key] = api_run(url, home, a.clients, a.per_client, procs)
                finally:
                    if drop:
                        drop()
        with tempfile.TemporaryDirectory() as tmp:
            if kind == "sqlite":
                url, drop = f"sqlite:///{tmp}/bare.db", None
            else:
                url, drop = throwaway_database(a.pg_url)
            try:
                bare = bare_run(url, n)
            finally:
                if drop:
                    drop()
        one, many = runs["one_process"], runs["n_processes"]
        results[kind] = {
            **runs, "bare_write": bare,
            "ratio_n_over_one": {"per_s": round(many["per_s"] / one["per_s"], 3),
                                 "p50": round(many["latency_ms"]["p50"]
                                              / one["latency_ms"]["p50"], 3),
                                 "p99": round(many["latency_ms"]["p99"]
                                              / one["latency_ms"]["p99"], 3)},
            "ratio_api_over_bare": round(many["per_s"] / bare["per_s"], 3)}
        for r in (one, many):
            print(f"{kind:10s} {r['api_processes']} API process(es): {r['per_s']:7.1f} "
                  f"submissions/s (p50 {r['latency_ms']['p50']} ms, p99 "
                  f"{r['latency_ms']['p99']} ms, CPU per submission: API "
                  f"{r['cpu_ms_per_submission']['api_processes']} ms, PostgreSQL "
                  f"{r['cpu_ms_per_submission']['postgres_local']} ms, clients "
                  f"{r['cpu_ms_per_submission']['clients']} ms; {len(r['errors'])} errors; stored "
                  f"{r['stored_workloads']}/{r['expected_workloads']}, audit "
                  f"{'intact' if not r['audit_problems'] else r['audit_problems']})")
        print(f"{kind:10s} ratio {a.api_processes}/1: {results[kind]['ratio_n_over_one']} | "
              f"bare write {bare['per_s']:7.1f}/s")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"clients": a.clients, "per_client": a.per_client,
                                 "api_processes": a.api_processes, "cpus": os.cpu_count(),
                                 "load_before": os.getloadavg(),
                                 "python": platform.python_version(), "results": results},
                                indent=1))
    png = a.out.with_suffix(".png")
    _plot(results, png)
    print(f"wrote {a.out} and {png}")


if __name__ == "__main__":
    main()
