"""``gpuplane top``: the pool, per-tenant use and the queue in one screen, refreshed in place.

Like ``sinfo`` (the pool by GPU model), a quota view (guaranteed / used / borrowed per project)
and ``squeue`` (pending work with its reason) at once; live as ``watch`` is (Rich ``Live``,
Ctrl-C quits). ``--once``, ``-o json|yaml`` or a stdout that is not a terminal print one frame
and return, for scripts. Where the figures come from: ``cli/pool.py``.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from gpuplane.cli import pool
from gpuplane.cli.common import (DEFAULT_URL, Output, OutputOpt, TokenOpt, UrlOpt, guarded,
                                 make_client)
from gpuplane.cli.render import console, dump, rich_table

POOL_COLUMNS = (("MODEL", "model"), ("GPUS", "gpus"), ("ALLOCATED", "allocated"),
                ("IDLE", "idle"), ("UNAVAILABLE", "unavailable"), ("FRAGMENTED", "fragmented"),
                ("ALLOC%", "alloc_pct"), ("MODES", "modes"))
TENANT_COLUMNS = (("ORGANISATION", "organisation"), ("PROJECT", "project"),
                  ("COHORT", "cohort"), ("GUARANTEED", "guaranteed"), ("USED", "used"),
                  ("BORROWED", "borrowed"), ("LENDABLE", "lendable"), ("RUNNING", "running"),
                  ("PENDING", "pending"))
QUEUE_COLUMNS = (("#", "position"), ("NAME", "name"), ("PROJECT", "project"),
                 ("PRIORITY", "priority_class"), ("TASKS", "tasks"), ("REQUEST", "request"),
                 ("WAITING", "waiting"), ("REASON", "reason_code"), ("WHY", "reason"))
HOST_COLUMNS = (("HOST", "host"), ("SITE", "site"), ("JURISDICTION", "jurisdiction"),
                ("STATE", "state"), ("SIMULATED", "simulated"), ("GPUS", "gpus"),
                ("USED", "gpus_used"), ("ALLOC%", "gpu_alloc_pct"), ("TASKS", "tasks"))


def top(
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit (the default "
                                                      "when stdout is not a terminal).")
                    ] = False,
    interval: Annotated[float, typer.Option("--interval", "-n", min=0.5, max=3600,
                                            help="Seconds between refreshes.")] = 2.0,
    hosts: Annotated[bool, typer.Option("--hosts", help="Add a row per host.")] = False,
    queue: Annotated[int, typer.Option("--queue", min=0, help="Pending workloads shown (0: "
                                                              "all).")] = 20,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """The pool by GPU model, per-tenant use and the queue, live (like sinfo + squeue)."""
    _top(once, interval, hosts, queue, url, token, output)


@guarded
def _top(once: bool, interval: float, hosts: bool, queue: int, url: str, token: str | None,
         output: Output) -> None:
    with make_client(url, token) as client:
        if output != Output.table:
            dump(read(client), output)
            return
        if once or not _interactive():
            console().print(frame(read(client), hosts, queue, client.url, None))
            return
        _live(client, interval, hosts, queue)


def _interactive() -> bool:
    return sys.stdout.isatty()


def _live(client: Any, interval: float, hosts: bool, queue: int) -> None:
    from rich.live import Live
    from rich.text import Text

    from gpuplane.domain.errors import GpuplaneError

    try:
        with Live(Text("reading ..."), auto_refresh=False) as live:
            while True:
                try:
                    view = frame(read(client), hosts, queue, client.url, interval)
                except GpuplaneError as exc:  # keep trying, as watch does
                    view = Text(f"{time.strftime('%H:%M:%S')} error: {exc.detail} "
                                f"[{exc.code}]; trying again every {interval:g}s")
                live.update(view, refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def read(client: Any) -> dict[str, Any]:
    """One frame's data: summary, pool by model, tenants, queue, hosts."""
    gpus = list(client.paginate("/v1/gpus"))
    active = [w for phase in ("Admitted", "Running")
              for w in client.paginate("/v1/workloads", phase=phase)]
    pending = list(client.paginate("/v1/workloads", phase="Pending"))
    projects = list(client.paginate("/v1/projects"))
    quotas = list(client.paginate("/v1/quotas"))
    metrics = pool.scrape(client)
    usage = None if metrics is not None else {u["project"]: u
                                              for u in client.get_json("/v1/usage")}
    models = pool.pool_by_model(gpus, metrics)
    queue = pool.queue_rows(pending)
    total = sum(m["gpus"] for m in models)
    allocated = round(sum(m["allocated"] for m in models), 3)
    summary = {"gpus": total, "gpus_allocated": allocated,
               "allocation_pct": round(100 * allocated / total, 1) if total else 0.0,
               "gpus_idle": round(sum(m["idle"] for m in models), 3),
               "gpus_unavailable": round(sum(m["unavailable"] for m in models), 3),
               "hosts": len({g["host"] for g in gpus}),
               "workloads_running": len(active), "workloads_pending": len(pending)}
    return {"summary": summary, "pool": models,
            "tenants": tenants(projects, quotas, metrics, usage, active, pending),
            "queue": queue, "hosts": pool.per_host(gpus, active)}


