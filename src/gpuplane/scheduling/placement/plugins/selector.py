"""Filter ``node_selector``: the task's label selector must match the host labels."""

from __future__ import annotations

from typing import ClassVar

from gpuplane.domain.requests import TaskRequest
from gpuplane.scheduling.placement.framework import CycleState, FilterResult, Reason, Status
from gpuplane.scheduling.snapshot import ClusterSnapshot

SELECTOR_MISMATCH = "selector_mismatch"


class NodeSelector:
    """Keeps hosts whose labels include every ``key: value`` of ``task.selector``."""

    name: ClassVar[str] = "node_selector"

    def filter(self, state: CycleState, task: TaskRequest,
               snap: ClusterSnapshot) -> FilterResult | None:
        mask = snap.label_mask(task.selector)
        if mask is None:
            return None
        sel = ",".join(f"{k}={v}" for k, v in sorted(task.selector.items()))
        return FilterResult.single(mask, Reason(SELECTOR_MISMATCH, f"not matching labels {sel}",
                                                Status.UNRESOLVABLE))
