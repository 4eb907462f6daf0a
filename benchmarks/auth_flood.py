"""Does a bad-token flood slow another tenant down or fill the audit log?

Scenario (issue 7, item 4): the API (``create_app``) served by uvicorn in its own process on
SQLite (WAL) and, with ``--db-url`` or GPUPLANE_TEST_PG_URL, on PostgreSQL. A victim tenant
(a member of project ``default``, source 127.0.0.100) submits CPU-only workloads one after the
other, first alone (``--seconds``), then while a flood process runs ``--threads`` threads
sending random bad tokens for ``--seconds``. The flood comes from 8 source addresses
(127.0.0.2..9, one per thread, client sockets bound with httpx's ``local_address``) and, in a
second scenario, from one source. X-Forwarded-For is not believed (uvicorn ``proxy_headers``
off, as ``gpuplane up`` runs without GPUPLANE_TRUSTED_PROXIES).

Reported per database and scenario: the victim's submission p50/p95 unloaded and under flood
and their ratio (target <= 1.5), the flood's request rate and answers (401/429), and the
``auth.login_failed`` audit rows added during the flood and after the server's shutdown flush,
per source per started minute (target <= 1).

Run: ``.venv/bin/python benchmarks/auth_flood.py [--db-url URL] [--seconds 20]``
(writes benchmarks/results/auth_flood.json and .png).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import secrets
import signal
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

VICTIM_SOURCE = "127.0.0.100"
console = Console(width=150)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(db_url: str, home: str, port: int, delay_s: float | None) -> None:
    """The server process: create_app under uvicorn, stopped by SIGTERM (graceful, so the
    shutdown flush of the failed-login ledger runs)."""
    import uvicorn

    from gpuplane.api import create_app
    from gpuplane.settings import Settings

    extra = {} if delay_s is None else {"auth_throttle_delay_s": delay_s}
    app = create_app(Settings(home=Path(home), db_url=db_url, **extra), migrate=False)
    uvicorn.Server(uvicorn.Config(app, host="0.0.0.0", port=port, log_level="warning",
                                  proxy_headers=False, access_log=False)).run()


def _flood(port: int, sources: list[str], threads: int, seconds: float,
           out) -> None:  # noqa: ANN001
    """The flood process: ``threads`` threads of random bad tokens for ``seconds``."""
    counts: dict[str, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run(k: int) -> None:
        mine: dict[str, int] = {}
        transport = httpx.HTTPTransport(local_address=sources[k % len(sources)])
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", transport=transport,
                          timeout=30) as c:
            while time.monotonic() < deadline:
                try:
                    r = c.get("/v1/workloads", headers={
                        "Authorization": f"Bearer gpp_{secrets.token_urlsafe(32)}",
                        "X-Forwarded-For": f"10.{k}.{secrets.randbelow(256)}.1"})
                    key = str(r.status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                mine[key] = mine.get(key, 0) + 1
        with lock:
            for key, n in mine.items():
                counts[key] = counts.get(key, 0) + n

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put(counts)


def _failed_rows(db_url: str) -> int:
    from gpuplane.store import Store
    from gpuplane.store.tables import AuditRow

    store = Store(db_url)
    try:
        with store.read() as tx:
            return tx.session.execute(select(func.count()).select_from(AuditRow).where(
                AuditRow.action == "auth.login_failed")).scalar_one()
    finally:
        store.dispose()


def _victim(port: int, token: str, seconds: float, tag: str, progress,  # noqa: ANN001
            task) -> list[float]:  # noqa: ANN001
    latencies: list[float] = []
    transport = httpx.HTTPTransport(local_address=VICTIM_SOURCE)
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", transport=transport, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as c:
        i = 0
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            r = c.post("/v1/workloads", json={
                "name": f"{tag}-{i}", "project": "default",
                "tasks": [{"replicas": 2, "command": ["true"], "resources": {"cpu": 1}}]})
            dt = time.perf_counter() - t0
            if r.status_code != 201:
                raise RuntimeError(f"victim submission failed: {r.status_code} {r.text[:200]}")
            latencies.append(dt)
            i += 1
            progress.update(task, completed=min(seconds, seconds - (deadline - time.monotonic())))
    return latencies


def _stats(lat: list[float]) -> dict:
    s = sorted(lat)
    return {"n": len(s), "p50_ms": round(statistics.median(s) * 1000, 2),
            "p95_ms": round(s[int(0.95 * (len(s) - 1))] * 1000, 2),
            "max_ms": round(s[-1] * 1000, 2)}


def scenario(db_url: str, home: Path, sources: list[str], threads: int, seconds: float,
             progress, delay_s: float | None = None) -> dict:  # noqa: ANN001
    from gpuplane.service import Services
    from gpuplane.store import Store

    store = Store(db_url)
    store.migrate()
    admin = Services(store).bootstrap_admin()
    store.dispose()
    port = _free_port()
    ctx = mp.get_context("spawn")
    server = ctx.Process(target=_serve, args=(db_url, str(home), port, delay_s),
                         daemon=True)
    server.start()
    try:
        A = {"Authorization": f"Bearer {admin}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            for _ in range(300):
                try:
                    if c.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            c.post("/v1/users", headers=A, json={"name": "victim", "organisation": "default"}
                   ).raise_for_status()
            c.post("/v1/role-bindings", headers=A, json={
                "user": "victim", "role": "member", "scope": "project",
                "scope_name": "default"}).raise_for_status()
            token = c.post("/v1/tokens", headers=A, json={"user": "victim", "name": "bench"}
                           ).json()["token"]
        label = f"{len(sources)} source(s)"
        t1 = progress.add_task(f"{label}: victim alone", total=seconds)
        unloaded = _victim(port, token, seconds, "alone", progress, t1)
        rows_before = _failed_rows(db_url)
        out = ctx.Queue()
        flood = ctx.Process(target=_flood, args=(port, sources, threads, seconds + 1.0, out))
        flood.start()
        time.sleep(1.0)  # let the flood start up
        t2 = progress.add_task(f"{label}: victim under flood", total=seconds)
        t0 = time.monotonic()
        loaded = _victim(port, token, seconds, "flood", progress, t2)
        counts = out.get(timeout=120)
        flood.join(timeout=30)
        flood_s = time.monotonic() - t0 + 1.0
        rows_during = _failed_rows(db_url) - rows_before
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.join(timeout=30)
    rows_after = _failed_rows(db_url) - rows_before
    minutes = math.ceil(flood_s / 60)
    u, f = _stats(unloaded), _stats(loaded)
    total = sum(counts.values())
    return {"sources": len(sources), "threads": threads, "flood_s": round(flood_s, 1),
            "flood_requests": total, "flood_per_s": round(total / flood_s, 1),
            "flood_answers": counts, "unloaded": u, "under_flood": f,
            "p95_ratio": round(f["p95_ms"] / u["p95_ms"], 3),
            "audit_rows_during_flood": rows_during,
            "audit_rows_after_shutdown_flush": rows_after,
            "audit_rows_per_source_per_minute": round(rows_during / (len(sources) * minutes), 3)}


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, p_u, p_f, rows = [], [], [], []
    for db, runs in results.items():
        for r in runs:
            labels.append(f"{db}\n{r['sources']} src")
            p_u.append(r["unloaded"]["p95_ms"])
            p_f.append(r["under_flood"]["p95_ms"])
            rows.append(r["audit_rows_per_source_per_minute"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(labels))
    a1.bar([i - 0.2 for i in x], p_u, 0.4, label="alone")
    a1.bar([i + 0.2 for i in x], p_f, 0.4, label="under 8-thread bad-token flood")
    for i, (u, f) in enumerate(zip(p_u, p_f, strict=True)):
        a1.text(i, max(u, f) * 1.02, f"{f / u:.2f}x", ha="center", fontsize=8)
    a1.set_ylim(0, max(p_u + p_f) * 1.2)
    a1.set_xticks(list(x), labels, fontsize=8)
    a1.set_ylabel("victim submission p95 (ms)")
    a1.set_title("Another tenant's submissions (target <= 1.5x)")
    a1.legend(fontsize=8)
    a2.bar(list(x), rows, 0.5, color="tab:red")
    a2.axhline(1.0, ls="--", color="grey")
    a2.set_xticks(list(x), labels, fontsize=8)
    a2.set_ylabel("auth.login_failed rows / source / minute")
    a2.set_title("Audit growth during the flood (target <= 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="unloaded and flood phases")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--db-url", default=os.environ.get("GPUPLANE_TEST_PG_URL"),
                    help="a PostgreSQL server URL (a database is created and dropped on it)")
    ap.add_argument("--throttle-delay", type=float, default=None,
                    help="GPUPLANE_AUTH_THROTTLE_DELAY_S of the server (default: its default; "
                         "0 shows the cost of answering every throttled request at once)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/auth_flood.json"))
    a = ap.parse_args()
    from api_submit import _pg_database  # same folder

    many = [f"127.0.0.{i}" for i in range(2, 2 + a.threads)]
    results: dict[str, list[dict]] = {}
    kinds = ["sqlite"] + (["postgresql"] if a.db_url else [])
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        for kind in kinds:
            for sources in (many, many[:1]):
                with tempfile.TemporaryDirectory() as tmp:
                    home = Path(tmp)
                    if kind == "sqlite":
                        url, drop = f"sqlite:///{home}/flood.db", None
                    else:
                        url, drop = _pg_database(a.db_url)
                    try:
                        r = scenario(url, home, sources, a.threads, a.seconds, progress,
                                     a.throttle_delay)
                    finally:
                        if drop:
                            drop()
                results.setdefault(kind, []).append(r)
    table = Table(title="bad-token flood vs another tenant's submissions")
    for col in ("db", "sources", "flood req/s", "401", "429", "p95 alone ms", "p95 flood ms",
                "ratio", "audit rows (flood)", "after flush", "rows/src/min"):
        table.add_column(col, justify="right")
    for kind, runs in results.items():
        for r in runs:
            table.add_row(kind, str(r["sources"]), str(r["flood_per_s"]),
                          str(r["flood_answers"].get("401", 0)),
                          str(r["flood_answers"].get("429", 0)),
                          str(r["unloaded"]["p95_ms"]), str(r["under_flood"]["p95_ms"]),
                          str(r["p95_ratio"]), str(r["audit_rows_during_flood"]),
                          str(r["audit_rows_after_shutdown_flush"]),
                          str(r["audit_rows_per_source_per_minute"]))
    console.print(table)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"seconds": a.seconds, "threads": a.threads,
                                 "throttle_delay_s": a.throttle_delay,
                                 "python": platform.python_version(), "cpus": os.cpu_count(),
                                 "results": results}, indent=1) + "\n")
    png = a.out.with_suffix(".png")
    _plot(results, png)
    console.print(f"wrote {a.out} and {png}")


if __name__ == "__main__":
    main()
