"""``gpuplane sim sharing``, ``sim replay``, ``sim trace-gen``: replay a multi-tenant job history.

``sharing`` runs the sprawl benchmark (dedicated clusters vs pooled baselines vs gpuplane's shared
pool; ``--find-min-gpus`` searches the consolidation factor); ``replay`` runs one mode;
``trace-gen`` writes a synthetic held-out trace (``sim/tracegen.py``). ``sharing`` and ``replay``
print Rich tables, or one JSON object with ``--json``; a
progress bar goes to stderr during long replays; ``--plot DIR`` writes PNG figures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

JOBS_HELP = ("Jobs CSV: the Philly trace (timestamp,duration,num_gpus,...,cluster) or "
             "submit_time,duration,gpus,tenant (submit time in seconds or ISO 8601).")
QUOTAS_HELP = "Quotas CSV: Philly 'vc,node num' (hosts of 8 GPUs) or 'tenant,gpus'."


def register(app: typer.Typer) -> None:
    """Attach ``sharing`` and ``replay`` to the ``sim`` Typer app."""
    app.command("sharing")(sharing)
    app.command("replay")(replay_cmd)
    app.command("trace-gen")(trace_gen)


def _fail(exc: Exception) -> None:
    code = getattr(exc, "code", "gpuplane.error")
    typer.echo(f"error: {exc} [{code}]", err=True)
    raise typer.Exit(2)


def _setup(jobs: Path, quotas: Path, start: str | None, end: str | None, quota_scale: float,
           gpus_per_host: int):
    from gpuplane.domain.errors import FieldError, InvalidInput
    from gpuplane.sim.sharing import prepare
    from gpuplane.sim.traces import parse_time, read_jobs, read_quotas

    def when(flag: str, text: str | None) -> float | None:
        if text is None:
            return None
        try:
            return parse_time(text)
        except ValueError as e:
            raise InvalidInput(f"invalid {flag}", [FieldError(flag, str(e))]) from None

    s, e = when("--start", start), when("--end", end)
    _, job_list = read_jobs(jobs)
    _, team_list = read_quotas(quotas)
    return prepare(job_list, team_list, start=s, end=e, quota_scale=quota_scale,
                   gpus_per_host=gpus_per_host)


class _Progress:
    """A Rich progress bar over virtual time, on stderr, one task per mode."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(),
                                console=Console(stderr=True), transient=False)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def for_mode(self, mode: str, t0: float):
        if self.bar is None:
            return None
        task = self.bar.add_task(f"{mode:>9}", total=1.0)

        def cb(t: float, t_last: float) -> None:
            span = max(1.0, t_last - t0)
            self.bar.update(task, completed=min(1.0, max(0.0, (t - t0) / span)))

        return cb

    def for_search(self, mode: str):
        """A bar over bisection probes (``cb(done, expected)``)."""
        if self.bar is None:
            return None
        task = self.bar.add_task(f"min GPUs {mode:>9}", total=1.0)

        def cb(done: float, expected: float) -> None:
            self.bar.update(task, completed=min(1.0, done / max(1.0, expected)))

        return cb


KNOWLEDGE_HELP = ("What backfill is told about run times: oracle (exact), requested (user "
                  "limits, run time x an inflation factor; see docs/sharing.md), none.")


def _check_common(runtime_knowledge: str, workers: int, cycle_s: float, grace_s: float) -> None:
    from gpuplane.domain.errors import FieldError, InvalidInput
    from gpuplane.sim.replay import RUNTIME_KNOWLEDGE

    errors = []
    if runtime_knowledge not in RUNTIME_KNOWLEDGE:
        errors.append(FieldError("--runtime-knowledge", f"got {runtime_knowledge!r}; valid: "
                                 + ", ".join(RUNTIME_KNOWLEDGE)))
    if workers < 1:
        errors.append(FieldError("--workers", f"must be >= 1, got {workers}"))
    if not cycle_s > 0:
        errors.append(FieldError("--cycle-s", f"must be > 0, got {cycle_s}"))
    if grace_s < 0:
        errors.append(FieldError("--grace-s", f"must be >= 0, got {grace_s}"))
    if errors:
        raise InvalidInput("invalid option", errors)


def _modes(text: str, valid: tuple[str, ...], flag: str) -> list[str]:
    from gpuplane.domain.errors import FieldError, InvalidInput

    wanted = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in wanted if m not in valid]
    if bad or not wanted:
        raise InvalidInput("unknown mode", [FieldError(flag, f"got {bad or text!r}; valid: "
                                                       f"{', '.join(valid)}")])
    return wanted


