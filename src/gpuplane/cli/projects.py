"""``gpuplane describe project NAME``: a project's quota, use, borrowing and queue at a glance.

What it shows and where it comes from (``cli/pool.py`` says why ``/metrics``):

- the project (``GET /v1/projects/{name}``): organisation, cohort, fair-share weight;
- its quotas (``GET /v1/quotas?project=``), each GPU flavour with what the scheduler's quota
  ledger counts now (``/metrics``): used, borrowed (held above the guarantee, from the cohort)
  and lendable (idle guarantee the cohort may use now); CPU and memory quotas with the
  project's current holdings (``GET /v1/usage``);
- use now and GPU-hours this month (``GET /v1/usage?project=&since=``);
- fair share: the weight, the cohort, and the share of the pool's GPUs it holds now;
- pending work (``GET /v1/workloads?project=&phase=Pending``): how many, counted by reason.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import typer

from gpuplane.cli import pool
from gpuplane.cli.common import Output
from gpuplane.cli.render import dump, table

QUOTA_COLUMNS = (("RESOURCE", "resource"), ("FLAVOR", "flavor"), ("GUARANTEED", "guaranteed"),
                 ("BORROWING_LIMIT", "borrowing_limit"), ("LENDING_LIMIT", "lending_limit"),
                 ("USED", "used"), ("BORROWED", "borrowed"), ("LENDABLE", "lendable"))
REASON_COLUMNS = (("WORKLOADS", "workloads"), ("REASON", "code"), ("FOR EXAMPLE", "example"))


def month_start(t: float) -> float:
    """Start of the UTC calendar month of ``t`` (as ``gpuplane usage`` counts a month)."""
    d = datetime.fromtimestamp(t, UTC)
    return d.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def read(client: Any, name: str, project: dict[str, Any]) -> dict[str, Any]:
    """Everything ``describe project`` shows, as one document (``-o json`` prints it)."""
    since = month_start(time.time())
    quotas = list(client.paginate("/v1/quotas", project=name))
    usage = next(iter(client.get_json("/v1/usage", project=name, since=since)), None)
    pending = list(client.paginate("/v1/workloads", project=name, phase="Pending"))
    running = [w for phase in ("Admitted", "Running")
               for w in client.paginate("/v1/workloads", project=name, phase=phase)]
    pool_gpus = sum(1 for _ in client.paginate("/v1/gpus"))
    metrics = pool.scrape(client)
    ledgers = pool.tenant_ledgers(metrics)
    ledger = None if ledgers is None else ledgers.get(name, {})
    now = (usage or {}).get("now") or {}
    rows = []
    for q in quotas:
        row = {k: q.get(k) for k in ("resource", "flavor", "guaranteed", "borrowing_limit",
                                     "lending_limit")}
        if q["resource"] == "gpu":
            fig = None if ledger is None else ledger.get(q["flavor"], {})
            row.update(used=None if fig is None else fig.get("used", 0.0),
                       borrowed=None if fig is None else fig.get("borrowed", 0.0),
                       # nobody borrows a guarantee outside a cohort
                       lendable=None if fig is None or not project.get("cohort")
                       else fig.get("lent", 0.0))
        else:
            row.update(used=now.get("cpu_cores") if q["resource"] == "cpu"
                       else now.get("memory_mib"), borrowed=None, lendable=None)
        rows.append(row)
    quoted = {q["flavor"] for q in quotas if q["resource"] == "gpu"}
    for flavor, fig in sorted((ledger or {}).items()):  # GPUs held in a flavour without quota
        if flavor not in quoted and fig.get("used"):
            rows.append({"resource": "gpu", "flavor": flavor, "guaranteed": 0.0,
                         "borrowing_limit": None, "lending_limit": None, "used": fig["used"],
                         "borrowed": fig.get("borrowed", 0.0), "lendable": 0.0})
    used_gpus = (sum(f.get("used", 0.0) for f in ledger.values()) if ledger is not None
                 else float(now.get("gpus", 0.0)))
    queue = pool.queue_rows(pending)
    month = {k: round(sum(((usage or {}).get(part) or {}).get(k, 0.0)
                          for part in ("real", "simulated")), 3)
             for k in ("gpu_hours", "cpu_core_hours", "memory_gib_hours", "lost_gpu_hours")}
    return {
        "project": project, "quotas": rows,
        "usage": {"now": now, "this_month": month, "since": since},
        "fair_share": {"weight": project.get("weight"), "cohort": project.get("cohort"),
                       "used_gpus": round(used_gpus, 3), "pool_gpus": pool_gpus,
                       "pool_share_pct": round(100 * used_gpus / pool_gpus, 1)
                       if pool_gpus else 0.0},
        "running": {"workloads": len(running)},
        "pending": {"workloads": len(pending),
                    "tasks": sum(int(r["tasks"].split("/")[0]) for r in queue),
                    "reasons": pool.reasons_summary(queue)},
        "ledger_available": ledger is not None,
    }


def show(doc: dict[str, Any], output: Output) -> None:
    if output != Output.table:
        dump(doc, output)
        return
    p = doc["project"]
    head = {"name": p["name"], "organisation": p["organisation"],
            "display_name": p.get("display_name"), "cohort": p.get("cohort"),
            "weight": p.get("weight"), "classification": p.get("classification")}
    dump({k: "<none>" if v in (None, "") else v for k, v in head.items()}, Output.yaml)
    typer.echo("")
    if doc["quotas"]:
        table(doc["quotas"], QUOTA_COLUMNS, title="Quotas")
        if not doc["ledger_available"]:
            typer.echo("(used / borrowed / lendable GPUs: the server's /metrics did not answer)")
    else:
        typer.echo("Quotas: none (GPUs only by borrowing from idle capacity, if preemptible)")
    u = doc["usage"]
    now, month = u["now"], u["this_month"]
    typer.echo(f"\nUsage: now {now.get('gpus', 0):g} GPUs, {now.get('cpu_cores', 0):g} CPU "
               f"cores, {now.get('memory_mib', 0) / 1024:g} GiB in {now.get('tasks', 0)} "
               f"task(s); this month {month['gpu_hours']:g} GPU-hours, "
               f"{month['cpu_core_hours']:g} core-hours"
               + (f", {month['lost_gpu_hours']:g} GPU-hours lost to preemption"
                  if month["lost_gpu_hours"] else ""))
    fs = doc["fair_share"]
    typer.echo(f"Fair share: weight {fs['weight']:g}"
               + (f" in cohort {fs['cohort']}" if fs["cohort"] else " (no cohort: it neither "
                                                                    "lends nor borrows)")
               + f"; holds {fs['used_gpus']:g} of the pool's {fs['pool_gpus']} GPUs "
                 f"({fs['pool_share_pct']:g}%)")
    pend = doc["pending"]
    typer.echo(f"Workloads: {doc['running']['workloads']} running, {pend['workloads']} pending"
               + (f" ({pend['tasks']} task(s) waiting)" if pend["workloads"] else ""))
    if pend["reasons"]:
        typer.echo("")
        table(pend["reasons"], REASON_COLUMNS, title="Why work waits")
        typer.echo(f"\n(each one: gpuplane describe workload NAME -p {p['name']}; the queue: "
                   "gpuplane top)")
