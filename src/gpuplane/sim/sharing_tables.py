"""Rich tables for the sprawl benchmark (``gpuplane sim sharing`` without ``--json``)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _dur(s: float) -> str:
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def print_tables(doc: dict, console: Console | None = None) -> None:
    """Summary per mode, then per team p50/p95 wait and mean JCT side by side."""
    if console is None:
        import sys

        console = Console() if sys.stdout.isatty() else Console(width=160)
    modes = doc["modes"]
    console.print(f"[bold]{doc['jobs']} jobs[/bold], {doc['owned_gpus']} GPUs owned, window "
                  f"{doc['window']['start']} .. {doc['window']['end']}, quota scale "
                  f"{doc['quota_scale']:g}")
    t = Table(title="modes")
    for c in ("mode", "allocation %", "GPU-h served", "per GPU owned", "Jain", "preemptions",
              "lost GPU-h", "unservable", "sim s"):
        t.add_column(c, justify="right")
    for m, r in modes.items():
        t.add_row(m, f"{r['allocation_mean']:.1f}", f"{r['gpu_hours_served']:.0f}",
                  f"{r['served_per_gpu_owned']:.1f}", f"{r['jain_index']:.3f}",
                  str(r["preemptions"]), f"{r['lost_gpu_hours']:.1f}", str(r["unservable_jobs"]),
                  f"{r['seconds']:.1f}")
    console.print(t)
    teams = Table(title="per team: p50 / p95 wait, mean JCT")
    teams.add_column("team")
    teams.add_column("GPUs", justify="right")
    teams.add_column("jobs", justify="right")
    for m in modes:
        teams.add_column(m, justify="right")
    first = next(iter(modes.values()))
    for team in first["teams"]:
        row = [team, str(first["teams"][team]["gpus"]), str(first["teams"][team]["jobs"])]
        for m, r in modes.items():
            v = r["teams"][team]
            row.append(f"{_dur(v['p50_wait_s'])} / {_dur(v['p95_wait_s'])} / "
                       f"{_dur(v['mean_jct_s'])}")
        teams.add_row(*row)
    console.print(teams)
    cmp = doc.get("comparison") or {}
    if "sharing_incentive" in cmp:
        si = cmp["sharing_incentive"]
        verdict = "holds" if si["holds"] else (
            "VIOLATED for " + ", ".join(si["teams_worse_than_dedicated"]))
        console.print(f"sharing incentive (no team's p95 wait worse than dedicated): {verdict}")
        console.print(f"GPU-hours served per GPU owned vs dedicated: "
                      f"{cmp['served_per_gpu_vs_dedicated']:.2f}x")
    if "smaller_pool_vs_dedicated" in cmp:
        sp = cmp["smaller_pool_vs_dedicated"]
        console.print(f"gpuplane with {sp['gpus_fewer_pct']:.0f}% fewer GPUs vs dedicated: "
                      f"served {sp['gpu_hours_served_ratio']:.2f}x, sharing incentive "
                      + ("holds" if sp["sharing_incentive_holds"] else "VIOLATED for "
                         + ", ".join(sp["teams_worse_than_dedicated"])))
    if "worst_team_p95_ratio" in cmp:
        console.print(f"worst-off team p95 wait: fifo {_dur(cmp['worst_team_p95_fifo_s'])}, "
                      f"gpuplane {_dur(cmp['worst_team_p95_gpuplane_s'])} "
                      f"(ratio {cmp['worst_team_p95_ratio']:.2f}); allocation vs fifo "
                      f"{cmp['allocation_points_vs_fifo']:+.1f} points")
