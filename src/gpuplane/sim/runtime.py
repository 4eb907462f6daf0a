"""Requested run-time limits for simulated jobs (``--runtime-knowledge requested``).

Batch schedulers that backfill (EASY, Slurm) plan with the *limit* a user declares, not the real
run time, and users declare far too much: in the SP2 logs of the Parallel Workloads Archive the
*accuracy* of an estimate (run time / requested limit) is spread roughly uniformly over (0, 1]
(Mu'alem & Feitelson, "Utilization, predictability, workloads, and user runtime estimates in
scheduling the IBM SP2 with backfilling", IEEE TPDS 12(6), 2001); "empirical studies have
repeatedly shown that user estimates are inaccurate" (Tsafrir, Etsion & Feitelson, "Backfilling
using system-generated predictions rather than user runtime estimates", IEEE TPDS 18(6), 2007).

Model (documented, deterministic): accuracy ``a ~ Uniform[A_MIN, 1]`` drawn per job, limit =
``duration / a`` rounded up to a whole minute. ``A_MIN = 0.05`` caps the inflation at 20x (mean
factor ``ln(20) / 0.95 ~ 3.2``). Limits are never below the real run time, so no job reaches its
limit (the simulator would kill it there, as Slurm does). Jobs are drawn in trace order from
``numpy.random.default_rng(seed)``: every mode of one run sees the same limits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

A_MIN = 0.05


def requested_limits(durations: Sequence[float], seed: int = 0,
                     a_min: float = A_MIN) -> list[float]:
    """One requested limit (seconds) per duration, as described in the module docstring."""
    if not 0 < a_min <= 1:
        raise ValueError(f"a_min must be in (0, 1], got {a_min}")
    acc = np.random.default_rng(seed).uniform(a_min, 1.0, size=len(durations))
    return [max(60.0, math.ceil(d / a / 60.0) * 60.0) for d, a in zip(durations, acc)]
