"""A synthetic multi-tenant GPU job trace, fitted to Philly (``gpuplane sim trace-gen``).

Held-out and synthetic: it is not a real history. It exists to test the simulator's speed and
the sharing results on a trace the benchmark was not tuned on. Deterministic: the same arguments
(seed included) write byte-identical files; no data file is shipped.

Fitted to Microsoft Philly, Oct 1 - Dec 1 2017 (68,510 jobs, ../shared/data/philly/SOURCE.md):

- job sizes: the empirical GPU-count frequencies (93.5 % one GPU, then 2, 4, 8, 16, 32 ...);
- run times: log-normal per size class, the (mean, sd) of ``ln(seconds)`` measured on Philly
  (1 GPU: 6.87, 1.90; 2: 4.67, 3.47; 3-4: 8.99, 2.78; 5-8: 9.48, 2.79; 9-16: 9.18, 3.24;
  more: 9.67, 2.12), clipped to [10 s, 20 days];
- arrivals: each team's days weighted by a log-normal intensity (sd 1 in log space: busy and
  quiet days, as Philly's virtual clusters have; this spread is chosen, not fitted), hour of
  day from Philly's hourly submission profile;
- tenants: ``tenants`` teams, job counts Zipf-like (weight ``1 / k^0.8``), so a few teams submit
  most of the work;
- quotas: each team's guarantee proportional to the square root of its offered load (so small
  teams own more than they use and big ones less, as with Philly's virtual clusters), in whole
  hosts of 8 GPUs, the total sized so that at quota scale 1/4 the offered load is ``load``
  (default 0.85) of the pool: heavy queueing at 1/4, little at 1.

Writes ``<out>/jobs.csv`` (``submit_time,duration,gpus,tenant``, seconds from 0) and
``<out>/quotas.csv`` (``tenant,gpus``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpuplane.domain.errors import FieldError, InvalidInput

SIZES = (1, 2, 4, 8, 12, 16, 24, 32)
SIZE_P = (0.93531, 0.02057, 0.02239, 0.01902, 0.0001, 0.00203, 0.00009, 0.0005)
# (largest size of the class, mean and sd of ln(duration s)) measured on Philly Oct-Nov 2017
DURATION = ((1, 6.87, 1.90), (2, 4.67, 3.47), (4, 8.99, 2.78), (8, 9.48, 2.79),
            (16, 9.18, 3.24), (10**9, 9.67, 2.12))
HOURLY = (1.36, 1.01, 1.2, 1.11, 0.53, 1.15, 1.83, 2.18, 1.12, 0.95, 0.88, 0.75, 0.64, 0.64,
          0.49, 0.59, 0.94, 0.69, 0.83, 0.69, 1.13, 0.95, 1.25, 1.09)
MIN_S, MAX_S = 10.0, 20 * 86400.0
BURST_SD = 1.0      # sd of ln(daily intensity) per team: bursts (chosen, not fitted)
HOST = 8


@dataclass(frozen=True)
class GeneratedTrace:
    jobs: list[tuple[float, float, int, str]]   # (submit s, duration s, gpus, tenant)
    quotas: list[tuple[str, int]]                 # (tenant, GPUs at quota scale 1)
    offered_gpus: float                           # mean offered load over the days, GPUs


def generate(n_jobs: int = 69_000, tenants: int = 10, days: float = 61.0, seed: int = 0,
             load: float = 0.85) -> GeneratedTrace:
    """Generate a trace (see the module docstring). Raises ``InvalidInput`` on bad arguments."""
    errors = []
    if n_jobs < 1:
        errors.append(FieldError("jobs", f"must be >= 1, got {n_jobs}"))
    if not 1 <= tenants <= 1000:
        errors.append(FieldError("tenants", f"must be in [1, 1000], got {tenants}"))
    if not days > 0:
        errors.append(FieldError("days", f"must be > 0, got {days}"))
    if not 0 < load <= 10:
        errors.append(FieldError("load", f"must be in (0, 10], got {load}"))
    if errors:
        raise InvalidInput("invalid trace generator settings", errors)
    rng = np.random.default_rng(seed)
    hp = np.array(HOURLY) / sum(HOURLY)
    names = [f"t{k:02d}" for k in range(tenants)]
    w = np.array([1.0 / (k + 1) ** 0.8 for k in range(tenants)])
    who = rng.choice(tenants, size=n_jobs, p=w / w.sum())
    n_days = max(1, int(math.ceil(days)))
    burst = rng.lognormal(0.0, BURST_SD, size=(tenants, n_days))    # busy and quiet days
    day = np.empty(n_jobs, dtype=np.int64)
    for k in range(tenants):
        sel = np.flatnonzero(who == k)
        day[sel] = rng.choice(n_days, size=sel.size, p=burst[k] / burst[k].sum())
    hour = rng.choice(24, size=n_jobs, p=hp)
    submit = np.minimum(day * 86400.0 + hour * 3600.0 + rng.uniform(0, 3600.0, n_jobs),
                        days * 86400.0 - 1.0)
    p = np.array(SIZE_P) / sum(SIZE_P)
    gpus = np.array(SIZES)[rng.choice(len(SIZES), size=n_jobs, p=p)]
    z = rng.standard_normal(n_jobs)
    mu = np.empty(n_jobs)
    sd = np.empty(n_jobs)
    lower = 0
    for top, m, s in DURATION:
        sel = (gpus > lower) & (gpus <= top)
        mu[sel], sd[sel] = m, s
        lower = top
    dur = np.clip(np.round(np.exp(mu + sd * z)), MIN_S, MAX_S)
    order = np.lexsort((np.arange(n_jobs), submit))
    jobs = [(float(round(submit[i], 1)), float(dur[i]), int(gpus[i]), names[who[i]])
            for i in order]
    span = days * 86400.0
    per = np.zeros(tenants)
    np.add.at(per, who, gpus * dur)
    offered = float(per.sum() / span)
    total = 4.0 * offered / load                       # GPUs at quota scale 1
    root = np.sqrt(per / per.sum())
    share = root / root.sum()
    quotas = [(names[k], max(HOST, int(round(total * share[k] / HOST)) * HOST))
              for k in range(tenants)]
    return GeneratedTrace(jobs, quotas, offered)


def write(trace: GeneratedTrace, out: Path) -> tuple[Path, Path]:
    """Write ``jobs.csv`` and ``quotas.csv`` into ``out`` (created); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    jp, qp = out / "jobs.csv", out / "quotas.csv"
    with jp.open("w", encoding="utf-8") as f:
        f.write("submit_time,duration,gpus,tenant\n")
        for s, d, g, t in trace.jobs:
            f.write(f"{s:.1f},{d:.0f},{g},{t}\n")
    with qp.open("w", encoding="utf-8") as f:
        f.write("tenant,gpus\n")
        for t, g in trace.quotas:
            f.write(f"{t},{g}\n")
    return jp, qp
