"""Requests that can never run, found at submission (no I/O).

A task asking for more GPUs than any host of the fleet has, a MIG profile that no MIG-mode GPU
of the allowed models offers, a GPU share where no GPU is shared, more CPU or memory than any
host has, or a gang larger than the whole fleet would pend forever; the submission is refused
instead, naming the field, what the fleet does offer, and the command that lists it. Capacity
that is busy does not count against a request: only what the fleet could ever give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpuplane.domain.errors import FieldError
from gpuplane.domain.mig_profiles import find_profile
from gpuplane.domain.workloads import WorkloadSpec


@dataclass(frozen=True)
class HostShape:
    """What one host could ever give: CPU, memory, and (model, mode) of each GPU."""

    cpu_milli: int
    memory_mib: int
    gpus: tuple[tuple[str, str], ...]


def _usable(host: HostShape, models: Sequence[str], kind: str) -> int:
    """GPUs of ``host`` a task of ``kind`` (whole / shared / mig) may use."""
    modes = {"whole": ("whole", "shared"), "shared": ("shared",), "mig": ("mig",)}[kind]
    return sum(1 for model, mode in host.gpus
               if mode in modes and (not models or model in models))


def infeasible(spec: WorkloadSpec, fleet: Sequence[HostShape]) -> list[FieldError]:
    """Every field of ``spec`` no host of ``fleet`` could ever satisfy (empty: it may run)."""
    errors: list[FieldError] = []
    if not fleet:
        return errors  # nothing registered yet: the operator may still add hosts
    gang_gpus: dict[str, int] = {}
    for gi, group in enumerate(spec.tasks):
        r, loc = group.resources, f"tasks[{gi}].resources"
        models = list(r.gpu_models)
        on = f" of models {', '.join(models)}" if models else ""
        if r.cpu_milli > max(h.cpu_milli for h in fleet):
            errors.append(FieldError(f"{loc}.cpu", f"{r.cpu:g} cores, but the largest host has "
                                     f"{max(h.cpu_milli for h in fleet) / 1000:g}; see "
                                     "`gpuplane get hosts`"))
        if r.memory_mib > max(h.memory_mib for h in fleet):
            errors.append(FieldError(f"{loc}.memory", f"{r.memory_mib} MiB, but the largest "
                                     f"host has {max(h.memory_mib for h in fleet)} MiB; see "
                                     "`gpuplane get hosts`"))
        if r.gpus == 0:
            continue
        kind = "mig" if r.mig_profile else "shared" if r.gpu_milli < 1000 else "whole"
        best = max(_usable(h, models, kind) for h in fleet)
        if kind == "mig":
            offered = sorted({m for h in fleet for m, mode in h.gpus if mode == "mig"
                              and (not models or m in models)})
            fits = [m for m in offered if find_profile(m, r.mig_profile) is not None]
            if not fits:
                where = (f"the MIG-mode GPUs{on} are {', '.join(offered)}" if offered
                         else f"no GPU{on} is in MIG mode")
                errors.append(FieldError(f"{loc}.mig_profile", (
                    f"no MIG-mode GPU offers {r.mig_profile!r}: {where}; list them with "
                    "`gpuplane get gpus`")))
        elif kind == "shared" and best == 0:
            errors.append(FieldError(f"{loc}.gpu_milli", (
                f"a share of a GPU needs a GPU in shared mode{on}, and there is none; ask "
                "for whole GPUs (gpu_milli: 1000) or see `gpuplane get gpus`")))
        elif kind == "whole" and r.gpus > best:
            split = (f"; or split it into a gang of {-(-r.gpus // best)} tasks of at most "
                     f"{best}" if best else "")
            errors.append(FieldError(f"{loc}.gpus", (
                f"{r.gpus} GPUs per task, but no host has more than {best} usable GPUs{on}"
                f"{split}; see `gpuplane get hosts`")))
        if spec.gang:
            key = ",".join(models) + "/" + kind
            gang_gpus[key] = gang_gpus.get(key, 0) + r.gpus * group.replicas
    for key, need in gang_gpus.items():
        models_part, kind = key.rsplit("/", 1)
        models = [m for m in models_part.split(",") if m]
        total = sum(_usable(h, models, kind) for h in fleet)
        if need > total:
            errors.append(FieldError("gang", (
                f"the gang needs {need} GPUs at once but the whole fleet has {total} usable "
                f"ones{' of models ' + ', '.join(models) if models else ''}; make it smaller or "
                "drop gang: true")))
    return errors
