"""Score ``clustering`` (FGD_PROTOCOL §6.3): put GPU tasks of the same kind
together. Kinds: "share" or "k whole GPUs" (``snap.kind_count``).

``base = trunc(25 * (8000 - L) / 8000)`` plus 75 when the host runs only this
kind, 50 when it runs this kind among others, 25 when it runs no GPU task,
0 when it runs only other kinds. CPU-only tasks score 0 everywhere.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from gpuplane.domain.requests import TaskRequest
from gpuplane.scheduling.placement.framework import CycleState
from gpuplane.scheduling.snapshot import ClusterSnapshot, kind_column


class Clustering:
    name: ClassVar[str] = "clustering"

    def score(self, state: CycleState, task: TaskRequest, snap: ClusterSnapshot,
              hosts: np.ndarray) -> np.ndarray:
        if task.gpus == 0:
            return np.zeros(len(hosts), dtype=np.int64)
        free = np.maximum(snap.gpu_free[hosts], 0).sum(axis=1).astype(np.int64)
        base = np.clip((25 * (8000 - free)) // 8000, 0, 25)
        kinds = snap.kind_count[hosts] > 0
        n_kinds = kinds.sum(axis=1)
        mine = kinds[:, kind_column(task, snap.max_gpus)]
        bonus = np.where(mine & (n_kinds == 1), 75,
                         np.where(mine, 50, np.where(n_kinds == 0, 25, 0)))
        return base + bonus
