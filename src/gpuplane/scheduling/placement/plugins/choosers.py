"""GPU choosers: which devices of the chosen host a task gets.

* ``bestfit_gpus``: shares go to the GPU with the *smallest* free milli that still
  fits (lowest index on ties); whole GPUs are the lowest-indexed completely free
  ones (FGD_PROTOCOL §6 "best-fit GPU choice").
* ``random_gpus``: shares go to a uniformly random fitting GPU (``state.rng``);
  whole GPUs as above (Random-fit, §6.1).

Both handle CPU-only, whole and shared requests (not MIG).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.scheduling.placement.framework import CycleState
from gpuplane.scheduling.snapshot import ClusterSnapshot

_BIG = np.int32(1 << 30)


def lowest_free(row: np.ndarray, k: int) -> tuple[int, ...]:
    """Indices of the ``k`` lowest-indexed completely free GPUs in ``row``."""
    return tuple(int(i) for i in np.flatnonzero(row >= 1000)[:k])


def tightest(row: np.ndarray, milli: int, k: int) -> tuple[int, ...]:
    """Indices of the ``k`` GPUs with the least free milli >= ``milli`` (stable by index)."""
    key = np.where(row >= milli, row, _BIG)
    order = np.argsort(key, kind="stable")[:k]
    return tuple(int(i) for i in order)


def cpu_only(snap: ClusterSnapshot, host: int) -> Placement:
    return Placement(host=snap.names[host])


class _GpuChooser:
    """Common part: CPU-only and whole-GPU requests (lowest free indices); ``_share_gpus``
    picks the GPU(s) for a share. Not MIG."""

    def handles(self, task: TaskRequest) -> bool:
        return task.mig_profile is None

    def choose(self, state: CycleState, task: TaskRequest, snap: ClusterSnapshot,
               host: int) -> Placement:
        if task.gpus == 0:
            return cpu_only(snap, host)
        row = state.gpu_view(snap, task)[host]
        if task.gpu_milli >= 1000:
            idx = lowest_free(row, task.gpus)
        else:
            idx = self._share_gpus(state, row, task)
        return Placement(host=snap.names[host], gpu_indices=idx, gpu_milli=task.gpu_milli)

    def _share_gpus(self, state: CycleState, row: np.ndarray,
                    task: TaskRequest) -> tuple[int, ...]:
        raise NotImplementedError


class BestFitGpus(_GpuChooser):
    """Best-fit device choice (tightest fitting GPU; lowest free indices for whole GPUs)."""

    name: ClassVar[str] = "bestfit_gpus"

    def _share_gpus(self, state: CycleState, row: np.ndarray,
                    task: TaskRequest) -> tuple[int, ...]:
        return tightest(row, task.gpu_milli, task.gpus)


class RandomGpus(_GpuChooser):
    """Uniformly random fitting GPU for a single share; otherwise as best-fit."""

    name: ClassVar[str] = "random_gpus"

    def _share_gpus(self, state: CycleState, row: np.ndarray,
                    task: TaskRequest) -> tuple[int, ...]:
        fits = np.flatnonzero(row >= task.gpu_milli)
        pick = state.rng.choice(fits, size=task.gpus, replace=False)
        return tuple(sorted(int(i) for i in pick))
