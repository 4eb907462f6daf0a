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
                  f"{doc['quota_scale']:g}, run-time knowledge "
                  f"{doc.get('runtime_knowledge', 'oracle')}")
    t = Table(title="modes")
    for c in ("mode", "allocation %", "GPU-h served", "per GPU owned", "Jain", "preemptions",
              "lost GPU-h", "unservable", "never started", "sim s"):
        t.add_column(c, justify="right")
    for m, r in modes.items():
        t.add_row(m, f"{r['allocation_mean']:.1f}", f"{r['gpu_hours_served']:.0f}",
                  f"{r['served_per_gpu_owned']:.1f}", f"{r['jain_index']:.3f}",
                  str(r["preemptions"]), f"{r['lost_gpu_hours']:.1f}", str(r["unservable_jobs"]),
                  str(r.get("never_started_jobs", 0)), f"{r['seconds']:.1f}")
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
    per = cmp.get("per_mode") or {}
    if per:
        c = Table(title="pooled modes vs dedicated and FIFO (worst-off team = highest p95 wait)")
        for col in ("mode", "sharing incentive", "served/GPU vs dedicated", "worst-off p95",
                    "vs fifo", "vs fifo+backfill"):
            c.add_column(col, justify="right")
        for m, v in per.items():
            si = v.get("sharing_incentive")
            c.add_row(m, "-" if si is None else ("holds" if si else "VIOLATED for "
                                                 + ", ".join(v["teams_worse_than_dedicated"])),
                      f"{v['served_per_gpu_vs_dedicated']:.2f}x"
                      if "served_per_gpu_vs_dedicated" in v else "-",
                      _dur(v["worst_team_p95_s"]),
                      _ratio(v.get("worst_team_p95_ratio_vs_fifo")),
                      _ratio(v.get("worst_team_p95_ratio_vs_fifo+backfill")))
        console.print(c)
    for m in per:
        line = delivery_line(m, modes.get(m) or {})
        if line:
            console.print(line, soft_wrap=True)
    found = doc.get("find_min_gpus") or {}
    if found:
        f = Table(title="smallest pool with every team's p95 wait no worse than dedicated")
        for col in ("mode", "dedicated GPUs", "min GPUs", "consolidation factor", "probes"):
            f.add_column(col, justify="right")
        for m, v in found.items():
            f.add_row(m, str(v["dedicated_gpus"]),
                      str(v["min_gpus"]) if v["found"] else "> 2x",
                      f"{v['consolidation_factor']:.2f}" if v["found"] else "< 0.5",
                      str(len(v["probes"])))
        console.print(f)


def delivery_line(mode: str, r: dict) -> str | None:
    """One line: the worst day-by-day delivery of the guarantees, and preemption's cost."""
    g = r.get("guarantee_delivery")
    if not g:
        return None
    head = (f"guarantee delivered ({mode}): over {g['team_days']} team-days with >= "
            f"{g['min_due_gpu_hours']:g} GPU-h due, ")
    if g["min"] is None:
        text = head + "none"
    else:
        w = g["worst"]
        text = (head + f"min {100 * g['min']:.1f} %, {g['team_days_below_target']} below "
                f"{100 * g['target']:.0f} %, worst {w['team']} {w['date']} "
                f"({w['served_gpu_hours']:.0f} of {w['due_gpu_hours']:.0f} GPU-h)")
    return text + (f"; lost to preemption {r.get('lost_gpu_hours', 0.0):.1f} GPU-h "
                   f"({r.get('lost_pct_of_served', 0.0):.2f} % of served)")


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"x{x:.2f}"
