"""``gpuplane logs`` and ``gpuplane top``: watching work and capacity."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from gpuplane.cli.common import (DEFAULT_URL, Output, OutputOpt, ProjectOpt, TokenOpt, UrlOpt,
                                 guarded, make_client)
from gpuplane.cli.render import dump, table


def logs(
    workload: Annotated[str, typer.Argument(help="Workload name or id.")],
    task: Annotated[int, typer.Option("--task", "-t", min=0, help="Task index.")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f",
                                         help="Keep printing until the task ends.")] = False,
    project: ProjectOpt = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Print a task's log (its latest attempt)."""
    _logs(workload, task, follow, project, url, token)


@guarded
def _logs(workload: str, task: int, follow: bool, project: str | None, url: str,
          token: str | None) -> None:
    out = sys.stdout.buffer
    with make_client(url, token) as client:
        path = f"/v1/workloads/{workload}/logs"
        if follow:
            for chunk in client.stream(path, task=task, project=project, follow="true"):
                out.write(chunk)
                out.flush()
            return
        offset = 0
        while True:
            resp = client.request("GET", path, params={"task": task, "project": project,
                                                       "offset": offset, "limit": 1 << 20})
            out.write(resp.content)
            nxt = int(resp.headers.get("X-Gpuplane-Next-Offset", offset + len(resp.content)))
            if not resp.content or nxt <= offset:
                break
            offset = nxt
        if resp.headers.get("X-Gpuplane-Log-Available") == "false":
            typer.echo("(no log: the task has not run on a host that keeps logs)", err=True)
        out.flush()


def top(
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """GPU allocation per host, and the work queue at a glance."""
    _top(url, token, output)


@guarded
def _top(url: str, token: str | None, output: Output) -> None:
    with make_client(url, token) as client:
        hosts = list(client.paginate("/v1/hosts"))
        gpus = list(client.paginate("/v1/gpus"))
        active = [w for phase in ("Admitted", "Running")
                  for w in client.paginate("/v1/workloads", phase=phase)]
        pending = list(client.paginate("/v1/workloads", phase="Pending"))
    used: dict[str, float] = {}
    for g in gpus:
        used[g["host"]] = used.get(g["host"], 0.0) + float(g.get("allocated") or 0)
    tasks: dict[str, int] = {}
    for w in active:
        for t in (w.get("status") or {}).get("tasks") or []:
            if t.get("placement") and t.get("phase") in ("Admitted", "Running"):
                tasks[t["placement"]["host"]] = tasks.get(t["placement"]["host"], 0) + 1
    rows = []
    for h in hosts:
        n = len(h.get("gpus") or [])
        u = used.get(h["name"], 0.0)
        rows.append({"host": h["name"], "site": h["site"], "jurisdiction": h["jurisdiction"],
                     "state": h["state"], "simulated": h["simulated"], "gpus": n,
                     "gpus_used": round(u, 3),
                     "gpu_alloc_pct": round(100 * u / n, 1) if n else None,
                     "tasks": tasks.get(h["name"], 0)})
    total_gpus = sum(r["gpus"] for r in rows)
    total_used = sum(r["gpus_used"] for r in rows)
    summary = {"hosts": len(rows), "gpus": total_gpus, "gpus_allocated": round(total_used, 3),
               "allocation_pct": round(100 * total_used / total_gpus, 1) if total_gpus else 0.0,
               "workloads_running": len(active), "workloads_pending": len(pending)}
    if output != Output.table:
        dump({"summary": summary, "hosts": rows}, output)
        return
    table(rows, (("HOST", "host"), ("SITE", "site"), ("JURISDICTION", "jurisdiction"),
                 ("STATE", "state"), ("SIMULATED", "simulated"), ("GPUS", "gpus"),
                 ("USED", "gpus_used"), ("ALLOC%", "gpu_alloc_pct"), ("TASKS", "tasks")))
    typer.echo(f"\n{summary['gpus_allocated']:g}/{summary['gpus']} GPUs allocated "
               f"({summary['allocation_pct']:g}%), {summary['workloads_running']} workloads "
               f"running, {summary['workloads_pending']} pending")


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)
    app.command("top")(top)
