"""How long does a ``/metrics`` scrape of a 2,000-host fleet take?

Scenario: a SQLite store (file, WAL) with ``--hosts`` simulated hosts of 8 GPUs each (2,000:
16,000 GPUs) over 8 sites in 4 jurisdictions: H100 / A100 / L40S, most GPUs whole, every 20th
host with shared GPUs, every 20th with MIG GPUs (a 3g + 4x1g layout); 10 organisations with 5
projects each (50 projects, guarantees and cohorts); workloads of 1, 2, 4 and 8 GPUs, 500-milli
shares and MIG slices admitted and started by the real control loop (``sim`` driver) until about
60 % of the GPUs are held, and ``--pending`` more waiting in the queue. Then ``--scrapes`` full
scrapes ``GET /metrics`` with the admin token through the app (FastAPI ``TestClient``: auth,
every collector, text rendering); reported: p50 / min / max seconds, the series count and the
series per host.

Baseline, in the same process on the same store (when ``--baseline-rev`` names a git revision
that has ``src/gpuplane/api/metrics_pool.py``, default the last one before this benchmark): the
pool collector of that revision, loaded from git and swapped in, timed the same way; the ratio is
baseline / now. The two scrapes must export the same series with the same values (checked;
to 1e-9; the queue ages, which grow
with the clock, to a minute). A second, cheaper floor: the bare read of the rows a scrape
needs in one read transaction (hosts, active workloads, the queue), no series built.

Run: ``.venv/bin/python benchmarks/metrics_scrape.py [--hosts 2000] [--scrapes 7]
[--out benchmarks/results/metrics_scrape.json]`` (writes the JSON and a PNG beside it). Building
the fleet takes about a minute; ``--keep DIR`` keeps (and reuses) the database there.
``build_fleet`` is used by ``console_paint.py`` too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASELINE_REV = "93c77b4"
SITES = [("fra-1", "EU/DE"), ("muc-1", "EU/DE"), ("ber-1", "EU/DE"), ("par-1", "EU/FR"),
         ("lyo-1", "EU/FR"), ("zrh-1", "CH"), ("gva-1", "CH"), ("ams-1", "EU/NL")]
MODELS = [("H100-80GB", 81920), ("A100-80GB", 81920), ("L40S", 49152)]
MIG_LAYOUT = [{"profile": "3g.40gb", "start": 0}, {"profile": "1g.10gb", "start": 4},
              {"profile": "1g.10gb", "start": 5}, {"profile": "1g.10gb", "start": 6}]


def _host_spec(i: int) -> Any:
    from gpuplane.service.specs import HostSpec

    site, _ = SITES[i % len(SITES)]
    model, mem = MODELS[i % len(MODELS)] if i % 20 != 19 else MODELS[0]
    mode = "shared" if i % 20 == 9 else "mig" if i % 20 == 19 else "whole"
    gpus = [{"index": g, "model": model, "memory_mib": mem, "numa": g // 4, "mode": mode,
             **({"mig_layout": MIG_LAYOUT} if mode == "mig" else {})} for g in range(8)]
    return HostSpec(name=f"{site}-h{i:04d}", site=site, cpu=128, memory="1024Gi", driver="sim",
                    rack=f"{site}-r{i // 16 % 64:02d}", gpus=gpus,
                    labels={"gpuplane.io/simulated": "true"})


def _job(i: int, project: str, waiting: bool = False) -> Any:
    """Job ``i``: 1, 2, 4 or 8 whole GPUs, a 500-milli share or a 1g MIG slice; a ``waiting``
    one asks for a host no one has (it stays in the queue with its reason)."""
    from gpuplane.domain.workloads import WorkloadSpec

    kind = i % 10
    res: dict[str, Any] = {"cpu": 4, "memory": "32Gi", "gpus": (1, 1, 2, 4, 8, 1, 2, 1, 1, 1)[kind]}
    if kind == 7:
        res.update(gpus=1, gpu_milli=500)
    elif kind == 8:
        res.update(gpus=1, mig_profile="1g.10gb")
    task: dict[str, Any] = {"command": ["train"], "resources": res}
    if waiting:
        res.update(gpus=8, gpu_models=["L40S"])
        res.pop("gpu_milli", None)
        res.pop("mig_profile", None)
        task["selector"] = {"bench/never": "yes"}
    return WorkloadSpec(name=f"job-{i:05d}", project=project,
                        labels={"gpuplane.io/sim-duration-s": "86400"}, tasks=[task])


def build_fleet(home: Path, hosts: int = 2000, fill: float = 0.6, pending: int = 300,
                log: Any = print) -> dict:
    """A fleet in ``home/gpuplane.db`` (the path ``gpuplane up --home home`` opens), with the
    admin token in ``home/admin-token``. Reuses a database that is already there."""
    from gpuplane.control.loop import ControlLoop
    from gpuplane.drivers.sim import SimDriver
    from gpuplane.service import Principal, Services
    from gpuplane.service.specs import OrganisationSpec, ProjectSpec, QuotaSpec, SiteSpec
    from gpuplane.store import Store

    home.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{home / 'gpuplane.db'}"
    marker = home / "fleet.json"
    if marker.exists():
        return json.loads(marker.read_text())
    t0 = time.perf_counter()
    store = Store(db_url)
    store.migrate()
    svc = Services(store)
    (home / "admin-token").write_text(svc.bootstrap_admin() + "\n")
    system = Principal.system()
    for name, jur in SITES:
        svc.inventory.create_site(system, SiteSpec(name=name, jurisdiction=jur))
    for i in range(hosts):
        svc.inventory.register_host(system, _host_spec(i))
    projects = []
    gpus = hosts * 8
    for o in range(10):
        org = f"org-{o:02d}"
        svc.tenancy.create_organisation(system, OrganisationSpec(name=org))
        for p in range(5):
            name = f"{org}-p{p}"
            svc.tenancy.create_project(system, ProjectSpec(
                name=name, organisation=org, cohort=f"cohort-{o % 3}"))
            svc.policy.set_quota(system, QuotaSpec(project=name, resource="gpu",
                                                   guaranteed=round(gpus * 0.9 / 50)))
            projects.append(name)
    log(f"  {hosts} hosts, {len(projects)} projects registered in "
        f"{time.perf_counter() - t0:.1f} s")
    loop = ControlLoop(store, {"sim": SimDriver(home)}, holder="bench", lease_ttl_s=3600)
    avg = 0.1 * (1 + 1 + 2 + 4 + 8 + 1 + 2) + 0.1 * 0.5 + 0.1 * (1 / 7) + 0.1
    running = int(gpus * fill / avg)
    i = 0
    for batch in range(0, running, 1000):
        for i in range(batch, min(running, batch + 1000)):
            svc.workloads.submit_workload(system, _job(i, projects[i % len(projects)]))
        loop.tick()
        log(f"  {min(running, batch + 1000)} workloads submitted and ticked "
            f"({time.perf_counter() - t0:.1f} s)")
    for _ in range(3):
        loop.tick()
    for k in range(running, running + pending):  # the queue: wanting 8 GPUs on one L40S host
        svc.workloads.submit_workload(system, _job(k, projects[k % len(projects)], True))
    loop.tick()
    loop.release()
    with store.read() as tx:
        active = tx.workloads.list_active()
    held = sum(t.placement.total_milli for w in active for t in w.tasks
               if t.phase.holds_resources and t.placement) / 1000
    store.dispose()
    info = {"hosts": hosts, "gpus": gpus, "projects": len(projects), "workloads": running + pending,
            "gpus_held": round(held, 1), "build_s": round(time.perf_counter() - t0, 1),
            "db_url": db_url}
    marker.write_text(json.dumps(info))
    return info


def _git_module(rev: str, path: str, name: str, replace: dict[str, str]) -> Any:
    src = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    for old, new in replace.items():
        src = src.replace(old, new)
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(src)
    spec = importlib.util.spec_from_file_location(name, file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _load_baseline(rev: str) -> Any:
    """``gpuplane.api.metrics`` (with its ``metrics_pool``) as it was at git revision ``rev``;
    None where git or the revision is missing."""
    try:
        _git_module(rev, "src/gpuplane/api/metrics_pool.py", "metrics_pool_baseline", {})
        return _git_module(rev, "src/gpuplane/api/metrics.py", "metrics_baseline",
                           {"from gpuplane.api.metrics_pool import": "from metrics_pool_baseline import"})
    except (OSError, subprocess.CalledProcessError):
        return None


def _samples(text: str) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith(("gpuplane_http_", "gpuplane_admissions", "gpuplane_preempt",
                                  "gpuplane_task_failures", "gpuplane_scheduling_admission")):
                continue  # these count this process's requests and events: differ by design
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _time_scrapes(client: Any, n: int) -> tuple[list[float], str]:
    times, text = [], ""
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get("/metrics")
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
        text = r.text
    return times, text


def _stats(times: list[float]) -> dict:
    return {"p50_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "max_s": round(max(times), 4), "runs": len(times)}


def _time_collector(collector: Any, n: int) -> tuple[list[float], str]:
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry()
    reg.register(collector)
    generate_latest(reg)  # the first read starts the event counters
    times, text = [], b""
    for _ in range(n):
        t0 = time.perf_counter()
        text = generate_latest(reg)
        times.append(time.perf_counter() - t0)
    return times, text.decode()


def _bare_read(store: Any, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with store.read() as tx:
            tx.hosts.list_all()
            tx.workloads.list_active()
            tx.workloads.list_schedulable(time.time())
        times.append(time.perf_counter() - t0)
    return times


def _app_collector(app: Any) -> tuple[Any, Any]:
    """(the registry of ``app``'s /metrics, its StoreCollector)."""
    from gpuplane.api.metrics import MetricsMiddleware, StoreCollector

    metrics = next(m.kwargs["metrics"] for m in app.user_middleware
                   if m.cls is MetricsMiddleware)
    reg = metrics.registry
    return reg, next(c for c in list(reg._collector_to_names) if isinstance(c, StoreCollector))


def run(home: Path, hosts: int, scrapes: int, baseline_rev: str | None) -> dict:
    from fastapi.testclient import TestClient

    import gpuplane.api.metrics as metrics_module
    from gpuplane.api import create_app
    from gpuplane.settings import Settings

    print(f"building the fleet in {home} ...")
    fleet = build_fleet(home, hosts)
    print(f"fleet: {fleet}")
    app = create_app(Settings(home=home, db_url=fleet["db_url"]), migrate=False)
    store = app.state.store
    token = (home / "admin-token").read_text().strip()
    out: dict[str, Any] = {"fleet": fleet, "python": platform.python_version(),
                           "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    base = _load_baseline(baseline_rev) if baseline_rev else None
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        client.get("/metrics")  # warm: imports, first event counter read
        times, text = _time_scrapes(client, scrapes)
        now = _samples(text)
        out["scrape_now"] = _stats(times)
        out["series"] = len(now)
        out["series_per_host"] = round(len(now) / hosts, 3)
        print(f"GET /metrics now: p50 {out['scrape_now']['p50_s']:.3f} s  (min "
              f"{out['scrape_now']['min_s']:.3f}, max {out['scrape_now']['max_s']:.3f}); "
              f"{len(now)} series, {out['series_per_host']} per host")
        if base is not None:  # the same app with the baseline's store collector
            reg, mine = _app_collector(app)
            reg.unregister(mine)
            reg.register(base.StoreCollector(store))
            client.get("/metrics")
            btimes, btext = _time_scrapes(client, scrapes)
            old = _samples(btext)
            out["scrape_baseline"] = {"rev": baseline_rev, **_stats(btimes)}
            out["ratio_scrape_baseline_over_now"] = round(
                out["scrape_baseline"]["p50_s"] / out["scrape_now"]["p50_s"], 2)
            print(f"GET /metrics at {baseline_rev}: p50 {out['scrape_baseline']['p50_s']:.3f} s;"
                  f" baseline / now = {out['ratio_scrape_baseline_over_now']}")
            diff = sorted(k for k in set(old) | set(now) if k not in old or k not in now
                          or abs(old[k] - now[k]) > (60 if "_oldest_" in k[0] else 1e-9))
            out["same_series_and_values"] = not diff
            out["differences"] = [str(d) for d in diff[:10]]
            print(f"  same series and values: {not diff}" + (f" {diff[:10]}" if diff else ""))
    # the store's collector alone (what changed), now and at the baseline
    ctimes, _ = _time_collector(metrics_module.StoreCollector(store), scrapes)
    out["collector_now"] = _stats(ctimes)
    print(f"store collector alone, now: p50 {out['collector_now']['p50_s']:.3f} s")
    if base is not None:
        btimes, _ = _time_collector(base.StoreCollector(store), scrapes)
        out["collector_baseline"] = {"rev": baseline_rev, **_stats(btimes)}
        out["ratio_collector_baseline_over_now"] = round(
            out["collector_baseline"]["p50_s"] / out["collector_now"]["p50_s"], 2)
        print(f"store collector alone at {baseline_rev}: p50 "
              f"{out['collector_baseline']['p50_s']:.3f} s; baseline / now = "
              f"{out['ratio_collector_baseline_over_now']}")
    out["records_read"] = _stats(_bare_read(store, scrapes))
    print(f"reading the domain records the baseline reads (hosts, active workloads, queue): "
          f"p50 {out['records_read']['p50_s']:.3f} s")
    store.dispose()
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rev = result.get("scrape_baseline", {}).get("rev")
    bars = [(f"records read\n(as at {rev})" if rev else "records read", result["records_read"],
             "#9aa3ad")]
    if rev:
        bars += [(f"collector\nat {rev}", result["collector_baseline"], "#e8a29c"),
                 (f"GET /metrics\nat {rev}", result["scrape_baseline"], "#b3261e")]
    bars += [("collector\nnow", result["collector_now"], "#9db7ec"),
             ("GET /metrics\nnow", result["scrape_now"], "#2f5fc4")]
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    xs = range(len(bars))
    ax.bar(xs, [b[1]["p50_s"] * 1000 for b in bars], color=[b[2] for b in bars])
    ax.set_xticks(list(xs), [b[0] for b in bars], fontsize=8)
    ax.axhline(200, color="#8a4b00", linestyle="--", label="target 200 ms")
    for i, (_, st, _) in enumerate(bars):
        ax.text(i, st["p50_s"] * 1000, f"{st['p50_s'] * 1000:.0f} ms", ha="center",
                va="bottom", fontsize=8)
    ax.set_ylabel("ms (median of runs)")
    f = result["fleet"]
    ax.set_title(f"/metrics of {f['hosts']} hosts, {f['gpus']} GPUs, {f['workloads']} workloads"
                 f" ({result['cpus']} CPUs)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=2000)
    ap.add_argument("--scrapes", type=int, default=7)
    ap.add_argument("--baseline-rev", default=BASELINE_REV,
                    help="git revision whose metrics_pool.py is the baseline ('' for none)")
    ap.add_argument("--keep", type=Path, help="build (or reuse) the fleet database here")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/metrics_scrape.json")
    args = ap.parse_args()
    if args.keep:
        result = run(args.keep, args.hosts, args.scrapes, args.baseline_rev or None)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(Path(tmp) / "home", args.hosts, args.scrapes, args.baseline_rev or None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
