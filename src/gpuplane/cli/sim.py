"""``gpuplane sim ...``: trace-driven simulations (openb placement, sharing replay).

``sim openb`` runs one FGD_PROTOCOL experiment; ``sim openb-grid`` runs traces x
policies x seeds in parallel and writes CSV, JSON and PNG plots. Heavy imports
stay inside the commands so ``gpuplane --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer

app = typer.Typer(help="Trace-driven what-if simulations.", no_args_is_help=True)


def _fail(exc: Exception) -> None:
    code = getattr(exc, "code", "gpuplane.error")
    typer.echo(f"error: {exc} [{code}]", err=True)
    raise typer.Exit(2)


def _default_data() -> Path:
    from gpuplane.sim.openb_grid import default_data_dir

    return default_data_dir()


@app.command("openb")
def openb(
    nodes: Path = typer.Option(None, "--nodes", help="Node list CSV (default: "
                               "<data>/openb_node_list_gpu_node.csv)."),
    pods: Path = typer.Option(None, "--pods", help="Pod list CSV (default: <data>/"
                              "openb_pod_list_default.csv)."),
    data: Path = typer.Option(None, "--data", help="Folder of the openb CSVs "
                              "(default: ../shared/data/openb from the project root)."),
    policy: str = typer.Option("gpuplane", "--policy", help="random, dotprod, clustering, "
                               "packing, bestfit, fgd or gpuplane (default)."),
    seed: int = typer.Option(42, "--seed", help="Seed of the arrival order and tie ranks."),
    inflation: float = typer.Option(1.3, "--inflation", help="Submit pods until GPU demand "
                                    "reaches this multiple of capacity (tuning ratio)."),
    distribution: str = typer.Option(
        "online", "--distribution",
        help="Target distribution of the gpuplane policy: 'online' (default) learns it from the "
             "pods as they arrive, each counted once, exactly as the live control plane does; "
             "'trace' gives it the whole pod list's distribution, as FGD's paper does. The "
             "baselines (fgd included) always get the trace's."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    no_frag: bool = typer.Option(False, "--no-frag", help="Skip the fragmentation report."),
) -> None:
    """Run one openb experiment (FGD_PROTOCOL.md) and print its KPIs."""
    from gpuplane.domain.errors import GpuplaneError
    from gpuplane.sim.openb import read_nodes, read_pods
    from gpuplane.sim.openb_run import check_distribution, run_experiment

    t0 = time.perf_counter()
    try:
        base = data or _default_data()
        nodes = nodes or base / "openb_node_list_gpu_node.csv"
        pods = pods or base / "openb_pod_list_default.csv"
        from gpuplane.scheduling.placement import profiles

        profiles.get(policy)  # validate the name and distribution before reading files
        check_distribution(distribution)
        hosts = read_nodes(nodes)
        trace = read_pods(pods)
        res = run_experiment(hosts, trace, policy, seed, inflation, frag=not no_frag,
                             distribution=distribution)
    except GpuplaneError as exc:
        _fail(exc)
        return
    out = res.as_dict()
    out["sim_seconds"] = out["seconds"]
    out["seconds"] = round(time.perf_counter() - t0, 3)
    if as_json:
        sys.stdout.write(json.dumps(out) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"openb {res.trace} / {policy} / seed {seed} / {distribution} "
                        "distribution")
    table.add_column("arrival %", justify="right")
    table.add_column("allocated %", justify="right")
    table.add_column("frag ratio %", justify="right")
    for x in ("50", "80", "90", "100", "110", "120", "130"):
        fr = res.frag_ratio.get(x)
        table.add_row(x, f"{res.alloc_ratio.get(x)}", "-" if fr is None else f"{fr:.2f}")
    con = Console()
    con.print(table)
    con.print(f"pods submitted {res.pods_submitted}, failed {res.failed_pods}; "
              f"{out['seconds']:.2f} s end to end ({res.seconds:.2f} s simulation)")


@app.command("openb-grid")
def openb_grid(
    data: Path = typer.Option(None, "--data", help="Folder of the openb CSVs."),
    traces: str = typer.Option("default,cpu050,gpushare40,multigpu30,gpuspec20", "--traces",
                               help="Comma-separated trace names (openb_pod_list_<name>.csv)."),
    policies: str = typer.Option("random,dotprod,clustering,packing,bestfit,fgd,gpuplane",
                                 "--policies", help="Comma-separated policy names."),
    seeds: str = typer.Option("42-51", "--seeds", help="Seeds, e.g. 42-51 or 42,43."),
    inflation: float = typer.Option(1.3, "--inflation", help="Tuning ratio."),
    distribution: str = typer.Option("online", "--distribution",
                                     help="gpuplane's target distribution: online (default, "
                                          "as the live plane) or trace (as FGD's paper)."),
    jobs: int = typer.Option(2, "--jobs", help="Worker processes."),
    out: Path = typer.Option(Path("results/openb-grid"), "--out", help="Output folder."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run traces x policies x seeds; write CSV, JSON and PNG plots under --out."""
    from gpuplane.domain.errors import GpuplaneError
    from gpuplane.sim.openb_grid import cpu_jobs, parse_seeds, run_grid, write_outputs

    try:
        seed_list = parse_seeds(seeds)
        tr = [t.strip() for t in traces.split(",") if t.strip()]
        pol = [p.strip() for p in policies.split(",") if p.strip()]
        base = data or _default_data()
        total = len(tr) * len(pol) * len(seed_list)
        results: list[dict] = []
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        with Progress(TextColumn("[bold]openb grid"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.description}"),
                      transient=as_json, disable=as_json) as prog:
            bar = prog.add_task("", total=total)
            for r in run_grid(base, tr, pol, seed_list, inflation, cpu_jobs(jobs),
                              distribution=distribution):
                results.append(r)
                prog.update(bar, advance=1,
                            description=f"{r['trace']}/{r['policy']}/{r['seed']}: "
                                        f"{r['alloc_ratio'].get('130')}")
        paths = write_outputs(results, out)
        if plots:
            from gpuplane.sim.openb_plots import write_plots

            write_plots(results, out)
    except GpuplaneError as exc:
        _fail(exc)
        return
    summary = Path(paths["summary"]).read_text()
    if as_json:
        import csv
        import io

        rows = list(csv.DictReader(io.StringIO(summary)))
        sys.stdout.write(json.dumps({"out": str(out), "runs": len(results), "summary": rows}) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    import csv
    import io

    table = Table(title=f"openb grid: {len(results)} runs -> {out}")
    rows = list(csv.DictReader(io.StringIO(summary)))
    for c in ("trace", "policy", "seeds", "mean100", "mean130", "min130", "max130", "seconds"):
        table.add_column(c, justify="left" if c in ("trace", "policy") else "right")
    for row in rows:
        table.add_row(*[row[c] for c in ("trace", "policy", "seeds", "mean100", "mean130",
                                         "min130", "max130", "seconds")])
    Console().print(table)
