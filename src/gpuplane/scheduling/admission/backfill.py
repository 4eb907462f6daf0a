"""Backfill reservations (EASY backfilling, Lifka 1995; Mu'alem & Feitelson 2001).

When a workload cannot start for lack of capacity, the cycle may give it a *reservation*: the
earliest time ``T`` (its shadow time) at which enough whole GPUs become free, given the expected
ends of running work, and the hosts that will provide them. The GPUs of those hosts that are free
now are held (booked as placeholders) for the rest of the cycle, so later, smaller work cannot take
them unless it is expected to finish by ``T`` -- it then cannot delay the reserved workload.

Only whole-GPU workloads get reservations (shared and MIG capacity is not time-predictable this
way); running work without an expected end never frees capacity in this estimate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from gpuplane.scheduling.admission.capacity import CycleCapacity, is_whole


def reserve(tasks: Sequence[Any], cap: CycleCapacity,
            ends: Iterable[tuple[float, str, int]]) -> float | None:
    """Find the shadow time of ``tasks`` (a gang of whole-GPU tasks) and hold the free GPUs of the
    hosts that will run it. ``ends`` lists ``(expected_end, host, whole GPUs freed)`` of running
    work, **sorted by end**. Returns ``T`` or ``None`` when no reservation applies (not whole-GPU,
    never fits, or it fits by GPU count already and is blocked by something else)."""
    if not tasks or not all(is_whole(t) for t in tasks):
        return None
    g = max(t.gpus for t in tasks)
    m = len(tasks)
    snap = cap.snap
    big = snap.gpu_count >= g
    now_free = np.where(big, cap.free_whole, 0).astype(np.int64)
    slots = int((now_free // g).sum())
    if slots >= m:
        return None
    free: dict[int, int] = {}          # hosts whose free count changes before T
    ready: dict[int, float] = {}
    t_shadow: float | None = None
    index = snap.index
    big_l = big.tolist()               # plain lists: the walk below reads them per entry
    now_l = now_free.tolist()
    for end, host, gpus in ends:
        h = index.get(host)
        if h is None or not big_l[h]:
            continue
        before = free.get(h, now_l[h])
        after = before + gpus
        free[h] = after
        if after // g > before // g:
            slots += after // g - before // g
            ready.setdefault(h, end)
        if slots >= m:
            t_shadow = end
            break
    if t_shadow is None:
        return None
    need = m
    for h in np.flatnonzero(now_free >= g):          # hosts that can start it now, then by ready
        if need <= 0:
            break
        take = min(int(now_free[h]) // g, need)
        need -= take
        cap.hold(snap.names[h], cap.free_gpu_indices(snap.names[h])[: take * g])
    for h in sorted(ready, key=lambda x: (ready[x], x)):
        if need <= 0:
            break
        if now_free[h] >= g:
            continue
        take = min(free[h] // g, need)
        need -= take
        cap.hold(snap.names[h], cap.free_gpu_indices(snap.names[h])[: take * g])
    return t_shadow
