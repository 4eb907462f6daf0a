"""Submissions from two API processes at once (SQLite, and PostgreSQL when given): on
PostgreSQL they run without the global write lock; no workload is lost or doubled, a name
raced for from both processes is taken once, and the audit chain stays one intact chain."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx

from gpuplane.governance import audit
from gpuplane.service import Services
from gpuplane.store import Store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_api(db_url: str, home, port: int) -> subprocess.Popen:  # noqa: ANN001
    env = {**os.environ, "GPUPLANE_HOME": str(home), "GPUPLANE_DB_URL": db_url}
    return subprocess.Popen([sys.executable, "-m", "gpuplane", "api", "--port", str(port),
                             "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_up(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.1)
    raise AssertionError("gpuplane api did not start")


def test_two_api_processes_lose_and_double_nothing_and_keep_one_audit_chain(db_url, tmp_path):
    store = Store(db_url)
    store.migrate()
    token = Services(store).bootstrap_admin()
    ports = [_free_port(), _free_port()]
    procs = [_start_api(db_url, tmp_path, p) for p in ports]
    results: list[tuple[str, int]] = []
    lock = threading.Lock()
    try:
        for proc, port in zip(procs, ports):
            _wait_up(proc, port)

        def client(k: int) -> None:
            clients = [httpx.Client(base_url=f"http://127.0.0.1:{p}", timeout=60,
                                    headers={"Authorization": f"Bearer {token}"})
                       for p in ports]
            # unique names, alternating between the processes, and names every client races for
            names = [f"c{k}-w{i}" for i in range(12)] + [f"shared-{i}" for i in range(4)]
            for i, name in enumerate(names):
                r = clients[(k + i) % 2].post("/v1/workloads", json={
                    "name": name, "project": "default",
                    "tasks": [{"replicas": 2, "command": ["true"], "resources": {"cpu": 1}}]})
                with lock:
                    results.append((name, r.status_code))
            for c in clients:
                c.close()

        threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)
    codes = Counter(code for _, code in results)
    assert set(codes) <= {201, 409}, codes
    created = Counter(name for name, code in results if code == 201)
    assert all(n == 1 for n in created.values())
    assert {f"shared-{i}" for i in range(4)} <= set(created)
    assert len(created) == 6 * 12 + 4
    with store.read() as tx:
        page = tx.workloads.list(None, limit=10_000, with_tasks=True)
        entries, _ = tx.audit.list(None, None, None, 100_000)
    assert sorted(w.name for w in page.items) == sorted(created)
    assert all(len(w.tasks) == 2 for w in page.items)
    chain = [audit.entry_to_dict(e) for e in entries]
    assert audit.verify_entries(chain) == []
    submits = [e for e in chain if e["action"] == "workload.submit"]
    assert sorted(e["detail"]["name"] for e in submits) == sorted(created)
    store.dispose()
