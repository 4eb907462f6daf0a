"""Score ``packing`` (FGD_PROTOCOL §6.4): top up partly used GPUs first
(tightest first), then partly used hosts, then idle hosts (smallest first).

* host with every GPU completely free: ``33 - #GPUs``;
* otherwise take the first ``k`` fitting GPUs in ascending free order: if any is
  completely free, ``max(50 - #completely free taken, 33)``; else (a share onto
  a shared GPU with free F) ``max(100 - F // 100, 50)``.
CPU-only tasks score 0 everywhere.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from gpuplane.domain.requests import TaskRequest
from gpuplane.scheduling.placement.framework import CycleState
from gpuplane.scheduling.snapshot import ClusterSnapshot

_BIG = 1 << 30


class Packing:
    name: ClassVar[str] = "packing"

    def score(self, state: CycleState, task: TaskRequest, snap: ClusterSnapshot,
              hosts: np.ndarray) -> np.ndarray:
        n = len(hosts)
        if task.gpus == 0:
            return np.zeros(n, dtype=np.int64)
        view = state.gpu_view(snap, task)[hosts]
        exists = view >= 0
        n_gpus = exists.sum(axis=1)
        all_free = (view >= 1000).sum(axis=1) == n_gpus
        key = np.where(view >= task.gpu_milli, view, _BIG)
        if task.gpus == 1:
            taken = key.min(axis=1, keepdims=True)
        else:
            taken = np.sort(key, axis=1)[:, :task.gpus]
        n_full = (taken == 1000).sum(axis=1)
        share = np.maximum(100 - taken[:, 0] // 100, 50)
        s = np.where(n_full > 0, np.maximum(50 - n_full, 33), share)
        return np.where(all_free, 33 - n_gpus, s).astype(np.int64)
