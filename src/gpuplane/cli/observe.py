"""``gpuplane logs``: a task's output (``gpuplane top`` is in ``cli/top.py``)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from gpuplane.cli.common import DEFAULT_URL, ProjectOpt, TokenOpt, UrlOpt, guarded, make_client


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


def register(app: typer.Typer) -> None:
    from gpuplane.cli import top

    app.command("logs")(logs)
    top.register(app)
