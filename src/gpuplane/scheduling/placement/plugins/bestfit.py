"""Score ``bestfit`` (FGD_PROTOCOL §6.5): least leftover CPU and GPU after the
task, equally weighted against constants (128 cores, 8 GPUs):
``trunc(100 * (1 - [(C_free - c)/2/128000 + (L - g)/2/8000]))``."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from gpuplane.domain.requests import TaskRequest
from gpuplane.scheduling.placement.framework import CycleState
from gpuplane.scheduling.placement.plugins.dotprod import MAX_CPU, MAX_GPU, free_gpu_total
from gpuplane.scheduling.snapshot import ClusterSnapshot


def bestfit_scores(cpu_free: np.ndarray, gpu_free_total: np.ndarray,
                   task: TaskRequest) -> np.ndarray:
    """The score of hosts with these free CPU (milli) and free eligible GPU (milli) totals;
    shared with the placement fast path (``placement/fastpath.py``)."""
    cpu_left = (cpu_free - task.cpu_milli) / MAX_CPU
    gpu_left = (gpu_free_total - task.gpu_demand_milli) / MAX_GPU
    s = np.trunc(100.0 * (1.0 - (0.5 * cpu_left + 0.5 * gpu_left)))
    return np.clip(s, 0, 100).astype(np.int64)


class BestFit:
    name: ClassVar[str] = "bestfit"

    def score(self, state: CycleState, task: TaskRequest, snap: ClusterSnapshot,
              hosts: np.ndarray) -> np.ndarray:
        return bestfit_scores(snap.cpu_free[hosts], free_gpu_total(state, snap, task, hosts),
                              task)
