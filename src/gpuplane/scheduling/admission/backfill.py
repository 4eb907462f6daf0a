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

from gpuplane.scheduling.admission.capacity import CycleCapacity, is_whole


def reserve(tasks: Sequence[Any], cap: CycleCapacity,
            ends: Iterable[tuple[float, str, int]]) -> float | None:
    """Find the shadow time of ``tasks`` (a gang of whole-GPU tasks) and hold the free GPUs of the
    hosts that will run it. ``ends`` lists ``(expected_end, host, whole GPUs freed)`` of running
    work. Returns ``T`` or ``None`` when no reservation applies (not whole-GPU, never fits, or it
    fits by GPU count already and is blocked by something else)."""
    if not tasks or not all(is_whole(t) for t in tasks):
        return None
    g = max(t.gpus for t in tasks)
    m = len(tasks)
    snap = cap.snap
    free = {name: int(cap.free_whole[i]) for i, name in enumerate(snap.names)
            if snap.gpu_count[i] >= g}
    slots = sum(f // g for f in free.values())
    if slots >= m:
        return None
    ready: dict[str, float] = {}
    t_shadow: float | None = None
    for end, host, gpus in sorted(ends):
        if host not in free:
            continue
        before = free[host] // g
        free[host] += gpus
        after = free[host] // g
        if after > before:
            slots += after - before
            ready.setdefault(host, end)
        if slots >= m:
            t_shadow = end
            break
    if t_shadow is None:
        return None
    now_free = {name: int(cap.free_whole[snap.index[name]]) for name in free}
    order = sorted((h for h in free if free[h] >= g),
                   key=lambda h: (ready.get(h, float("-inf")), -now_free[h], h))
    need = m
    for h in order:
        if need <= 0:
            break
        take = min(free[h] // g, need)
        need -= take
        idx = cap.free_gpu_indices(h)[: take * g]
        cap.hold(h, idx)
    return t_shadow
