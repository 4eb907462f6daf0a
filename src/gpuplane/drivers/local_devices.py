"""Which devices a local task is given: the ``CUDA_VISIBLE_DEVICES`` entries and the device
nodes its sandbox binds, from the placement and the host's GPUs (``local_inventory``).

Pure functions of their arguments (no I/O); ``LocalDriver`` calls them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpuplane.drivers.base import DriverError, PlacedDevices
from gpuplane.drivers.sandbox import MigCaps, gpu_nodes


def mig_instance(gpu: Any, profile: str, start: int) -> Any | None:
    """The MIG instance (profile, start) NVML reported on ``gpu`` (start -1: any slot)."""
    return next((m for m in (gpu.mig if gpu is not None else ())
                 if m.profile == profile and m.start in (start, -1)), None)


def visible_devices(gpus: Mapping[int, Any], dev: PlacedDevices) -> list[str]:
    """GPU or MIG UUIDs (GPU indices where no UUID is known) of the placed devices."""
    if dev.mig_uuids:
        return list(dev.mig_uuids)
    out = []
    for i, profile, start in dev.mig:
        m = mig_instance(gpus.get(i), profile, start)
        if m is None:
            have = gpus[i].mig if gpus.get(i) is not None else ()
            raise DriverError(
                f"GPU {i} has no MIG instance {profile} at slot {start}; it has "
                f"{', '.join(f'{m.profile}@{m.start}' for m in have) or 'none'}"
                " (create it with nvidia-smi mig -cgi, or let gpuplane place elsewhere)")
        out.append(m.uuid)
    if dev.mig:
        return out
    for i in dev.gpu_indices:
        g = gpus.get(i)
        if g is not None and g.mig:
            raise DriverError(f"GPU {i} is in MIG mode; the placement names no MIG instance")
        out.append(g.uuid if g is not None and g.uuid else str(i))
    return out


def device_nodes(gpus: Mapping[int, Any], dev: PlacedDevices, dev_root: Path,
                 caps_root: Path) -> list[tuple[str, str]]:
    """The device nodes (source, destination) the sandbox binds for the placed devices."""

    def minor(i: int) -> int | None:
        g = gpus.get(i)
        if g is not None and g.declared:
            return None  # declared for development: there is no device
        return g.minor if g is not None and g.minor >= 0 else i

    migs = []
    for i, profile, start in dev.mig:
        m = mig_instance(gpus.get(i), profile, start)
        if m is not None and m.gi >= 0 and minor(i) is not None:
            migs.append(MigCaps(minor(i), m.gi, max(0, m.ci)))
    minors = [m for m in (minor(i) for i in dev.gpu_indices) if m is not None]
    return gpu_nodes(minors, migs, dev_root, caps_root)
