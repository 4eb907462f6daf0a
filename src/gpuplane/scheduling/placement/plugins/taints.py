"""Filter ``taint_toleration``: NoSchedule/NoExecute taints must be tolerated."""

from __future__ import annotations

from typing import ClassVar

from gpuplane.domain.requests import TaskRequest
from gpuplane.scheduling.placement.framework import CycleState, FilterResult, Reason, Status
from gpuplane.scheduling.snapshot import ClusterSnapshot

UNTOLERATED = Reason("untolerated_taint", "with an untolerated taint", Status.UNRESOLVABLE)


class TaintToleration:
    """Keeps hosts whose hard taints are all covered by ``task.tolerations``
    (``PreferNoSchedule`` never rejects)."""

    name: ClassVar[str] = "taint_toleration"

    def filter(self, state: CycleState, task: TaskRequest,
               snap: ClusterSnapshot) -> FilterResult | None:
        mask = snap.toleration_mask(task.tolerations)
        if mask is None:
            return None
        return FilterResult.single(mask, UNTOLERATED)
