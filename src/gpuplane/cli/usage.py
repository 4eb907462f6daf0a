"""``gpuplane usage``: chargeback per org, project or user (``GET /v1/usage/chargeback``)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from gpuplane.cli.common import DEFAULT_URL, Output, TokenOpt, UrlOpt, guarded, make_client
from gpuplane.cli.render import dump, table
from gpuplane.domain.errors import FieldError, InvalidInput


class By(str, Enum):
    org = "org"
    project = "project"
    user = "user"


class Spread(str, Enum):
    off = "off"
    uniform = "uniform"
    proportional = "proportional"


class UsageOutput(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    focus = "focus"


def usage(
    by: Annotated[By, typer.Option("--by", help="Group rows by organisation, project or user.")
                  ] = By.project,
    since: Annotated[str | None, typer.Option(
        "--since", show_default=False,
        help="Start: ISO 8601 (2026-01-01, 2026-01-01T00:00:00Z) or epoch seconds "
             "\\[default: start of the UTC month].")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", show_default=False, help="End (excluded), same forms \\[default: now].")
    ] = None,
    spread: Annotated[Spread, typer.Option(
        "--spread", help="Move each host's idle capacity onto its tenants: off, uniform "
                         "(equal shares) or proportional (by use).")] = Spread.off,
    output: Annotated[UsageOutput, typer.Option(
        "--output", "-o", help="table, json, csv (these rows) or focus (FinOps FOCUS-style "
                               "CSV).")] = UsageOutput.table,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Chargeback: GPU-hours by fraction (whole, MIG, shared), CPU, memory and cost per org,
    project or user; GPU time lost to preemption is shown apart and not charged."""
    _usage(by.value, since, until, spread.value, output.value, url, token)


def _instant(value: str | None, option: str) -> float | None:
    from gpuplane.governance.chargeback import parse_instant

    try:
        return parse_instant(value)
    except ValueError as exc:
        raise InvalidInput(f"invalid {option}", [FieldError(option, str(exc))]) from None


ROW_COLUMNS = (("GPU-H", "gpu_hours"), ("WHOLE", "gpu_hours_whole"), ("MIG", "gpu_hours_mig"),
               ("SHARED", "gpu_hours_shared"), ("CPU-CORE-H", "cpu_core_hours"),
               ("MEM-GIB-H", "memory_gib_hours"), ("IDLE-GPU-H", "idle_gpu_hours"),
               ("LOST-GPU-H", "lost_gpu_hours"), ("COST", "cost"))
HOST_COLUMNS = (("HOST", "host"), ("CLASS", "cost_class"), ("CAPACITY", "gpu.capacity"),
                ("CHARGED", "gpu.charged"), ("IDLE", "gpu.idle"), ("SPREAD", "gpu.idle_spread"),
                ("FRAGMENTED", "gpu.fragmented"), ("LOST", "gpu.lost"),
                ("RECONCILED", "reconciled"))


@guarded
def _usage(by: str, since: str | None, until: str | None, spread: str, output: str, url: str,
           token: str | None) -> None:
    params = {"by": by, "since": _instant(since, "--since"), "until": _instant(until, "--until"),
              "spread": spread, "format": "json" if output in ("table", "json") else output}
    with make_client(url, token) as client:
        resp = client.request("GET", "/v1/usage/chargeback", params=params)
    if output in ("csv", "focus"):
        typer.echo(resp.text, nl=False)
        return
    body = resp.json()
    if output == "json":
        dump(body, Output.json)
        return
    for w in body.get("warnings") or []:
        typer.echo(f"warning: {w}", err=True)
    keys = {"org": (("ORG", "org"),), "project": (("ORG", "org"), ("PROJECT", "project")),
            "user": (("USER", "user"),)}[by]
    sim = any(r.get("simulated") for r in body["rows"])
    columns = (*keys, *((("SIMULATED", "simulated"),) if sim else ()), *ROW_COLUMNS)
    if body["rows"]:
        table(body["rows"], columns)
    else:
        typer.echo("No usage in this period.")
    t = body["totals"]
    typer.echo(f"\ntotal: {t['gpu_hours']:g} GPU-hours, {t['cpu_core_hours']:g} core-hours, "
               f"{t['memory_gib_hours']:g} GiB-hours; cost {t['cost']:g} {body['currency']}"
               + (f" (incl. {t['idle_cost']:g} spread idle)" if t["idle_cost"] else "")
               + (f"; lost to preemption (not charged): {t['lost_gpu_hours']:g} GPU-hours"
                  if t["lost_gpu_hours"] else ""))
    if body.get("hosts"):
        typer.echo("")
        table(body["hosts"], HOST_COLUMNS, title="GPU-hours per host")


def register(app: typer.Typer) -> None:
    app.command("usage")(usage)
