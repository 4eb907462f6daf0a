"""Filter ``gpu_fit``: enough free whole GPUs, or one GPU with enough free share.

Only GPUs in ``whole`` or ``shared`` mode count (shares need ``shared`` mode);
MIG-mode GPUs are left to the MIG plugin. CPU-only and MIG tasks pass.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from gpuplane.domain.requests import TaskRequest
from gpuplane.scheduling.placement.framework import CycleState, FilterResult, Reason, Status
from gpuplane.scheduling.snapshot import ClusterSnapshot

TOO_FEW_GPUS = "insufficient_gpu"
NO_GPUS = Reason("no_gpu", "without a usable GPU", Status.UNRESOLVABLE)


def fit_counts(view: np.ndarray, task: TaskRequest) -> np.ndarray:
    """(H,) number of GPUs per host with at least ``task.gpu_milli`` free in ``view``."""
    return (view >= task.gpu_milli).sum(axis=1)


class GpuFit:
    """Keeps hosts with at least ``task.gpus`` eligible GPUs each having
    ``task.gpu_milli`` free (1000 = completely free). Rejections are reported
    per host GPU model ("too few free GPUs of model G2")."""

    name: ClassVar[str] = "gpu_fit"

    def filter(self, state: CycleState, task: TaskRequest,
               snap: ClusterSnapshot) -> FilterResult | None:
        if task.gpus == 0 or task.mig_profile is not None:
            return None
        view = state.gpu_view(snap, task)
        passed = fit_counts(view, task) >= task.gpus

        def explain(rejected: np.ndarray):
            what = ("too few free GPUs" if task.gpu_milli >= 1000
                    else f"no GPU with {task.gpu_milli} milli free")
            reasons = [NO_GPUS] + [Reason(TOO_FEW_GPUS, f"{what} of model {m}")
                                   for m in snap.models]
            has_gpu = ((view[rejected] >= 0).any(axis=1) if snap.max_gpus
                       else np.zeros(int(rejected.sum()), bool))
            which = np.zeros(snap.n_hosts, dtype=np.int64)
            which[rejected] = np.where(has_gpu, snap.host_model[rejected].astype(np.int64) + 1, 0)
            return tuple(reasons), which

        def nearest(rejected: np.ndarray) -> str | None:
            idx = np.flatnonzero(rejected & (view >= 0).any(axis=1)) if snap.max_gpus else []
            if len(idx) == 0:
                return None
            if task.gpu_milli >= 1000:
                n = fit_counts(view[idx], task)
                best = int(idx[np.argmax(n)])
                return (f"closest: {snap.names[best]} has {int(n.max())} of {task.gpus} "
                        f"GPUs free")
            top = view[idx].max(axis=1)
            best = int(idx[np.argmax(top)])
            return (f"closest: {snap.names[best]} has a GPU with {int(top.max())} milli free "
                    f"({task.gpu_milli} asked)")

        return FilterResult(passed=passed, explain=explain, nearest=nearest)
