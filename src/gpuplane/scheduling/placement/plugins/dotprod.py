"""Score ``dotprod`` (FGD_PROTOCOL §6.2): prefer hosts whose free (CPU, GPU)
vector has the smallest dot product with the request (normalised by the
constants 128 cores and 8 GPUs); ``trunc(100 * (1 - dot / 2))``."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from gpuplane.domain.requests import TaskRequest
from gpuplane.scheduling.placement.framework import CycleState
from gpuplane.scheduling.snapshot import ClusterSnapshot

MAX_CPU = 128_000.0
MAX_GPU = 8_000.0


def free_gpu_total(state: CycleState, snap: ClusterSnapshot, task: TaskRequest,
                   hosts: np.ndarray) -> np.ndarray:
    """(len(hosts),) total free milli of the host's GPUs eligible for ``task``."""
    view = state.gpu_view(snap, task)[hosts]
    return np.maximum(view, 0).sum(axis=1)


class DotProd:
    name: ClassVar[str] = "dotprod"

    def score(self, state: CycleState, task: TaskRequest, snap: ClusterSnapshot,
              hosts: np.ndarray) -> np.ndarray:
        cpu = snap.cpu_free[hosts] / MAX_CPU * (task.cpu_milli / MAX_CPU)
        gpu = free_gpu_total(state, snap, task, hosts) / MAX_GPU * (task.gpu_demand_milli / MAX_GPU)
        s = np.trunc(100.0 * (1.0 - 0.5 * (cpu + gpu)))
        return np.clip(s, 0, 100).astype(np.int64)
