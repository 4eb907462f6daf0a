"""Filter ``gpu_model``: a GPU request naming models needs a host with such GPUs."""

from __future__ import annotations

from typing import ClassVar

from gpuplane.domain.requests import TaskRequest
from gpuplane.scheduling.placement.framework import CycleState, FilterResult, Reason, Status
from gpuplane.scheduling.snapshot import ClusterSnapshot

WRONG_MODEL = "wrong_gpu_model"


class GpuModel:
    """Passes every host for CPU-only tasks and tasks without ``gpu_models``;
    otherwise keeps hosts having at least one GPU of an allowed model
    (UNRESOLVABLE for the others)."""

    name: ClassVar[str] = "gpu_model"

    def filter(self, state: CycleState, task: TaskRequest,
               snap: ClusterSnapshot) -> FilterResult | None:
        if task.gpus == 0 or not task.gpu_models:
            return None
        key = ("gpu_model_mask", task.gpu_models)
        passed = snap.cache.get(key)
        if passed is None:
            ok = [snap.model_index[m] for m in task.gpu_models if m in snap.model_index]
            passed = (snap.gpu_model[:, :, None] == ok).any(axis=(1, 2)) if ok and snap.max_gpus \
                else snap.cpu_cap < 0
            snap.cache[key] = passed
        names = "|".join(sorted(task.gpu_models))
        return FilterResult.single(passed, Reason(WRONG_MODEL, f"without a GPU of model {names}",
                                                  Status.UNRESOLVABLE))
