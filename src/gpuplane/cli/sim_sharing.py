"""``gpuplane sim sharing`` and ``gpuplane sim replay``: replay a multi-tenant job history.

``sharing`` runs the sprawl benchmark (dedicated clusters vs one FIFO pool vs gpuplane's shared
pool); ``replay`` runs one mode. Both print Rich tables, or one JSON object with ``--json``; a
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


def sharing(
    jobs: Path = typer.Option(..., "--jobs", help=JOBS_HELP),
    quotas: Path = typer.Option(..., "--quotas", help=QUOTAS_HELP),
    start: str = typer.Option(None, "--start", help="Only jobs submitted at or after (ISO 8601 "
                              "or seconds)."),
    end: str = typer.Option(None, "--end", help="Only jobs submitted before (ISO or seconds)."),
    quota_scale: float = typer.Option(1.0, "--quota-scale", help="Multiply every team's GPUs "
                                      "(and so the pool) by this factor."),
    modes: str = typer.Option("dedicated,fifo,gpuplane", "--modes",
                              help="Comma-separated subset of dedicated,fifo,gpuplane."),
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
    seed: int = typer.Option(0, "--seed", help="Seed of placement tie-breaks."),
    fewer_gpus: float = typer.Option(0.2, "--fewer-gpus", help="Also run gpuplane on a pool "
                                     "this fraction smaller (mode gpuplane_smaller_pool) and "
                                     "compare it with dedicated; 0 to skip."),
    plot: Path = typer.Option(None, "--plot", help="Write PNG figures (and sharing.json) here."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Replay a job history three ways: one cluster per team, one FIFO pool, gpuplane's pool."""
    from gpuplane.domain.errors import FieldError, GpuplaneError, InvalidInput
    from gpuplane.sim.sharing import MODES, run_all

    try:
        wanted = [m.strip() for m in modes.split(",") if m.strip()]
        bad = [m for m in wanted if m not in MODES]
        if bad or not wanted:
            raise InvalidInput("unknown mode", [FieldError("--modes", f"got {bad or modes!r}; "
                                                           f"valid: {', '.join(MODES)}")])
        if not 0 <= fewer_gpus < 1:
            raise InvalidInput("invalid --fewer-gpus",
                               [FieldError("--fewer-gpus", f"must be in [0, 1), got {fewer_gpus}")])
        setup = _setup(jobs, quotas, start, end, quota_scale, gpus_per_host)
        with _Progress(not quiet and sys.stderr.isatty()) as bar:
            out = run_all(setup, wanted, fewer_gpus=fewer_gpus,
                          progress=lambda m: bar.for_mode(m, setup.window[0]), seed=seed,
                          cycle_s=cycle_s, checkpoint_s=checkpoint_s or None,
                          half_life_s=half_life_s, grace_s=grace_s,
                          checkpoint_on_signal=checkpoint_on_signal, profile=placement)
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
    mode: str = typer.Option("gpuplane", "--mode", help="dedicated, fifo or gpuplane."),
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
        setup = _setup(jobs, quotas, start, end, quota_scale, gpus_per_host)
        with _Progress(not quiet and sys.stderr.isatty()) as bar:
            res = run_mode(mode, setup, mode_config(mode, profile=placement),
                           bar.for_mode(mode, setup.window[0]))
    except GpuplaneError as e:
        _fail(e)
        return
    from gpuplane.sim.sharing import document

    out = document(setup, {mode: res}, {})
    if plot is not None:
        from gpuplane.sim.sharing_plots import write_plots

        plot.mkdir(parents=True, exist_ok=True)
        out["plots"] = [str(p) for p in write_plots(out, plot)]
    if as_json:
        typer.echo(json.dumps(out))
    else:
        from gpuplane.sim.sharing_tables import print_tables

        print_tables(out)
