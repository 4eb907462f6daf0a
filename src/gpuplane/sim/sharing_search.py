"""``--find-min-gpus``: the smallest shared pool that serves every team as well as its own cluster.

For a pooled mode, bisection over the pool size ``N`` (GPUs): the pool is resized with every
team's guarantee scaled in proportion (``sharing.resize``; the modes without quotas only see the
pool size), the same jobs are replayed, and ``N`` *passes* when every team's p95 wait is no worse
than in its dedicated cluster at the benchmark's quota scale (within
``sharing_report.WAIT_TOLERANCE_S``; never-started jobs count as waiting to the end of the window).
The consolidation factor is dedicated GPUs / smallest passing ``N``.

Bounds: the upper bound starts at the dedicated total; if it fails, 1.5x and 2x are tried (a
mode that needs more than 2x reports no factor). The lower bound is the mean offered load
(GPU-seconds submitted in the window / window length): one GPU less is assumed to fail
without a probe. The
search stops when the bracket is at most ``resolution`` GPUs wide (default: one host or 2 % of
the dedicated total, whichever is larger). Bisection assumes that a larger pool never serves a
team worse; replays are deterministic, but that is not guaranteed (every probe is listed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from gpuplane.sim.sharing_report import WAIT_TOLERANCE_S, worse_teams


def find_min_gpus(mode: str, setup: Any, dedicated: dict, config: dict, *,
                  resolution: int | None = None,
                  progress: Callable[[float, float], None] | None = None) -> dict:
    """Search the smallest pool for ``mode`` (see the module docstring). ``dedicated`` is the
    ``dedicated`` mode's report on ``setup``; ``config`` goes to ``mode_config``.
    ``progress(probes done, probes expected)``."""
    from gpuplane.sim.sharing import mode_config, resize, run_mode

    owned = setup.owned_gpus
    res = resolution or max(setup.gpus_per_host, int(math.ceil(0.02 * owned)))
    lo_w, hi_w = setup.window
    offered = sum(j.gpus * j.duration for j in setup.jobs) / max(1.0, hi_w - lo_w)
    lo = max(len(setup.teams), math.ceil(offered)) - 1      # assumed to fail, not probed
    expected = 1 + max(0, math.ceil(math.log2(max(1, (owned - lo) / res))))
    probes: list[dict] = []

    def passes(n: int) -> bool:
        r = run_mode(mode, resize(setup, n), mode_config(mode, **config))
        worse = worse_teams(r, dedicated)
        probes.append({"gpus": n, "passes": not worse, "worst_team_p95_s":
                       max(v["p95_wait_s"] for v in r["teams"].values()),
                       "teams_worse": sorted(worse), "seconds": r["seconds"]})
        if progress is not None:
            progress(len(probes), max(expected, len(probes) + 1))
        return not worse

    hi = None
    for f in (1.0, 1.5, 2.0):
        n = int(math.ceil(owned * f))
        if passes(n):
            hi = n
            break
        lo = max(lo, n)
    found = hi is not None
    if hi is not None:
        if lo >= hi:
            lo = max(1, hi - res)
        while hi - lo > res:
            mid = (lo + hi) // 2
            if passes(mid):
                hi = mid
            else:
                lo = mid
    if progress is not None:
        progress(len(probes), len(probes))
    return {"mode": mode, "dedicated_gpus": owned, "found": found,
            "min_gpus": hi if found else None,
            "consolidation_factor": owned / hi if hi else None,
            "resolution_gpus": res, "tolerance_s": WAIT_TOLERANCE_S,
            "pool_sizing": "every team's guarantee scaled in proportion",
            "probes": probes}


def find_all(setup: Any, modes: list[str], dedicated: dict, config: dict, *, workers: int = 1,
             resolution: int | None = None,
             progress: Callable[[str], Callable[[float, float], None] | None] | None = None
             ) -> dict[str, dict]:
    """:func:`find_min_gpus` for each of ``modes`` (in ``workers`` processes)."""
    if workers > 1 and len(modes) > 1:
        from gpuplane.sim.parallel import run_tasks

        tasks = [(m, _search, (m, setup, dedicated, config, resolution)) for m in modes]
        out = run_tasks(tasks, workers, progress)
        return {m: out[m] for m in modes}
    return {m: find_min_gpus(m, setup, dedicated, config, resolution=resolution,
                             progress=progress(m) if progress else None) for m in modes}


def _search(mode: str, setup: Any, dedicated: dict, config: dict, resolution: int | None,
            progress: Any = None) -> dict:
    return find_min_gpus(mode, setup, dedicated, config, resolution=resolution,
                         progress=progress)
