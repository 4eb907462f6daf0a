"""KPI discretisation of one openb run (FGD_PROTOCOL §5.4 and §5.5).

Per event k (one submitted pod): ``arr_k = round(100 * arrived_k / C)`` (an int,
Python's half-to-even ``round``), ``alloc_k = round(100 * used_k / C, 2)``.
Column x (0..130) = mean of ``alloc_k`` over events with ``arr_k == x``; when
there is none, over ``x-1 <= arr_k <= x+1``; rounded to 2 decimals. The
fragmentation ratio uses the same event selection (mean of the per-event ratio,
itself rounded to 2 decimals, not rounded again); the fragment amount column is
``round(100 * mean(fragment) / C, 2)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

COLUMNS = tuple(range(0, 131))


def _select(arr: np.ndarray, x: int) -> np.ndarray:
    sel = arr == x
    if not sel.any():
        sel = (arr >= x - 1) & (arr <= x + 1)
    return sel


def arrival_levels(arrived: Sequence[int], capacity: int) -> np.ndarray:
    """``arr_k`` for every event (int array)."""
    return np.array([round(100 * a / capacity) for a in arrived], dtype=np.int64)


def discretise(arr: np.ndarray, values: Sequence[float], ndigits: int | None = 2,
               columns: Sequence[int] = COLUMNS) -> dict[str, float | None]:
    """Column x -> mean of ``values`` over the events selected for x (see module
    doc); ``None`` when no event is within x±1. Rounded to ``ndigits`` unless None."""
    v = np.asarray(values, dtype=np.float64)
    out: dict[str, float | None] = {}
    for x in columns:
        sel = _select(arr, x)
        if not sel.any():
            out[str(x)] = None
            continue
        mean = float(v[sel].mean())
        out[str(x)] = round(mean, ndigits) if ndigits is not None else mean
    return out


def alloc_columns(arrived: Sequence[int], used: Sequence[int], capacity: int) -> dict:
    """The allocation-ratio columns ``"0".."130"`` of one run (§5.4)."""
    arr = arrival_levels(arrived, capacity)
    alloc = [round(100 * u / capacity, 2) for u in used]
    return discretise(arr, alloc, 2)


def frag_columns(arrived: Sequence[int], fragment: Sequence[float], idle: Sequence[int],
                 capacity: int) -> tuple[dict, dict]:
    """(fragmentation ratio columns, fragment amount columns) of one run (§5.5)."""
    arr = arrival_levels(arrived, capacity)
    ratio = [round(100 * f / i, 2) if i > 0 else 0.0 for f, i in zip(fragment, idle)]
    amount = [100 * f / capacity for f in fragment]
    return discretise(arr, ratio, None), discretise(arr, amount, 2)
