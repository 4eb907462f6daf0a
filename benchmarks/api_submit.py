"""How many workload submissions per second does the API accept, durably?

Scenario: the API (``create_app``) served by uvicorn on 127.0.0.1, on SQLite (WAL) and, with
``--pg-url``, on PostgreSQL. ``--clients`` threads each submit ``--per-client`` two-task jobs
over HTTP with their own token (authentication, validation, tenancy checks, the insert of the
workload, its tasks and an event, and the audit chain append all happen per request; a 201 means
committed). Reported: submissions/s and latency p50/p95/max.

Baseline, run in the same process on the same database kind: the bare durable write of the
same rows (one transaction per workload inserting the workload, its tasks and one event with
SQLAlchemy Core, no HTTP, no auth, no audit). The ratio is API rate / bare-write rate: the
price of everything the API does around the write.

Run: ``.venv/bin/python benchmarks/api_submit.py [--pg-url URL] [--out benchmarks/results/api_submit.json]``
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import insert

from gpuplane.api import create_app
from gpuplane.settings import Settings
from gpuplane.store import Store
from gpuplane.store.tables import EventRow, ProjectRow, TaskRow, WorkloadRow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _body(name: str) -> dict:
    return {"name": name, "project": "default",
            "tasks": [{"replicas": 2, "command": ["true"], "resources": {"cpu": 1}}]}


def api_run(db_url: str, home: Path, clients: int, per_client: int) -> dict:
    app = create_app(Settings(home=home, db_url=db_url))
    token = app.state.services.bootstrap_admin()
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
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

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    server.should_exit = True
    thread.join(timeout=10)
    app.state.store.dispose()
    latencies.sort()
    return {"submissions": len(latencies), "errors": errors[:5], "seconds": round(wall, 3),
            "per_s": round(len(latencies) / wall, 1),
            "latency_ms": {"p50": round(statistics.median(latencies) * 1000, 1),
                           "p95": round(latencies[int(0.95 * (len(latencies) - 1))] * 1000, 1),
                           "max": round(latencies[-1] * 1000, 1)}}


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


def _pg_database(base: str):  # noqa: ANN202
    import uuid

    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    plain = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return base.rsplit("/", 1)[0] + "/" + name, drop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per-client", type=int, default=50)
    ap.add_argument("--pg-url", default=None, help="a PostgreSQL server URL (a database is "
                    "created and dropped on it)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/api_submit.json"))
    a = ap.parse_args()
    n = a.clients * a.per_client
    results = {}
    kinds = ["sqlite"] + (["postgresql"] if a.pg_url else [])
    for kind in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            if kind == "sqlite":
                urls, drops = [f"sqlite:///{home}/api.db", f"sqlite:///{home}/bare.db"], []
            else:
                (u1, d1), (u2, d2) = _pg_database(a.pg_url), _pg_database(a.pg_url)
                urls, drops = [u1, u2], [d1, d2]
            try:
                api = api_run(urls[0], home, a.clients, a.per_client)
                bare = bare_run(urls[1], n)
            finally:
                for d in drops:
                    d()
        ratio = round(api["per_s"] / bare["per_s"], 3)
        results[kind] = {"api": api, "bare_write": bare, "ratio_api_over_bare": ratio}
        print(f"{kind:10s} API {api['per_s']:7.1f} submissions/s (p50 {api['latency_ms']['p50']} "
              f"ms, p95 {api['latency_ms']['p95']} ms, {len(api['errors'])} errors) | bare write "
              f"{bare['per_s']:7.1f}/s | ratio {ratio}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"clients": a.clients, "per_client": a.per_client,
                                 "python": platform.python_version(), "results": results},
                                indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