def tenants(projects: list[dict], quotas: list[dict], metrics: pool.Metrics | None,
            usage: dict[str, dict] | None, active: list[dict], pending: list[dict]
            ) -> list[dict[str, Any]]:
    """A row per visible project that has a GPU quota, holds GPUs or has work."""
    ledgers = pool.tenant_ledgers(metrics)
    rows = []
    for p in sorted(projects, key=lambda p: (p["organisation"], p["name"])):
        name = p["name"]
        guaranteed = sum(q["guaranteed"] for q in quotas
                         if q["project"] == name and q["resource"] == "gpu")
        ledger = None if ledgers is None else ledgers.get(name, {})
        if ledger is not None:
            used = sum(f["used"] for f in ledger.values())
            borrowed = sum(f["borrowed"] for f in ledger.values())
            # idle guarantee others may use now; nobody can without a cohort
            lendable = sum(f["lent"] for f in ledger.values()) if p.get("cohort") else None
        else:
            used = float(((usage or {}).get(name) or {}).get("now", {}).get("gpus", 0.0))
            borrowed = lendable = None
        running = sum(w["project"] == name for w in active)
        waiting = sum(w["project"] == name for w in pending)
        if not (guaranteed or used or running or waiting):
            continue
        rows.append({"organisation": p["organisation"], "project": name,
                     "cohort": p.get("cohort"), "weight": p.get("weight"),
                     "guaranteed": round(guaranteed, 3), "used": round(used, 3),
                     "borrowed": None if borrowed is None else round(borrowed, 3),
                     "lendable": None if lendable is None else round(lendable, 3),
                     "running": running, "pending": waiting})
    return rows


def frame(data: dict[str, Any], hosts: bool, queue: int, server: str,
          interval: float | None) -> Any:
    """The screen: a header, the pool, its totals, the tenants, the queue (and hosts)."""
    from rich.console import Group
    from rich.text import Text

    s = data["summary"]
    every = f"every {interval:g}s, Ctrl-C quits" if interval else "once"
    parts: list[Any] = [Text(f"gpuplane top  {server}  {time.strftime('%H:%M:%S')} ({every})",
                             style="bold"), Text("")]
    parts.append(rich_table(data["pool"], POOL_COLUMNS) if data["pool"]
                 else Text("No GPUs registered."))
    parts.append(Text(f"\n{s['gpus_allocated']:g}/{s['gpus']} GPUs allocated "
                      f"({s['allocation_pct']:g}%), {s['gpus_idle']:g} idle, "
                      f"{s['gpus_unavailable']:g} on hosts taking no work; "
                      f"{s['workloads_running']} workloads running, "
                      f"{s['workloads_pending']} pending\n"))
    if hosts:
        parts += [rich_table(data["hosts"], HOST_COLUMNS), Text("")]
    parts.append(Text("Tenants (GPUs)", style="bold"))
    parts.append(rich_table(data["tenants"], TENANT_COLUMNS) if data["tenants"]
                 else Text("No project holds or waits for GPUs."))
    rows = data["queue"]
    shown = rows if queue == 0 else rows[:queue]
    parts.append(Text(f"\nQueue ({len(rows)} pending)", style="bold"))
    if shown:
        parts.append(rich_table([{**r, "waiting": pool.wait(r["waiting_s"])} for r in shown],
                                QUEUE_COLUMNS, cut=("WHY",)))
    else:
        parts.append(Text("Nothing waits."))
    if len(shown) < len(rows):
        parts.append(Text(f"... and {len(rows) - len(shown)} more (--queue 0 shows all)"))
    return Group(*parts)


def register(app: typer.Typer) -> None:
    app.command("top")(top)