def sharing(
    jobs: Path = typer.Option(..., "--jobs", help=JOBS_HELP),
    quotas: Path = typer.Option(..., "--quotas", help=QUOTAS_HELP),
    start: str = typer.Option(None, "--start", help="Only jobs submitted at or after (ISO 8601 "
                              "or seconds)."),
    end: str = typer.Option(None, "--end", help="Only jobs submitted before (ISO or seconds)."),
    quota_scale: float = typer.Option(1.0, "--quota-scale", help="Multiply every team's GPUs "
                                      "(and so the pool) by this factor."),
    modes: str = typer.Option("dedicated,fifo,fifo+backfill,drf,gpuplane", "--modes",
                              help="Comma-separated subset of dedicated,fifo,fifo+backfill,drf,"
                              "gpuplane."),
    runtime_knowledge: str = typer.Option("requested", "--runtime-knowledge",
                                          help=KNOWLEDGE_HELP),
    gpus_per_host: int = typer.Option(8, "--gpus-per-host", help="GPUs per host; jobs larger "
                                      "than a host are gangs over ceil(gpus/this) hosts."),
    checkpoint_s: float = typer.Option(3600.0, "--checkpoint-s", help="Jobs checkpoint every "
                                       "this many seconds of run time (0: never)."),
    cycle_s: float = typer.Option(10.0, "--cycle-s", help="Scheduling period (virtual s)."),
    grace_s: float = typer.Option(30.0, "--grace-s", help="Grace period of a preempted job; "
                                  "its beneficiary starts after it."),
    checkpoint_on_signal: bool = typer.Option(False, "--checkpoint-on-signal",
                                              help="Preempted jobs checkpoint within the grace "
                                              "period (acknowledge) and lose no work."),
    half_life_s: float = typer.Option(7 * 86400.0, "--half-life-s",
                                      help="Half-life of the usage history in fair share."),
    placement: str = typer.Option("bestfit", "--placement", help="Placement profile."),
    seed: int = typer.Option(0, "--seed", help="Seed of placement tie-breaks and of the "
                             "requested run-time limits."),
    fewer_gpus: float = typer.Option(0.0, "--fewer-gpus", help="Also run gpuplane on a pool "
                                     "this fraction smaller (mode gpuplane_smaller_pool); 0 "
                                     "skips it."),
    find_min_gpus: bool = typer.Option(False, "--find-min-gpus", help="Bisect the smallest "
                                       "pool in which every team's p95 wait is no worse than "
                                       "dedicated; report the consolidation factor."),
    find_min_modes: str = typer.Option("gpuplane", "--find-min-modes", help="Pooled modes to "
                                       "search with --find-min-gpus (comma-separated)."),
    workers: int = typer.Option(2, "--workers", help="Processes running modes in parallel."),
    plot: Path = typer.Option(None, "--plot", help="Write PNG figures (and sharing.json) here."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Replay a job history: one cluster per team, pooled baselines, gpuplane's shared pool."""
    from gpuplane.domain.errors import FieldError, GpuplaneError, InvalidInput
    from gpuplane.sim.sharing import MODES, POOLED, run_all
    from gpuplane.sim.sharing_search import find_all

    try:
        wanted = _modes(modes, MODES, "--modes")
        search = _modes(find_min_modes, POOLED, "--find-min-modes") if find_min_gpus else []
        _check_common(runtime_knowledge, workers, cycle_s, grace_s)
        if not 0 <= fewer_gpus < 1:
            raise InvalidInput("invalid --fewer-gpus",
                               [FieldError("--fewer-gpus", f"must be in [0, 1), got {fewer_gpus}")])
        if search and "dedicated" not in wanted:
            wanted = ["dedicated", *wanted]
        setup = _setup(jobs, quotas, start, end, quota_scale, gpus_per_host)
        config = dict(seed=seed, cycle_s=cycle_s, checkpoint_s=checkpoint_s or None,
                      half_life_s=half_life_s, grace_s=grace_s,
                      checkpoint_on_signal=checkpoint_on_signal, profile=placement,
                      runtime_knowledge=runtime_knowledge)
        with _Progress(not quiet and sys.stderr.isatty()) as bar:
            out = run_all(setup, wanted, fewer_gpus=fewer_gpus, workers=workers,
                          progress=lambda m: bar.for_mode(m, setup.window[0]), **config)
            if search:
                out["find_min_gpus"] = find_all(
                    setup, search, out["modes"]["dedicated"], config, workers=workers,
                    progress=lambda m: bar.for_search(m))
    except GpuplaneError as e:
        _fail(e)
        return
    if plot is not None:
        from gpuplane.sim.sharing_plots import write_plots

        plot.mkdir(parents=True, exist_ok=True)
        (plot / "sharing.json").write_text(json.dumps(out, indent=1))
        out["plots"] = [str(p) for p in write_plots(out, plot)]
    if as_json:
        typer.echo(json.dumps(out))
    else:
        from gpuplane.sim.sharing_tables import print_tables

        print_tables(out)


def replay_cmd(
    jobs: Path = typer.Option(..., "--jobs", help=JOBS_HELP),
    quotas: Path = typer.Option(..., "--quotas", help=QUOTAS_HELP),
    mode: str = typer.Option("gpuplane", "--mode", help="dedicated, fifo, fifo+backfill, drf "
                             "or gpuplane."),
    runtime_knowledge: str = typer.Option("requested", "--runtime-knowledge",
                                          help=KNOWLEDGE_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of tie-breaks and requested limits."),
    start: str = typer.Option(None, "--start", help="Only jobs submitted at or after."),
    end: str = typer.Option(None, "--end", help="Only jobs submitted before."),
    quota_scale: float = typer.Option(1.0, "--quota-scale", help="Scale every team's GPUs."),
    gpus_per_host: int = typer.Option(8, "--gpus-per-host", help="GPUs per host."),
    placement: str = typer.Option("bestfit", "--placement", help="Placement profile."),
    plot: Path = typer.Option(None, "--plot", help="Write PNG figures here."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Replay a job history through the scheduling cycle in one mode (virtual clock)."""
    from gpuplane.domain.errors import FieldError, GpuplaneError, InvalidInput
    from gpuplane.sim.sharing import MODES, mode_config, run_mode

    try:
        if mode not in MODES:
            raise InvalidInput("unknown mode", [FieldError("--mode", f"valid: {', '.join(MODES)}")])
        _check_common(runtime_knowledge, 1, 10.0, 0.0)
        setup = _setup(jobs, quotas, start, end, quota_scale, gpus_per_host)
        with _Progress(not quiet and sys.stderr.isatty()) as bar:
            res = run_mode(mode, setup, mode_config(mode, profile=placement, seed=seed,
                                                    runtime_knowledge=runtime_knowledge),
                           bar.for_mode(mode, setup.window[0]))
    except GpuplaneError as e:
        _fail(e)
        return
    from gpuplane.sim.sharing import document

    out = document(setup, {mode: res}, {})
    out["runtime_knowledge"] = runtime_knowledge
    if plot is not None:
        from gpuplane.sim.sharing_plots import write_plots

        plot.mkdir(parents=True, exist_ok=True)
        out["plots"] = [str(p) for p in write_plots(out, plot)]
    if as_json:
        typer.echo(json.dumps(out))
    else:
        from gpuplane.sim.sharing_tables import print_tables

        print_tables(out)


def trace_gen(
    out: Path = typer.Option(..., "--out", help="Folder to write jobs.csv and quotas.csv into."),
    n_jobs: int = typer.Option(69_000, "--jobs", help="Number of jobs."),
    tenants: int = typer.Option(10, "--tenants", help="Number of teams."),
    days: float = typer.Option(61.0, "--days", help="Length of the trace in days."),
    load: float = typer.Option(0.85, "--load", help="Offered load as a fraction of the pool at "
                               "quota scale 1/4."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same files)."),
) -> None:
    """Write a synthetic, held-out multi-tenant trace fitted to Philly (deterministic)."""
    from gpuplane.domain.errors import GpuplaneError
    from gpuplane.sim.tracegen import generate, write

    try:
        trace = generate(n_jobs, tenants, days, seed, load)
    except GpuplaneError as e:
        _fail(e)
        return
    jp, qp = write(trace, out)
    typer.echo(json.dumps({"jobs": str(jp), "quotas": str(qp), "n_jobs": len(trace.jobs),
                           "tenants": tenants, "offered_gpus": round(trace.offered_gpus, 1),
                           "quota_gpus_scale_1": sum(g for _, g in trace.quotas),
                           "synthetic": True}))
