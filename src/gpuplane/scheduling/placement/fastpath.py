"""Fast path of ``place`` for one task asking whole GPUs under the ``bestfit`` profile.

The sharing simulator (``sim/replay.py``) and the cycle place almost only such tasks, and for
them most of a general ``place`` call is fixed cost (a decision state, six filter results, a
tally, some twenty numpy calls of a few microseconds each on arrays of ~100 hosts), not
arithmetic. :func:`place_whole` does the same arithmetic with fewer calls:

1. filters: at least ``task.gpus`` GPUs are completely free (``gpu_fit``, read from the
   snapshot's ``free_whole`` count) and free CPU and memory cover the task (``resource_fit``;
   skipped for a task asking neither, as free amounts are never negative); ``gpu_model``,
   ``node_selector``, ``taint_toleration`` and ``mig_fit`` pass every host under the conditions
   below;
2. score: the ``bestfit`` formula (``plugins/bestfit.bestfit_scores``, the same function, fed
   the snapshot's ``free_milli``, which is the free GPU total it sums) times its weight; up to
   ``SMALL`` candidates are scored on plain floats instead (the same IEEE operations in the
   same order); a single candidate scores 0, as in ``place``;
3. the highest total wins, ties to the lowest ``snap.tie_rank`` (``framework.pick_host``);
4. the devices: the lowest-indexed completely free GPUs (``choosers.lowest_free``).

It applies only when the result is provably the general path's: the profile's filters are
exactly the base filters (``profiles.base_filters``, by type), its only score is ``BestFit``,
its chooser for the task is ``BestFitGpus`` and ties go by rank; the task asks whole GPUs with
no model, selector or MIG profile; the snapshot has no hard taints and every GPU is in whole or
shared mode (``snap.eligible_gpus(task) is None``), and the decision is not restricted to some
devices (it may be to some hosts: ``hosts``, as a ``Within`` without devices restricts the
general path). Otherwise, and when no host fits (the general path then explains why), it
returns ``None``. A property test compares it with the general path on random snapshots.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpuplane.domain.requests import MILLI_PER_GPU, Placement, TaskRequest
from gpuplane.scheduling.placement.framework import Profile, pick_host
from gpuplane.scheduling.placement.plugins.bestfit import BestFit, bestfit_scores
from gpuplane.scheduling.placement.plugins.choosers import BestFitGpus
from gpuplane.scheduling.placement.plugins.dotprod import MAX_CPU, MAX_GPU
from gpuplane.scheduling.placement.plugins.gpu_fit import GpuFit
from gpuplane.scheduling.placement.plugins.gpu_model import GpuModel
from gpuplane.scheduling.placement.plugins.resources import ResourceFit
from gpuplane.scheduling.placement.plugins.selector import NodeSelector
from gpuplane.scheduling.placement.plugins.taints import TaintToleration
from gpuplane.scheduling.snapshot import ClusterSnapshot

# up to this many candidate hosts are scored on plain floats (cheaper than array operations)
SMALL = 32

# the last profile examined and its score weight (None: the fast path does not apply to it);
# one tuple, replaced whole, so concurrent readers never see a mixed pair
_last: tuple[Any, Any] = (None, None)


def _weight(profile: Profile) -> Any:
    """The weight of the profile's ``BestFit`` score when the fast path applies to the profile,
    else ``None`` (memoised for the last profile seen: callers reuse one profile)."""
    global _last
    seen, weight = _last
    if seen is profile:
        return weight
    from gpuplane.scheduling.placement.plugins.mig import MigChooser, MigFit  # lazy: mig area

    base = {ResourceFit, GpuModel, NodeSelector, TaintToleration, GpuFit, MigFit}
    types = [type(f) for f in profile.filters]
    ok = (profile.tie_break == "rank" and len(types) == len(base) and set(types) == base
          and len(profile.scores) == 1 and type(profile.scores[0][0]) is BestFit
          and all(type(c) in (MigChooser, BestFitGpus) for c in profile.choosers))
    weight = profile.scores[0][1] if ok else None
    _last = (profile, weight)
    return weight


def place_whole(snap: ClusterSnapshot, task: TaskRequest, profile: Profile,
                hosts: np.ndarray | None = None) -> Placement | None:
    """``place(snap, task, profile, rng)`` when the fast path applies and some host fits, else
    ``None`` (see the module docstring); ``hosts`` (H,) bool: only these hosts are candidates.
    Pure: the snapshot is not changed."""
    if (task.gpus <= 0 or task.gpu_milli < MILLI_PER_GPU or task.mig_profile is not None
            or task.gpu_models or task.selector or snap.has_taints):
        return None
    weight = _weight(profile)
    if weight is None or type(profile.chooser_for(task)) is not BestFitGpus:
        return None
    if snap.eligible_gpus(task) is not None:
        return None                      # MIG GPUs or other modes: the general path decides
    cpu_free = snap.cpu_free
    cand = snap.free_whole >= task.gpus           # gpu_fit: GPUs with all 1000 milli free
    if hosts is not None:
        cand &= hosts
    if task.cpu_milli or task.memory_mib:         # resource_fit (free amounts are never < 0)
        cand &= (cpu_free >= task.cpu_milli) & (snap.mem_free >= task.memory_mib)
    hosts = np.flatnonzero(cand)
    if len(hosts) == 0:
        return None
    if len(hosts) == 1:
        h = int(hosts[0])
    elif len(hosts) <= SMALL:
        h = _best_of_few(snap, hosts, task, weight)
    else:                                         # free_milli: bestfit's free GPU total
        total = bestfit_scores(cpu_free[hosts], snap.free_milli[hosts], task) * weight
        h = pick_host(total, hosts, snap, "rank", None)
    row = snap.gpu_free[h].tolist()               # choosers.lowest_free, on a plain list
    idx = tuple(g for g, free in enumerate(row) if free >= MILLI_PER_GPU)[:task.gpus]
    return Placement(host=snap.names[h], gpu_indices=idx, gpu_milli=task.gpu_milli)


def _best_of_few(snap: ClusterSnapshot, hosts: np.ndarray, task: TaskRequest, weight: Any) -> int:
    """``pick_host`` of the weighted ``bestfit_scores`` of a few candidates, computed on plain
    floats: the same IEEE operations in the same order as the array code, so the same scores
    (``math.trunc`` then the clip to 0..100 equals ``np.trunc``, ``np.clip`` and the cast)."""
    c, gd = task.cpu_milli, task.gpu_demand_milli
    best_h, best_total, best_rank = -1, 0, 0
    for h, cf, fm, rank in zip(hosts.tolist(), snap.cpu_free[hosts].tolist(),
                               snap.free_milli[hosts].tolist(), snap.tie_rank[hosts].tolist()):
        raw = 100.0 * (1.0 - (0.5 * ((cf - c) / MAX_CPU) + 0.5 * ((fm - gd) / MAX_GPU)))
        total = min(100, max(0, math.trunc(raw))) * weight
        if best_h < 0 or total > best_total or (total == best_total and rank < best_rank):
            best_h, best_total, best_rank = h, total, rank
    return best_h
