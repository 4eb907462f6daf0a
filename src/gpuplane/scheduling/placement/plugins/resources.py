"""Filter ``resource_fit``: free CPU and memory must cover the request."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from gpuplane.domain.requests import TaskRequest
from gpuplane.scheduling.placement.framework import CycleState, FilterResult, Reason
from gpuplane.scheduling.snapshot import ClusterSnapshot

TOO_LITTLE_CPU = Reason("insufficient_cpu", "too little CPU")
TOO_LITTLE_MEMORY = Reason("insufficient_memory", "too little memory")


class ResourceFit:
    """Rejects hosts with ``cpu_free < cpu_milli`` or ``mem_free < memory_mib``
    (CPU is blamed first when both are short)."""

    name: ClassVar[str] = "resource_fit"

    def filter(self, state: CycleState, task: TaskRequest,
               snap: ClusterSnapshot) -> FilterResult | None:
        cpu_ok = snap.cpu_free >= task.cpu_milli
        passed = cpu_ok & (snap.mem_free >= task.memory_mib)

        def nearest(rejected: np.ndarray) -> str | None:
            short = np.flatnonzero(rejected & ~cpu_ok)
            if len(short):
                best = int(short[np.argmax(snap.cpu_free[short])])
                return (f"closest: {snap.names[best]} has {int(snap.cpu_free[best])} of "
                        f"{task.cpu_milli} milli-CPU free")
            short = np.flatnonzero(rejected)
            best = int(short[np.argmax(snap.mem_free[short])])
            return (f"closest: {snap.names[best]} has {int(snap.mem_free[best])} of "
                    f"{task.memory_mib} MiB free")

        return FilterResult(passed=passed, reasons=(TOO_LITTLE_CPU, TOO_LITTLE_MEMORY),
                            explain=lambda rejected: ((TOO_LITTLE_CPU, TOO_LITTLE_MEMORY),
                                                      np.where(cpu_ok, 1, 0)),
                            nearest=nearest)
