"""gpuplane requests as Nova flavors (pure: no I/O, no clock).

A VM that gpuplane places on an OpenStack cloud boots with a flavor whose extra specs make
Nova's scheduler ask Placement for exactly what gpuplane placed, in the resource classes and
traits of gpuplane's provider trees (``tree.py``; docs/openstack.md, "Nova"):

=========================  ===================================================================
what the VM takes          extra specs
=========================  ===================================================================
N whole GPUs               one group per GPU: ``resources_GPU<i>:VGPU=1`` (or the operator's
                           ``whole_class``), ``trait_GPU<i>:CUSTOM_GPU_<MODEL>=required``;
                           ``group_policy=isolate`` when N > 1 (each GPU provider has 1)
N whole GPUs, PCI          ``pci_passthrough:alias=<alias>:N`` (the operator's alias names the
passthrough                device, so the model is the alias's, not a trait)
a share of a GPU           ``resources_GPU1:CUSTOM_GPU_MILLI=<milli>`` + model trait
N MIG instances            ``resources_GPU1:CUSTOM_MIG_<PROFILE>=N``, ``trait_GPU1:
                           CUSTOM_GPU_MIG_MODE=required`` + model trait (one GPU)
a TEE                      ``trait:HW_CPU_X86_AMD_SEV_SNP=required`` / ``HW_CPU_X86_INTEL_TDX``
                           (on the compute node, the unnumbered group)
guest NUMA nodes           ``hw:numa_nodes=N``
other traits               ``trait:<TRAIT>=required`` / ``forbidden`` (compute node)
CPU, memory, disk          the flavor's ``vcpus`` (cores rounded up), ``ram`` (MiB), ``disk``
=========================  ===================================================================

``granular=False`` puts the GPU resources and traits in the unnumbered group instead
(``resources:VGPU=N``, ``trait:CUSTOM_GPU_H100_80GB=required``), for a Nova whose compute
node itself carries the GPU inventory (libvirt vGPU types, or a provider config file).

Identical requests give the identical flavor: its ``name`` and ``id`` are derived from a digest
of (vcpus, ram, disk, extra specs), so every gpuplane process reuses one flavor per shape
instead of creating one per VM.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuplane.domain.errors import FieldError, InvalidInput
from gpuplane.drivers.openstack.tree import (
    GPU_MILLI,
    MIG_MODE_TRAIT,
    NAMESPACE,
    TEE_TRAITS,
    WHOLE_CLASSES,
    HostView,
    mig_class,
    model_trait,
)

_TRAIT_RE = re.compile(r"^[A-Z0-9_]{1,255}$")
_ALIAS_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_PROFILE_RE = re.compile(r"^\d+g\.\d+gb(\+me)?$")
GPU_GROUP = "_GPU"
"""Suffix stem of the granular request groups (``resources_GPU1``): Placement >= 1.33."""


@dataclass(frozen=True)
class VmRequest:
    """What one VM needs, in gpuplane's terms. At most one kind of GPU: ``gpus`` whole GPUs
    (``shared=True`` or ``gpu_milli < 1000``: that share of each, in ``CUSTOM_GPU_MILLI``),
    or ``mig_count`` instances of ``mig_profile``."""

    vcpus: int
    memory_mib: int
    disk_gb: int = 1
    gpus: int = 0
    gpu_milli: int = 1000
    shared: bool = False
    mig_profile: str | None = None
    mig_count: int = 0
    gpu_model: str | None = None
    tee: str | None = None
    numa_nodes: int | None = None
    required_traits: tuple[str, ...] = ()
    forbidden_traits: tuple[str, ...] = ()

    def problems(self) -> list[FieldError]:
        """Every field at fault (empty: the request maps to a flavor)."""
        out: list[FieldError] = []
        if self.vcpus < 1:
            out.append(FieldError("vcpus", f"must be at least 1, got {self.vcpus}"))
        if self.memory_mib < 1:
            out.append(FieldError("memory_mib", f"must be at least 1, got {self.memory_mib}"))
        if self.disk_gb < 0:
            out.append(FieldError("disk_gb", f"must not be negative, got {self.disk_gb}"))
        if self.gpus < 0:
            out.append(FieldError("gpus", f"must not be negative, got {self.gpus}"))
        if not 1 <= self.gpu_milli <= 1000:
            out.append(FieldError("gpu_milli", f"must be 1..1000, got {self.gpu_milli}"))
        if self.mig_profile is not None:
            if not _PROFILE_RE.match(self.mig_profile):
                out.append(FieldError("mig_profile", f"{self.mig_profile!r} is not a MIG "
                                      "profile such as 1g.10gb"))
            if self.mig_count < 1:
                out.append(FieldError("mig_count", "must be at least 1 with a mig_profile"))
            if self.gpus:
                out.append(FieldError("gpus", "a VM takes whole or shared GPUs or MIG "
                                      "instances, not both"))
        elif self.mig_count:
            out.append(FieldError("mig_count", "needs a mig_profile"))
        if self.gpu_milli < 1000 and self.gpus != 1:
            out.append(FieldError("gpu_milli", "a share below 1000 needs gpus: 1"))
        if self.tee is not None and self.tee not in TEE_TRAITS:
            out.append(FieldError("tee", f"must be one of {', '.join(TEE_TRAITS)}, got "
                                  f"{self.tee!r}"))
        if self.numa_nodes is not None and self.numa_nodes < 1:
            out.append(FieldError("numa_nodes", f"must be at least 1, got {self.numa_nodes}"))
        for name, traits in (("required_traits", self.required_traits),
                             ("forbidden_traits", self.forbidden_traits)):
            for t in traits:
                if not _TRAIT_RE.match(t):
                    out.append(FieldError(name, f"{t!r} is not a Placement trait name"))
        both = set(self.required_traits) & set(self.forbidden_traits)
        if both:
            out.append(FieldError("forbidden_traits", f"also required: {', '.join(sorted(both))}"))
        return out


@dataclass(frozen=True)
class FlavorSpec:
    """A Nova flavor: ``id`` and ``name`` are stable functions of the rest."""

    id: str
    name: str
    vcpus: int
    ram: int
    disk: int
    extra_specs: Mapping[str, str] = field(default_factory=dict)
    description: str = ""


def _gpu_specs(req: VmRequest, *, whole_class: str, pci_alias: str | None, granular: bool
               ) -> dict[str, str]:
    specs: dict[str, str] = {}
    model = model_trait(req.gpu_model) if req.gpu_model else None

    def group(i: int, rc: str, amount: int, traits: tuple[str, ...]) -> None:
        suffix = f"{GPU_GROUP}{i}" if granular else ""
        key = f"resources{suffix}:{rc}"
        specs[key] = str(int(specs.get(key, 0)) + amount)
        for t in traits:
            specs[f"trait{suffix}:{t}"] = "required"

    model_traits = (model,) if model else ()
    if req.mig_profile:
        group(1, mig_class(req.mig_profile), req.mig_count, (*model_traits, MIG_MODE_TRAIT))
    elif req.gpus and (req.shared or req.gpu_milli < 1000):
        for i in range(1, req.gpus + 1):
            group(i, GPU_MILLI, req.gpu_milli, model_traits)
    elif req.gpus and pci_alias:
        specs["pci_passthrough:alias"] = f"{pci_alias}:{req.gpus}"
    elif req.gpus:
        for i in range(1, req.gpus + 1):
            group(i, whole_class, 1, model_traits)
    if granular and sum(k.startswith("resources" + GPU_GROUP) for k in specs) > 1:
        specs["group_policy"] = "isolate"
    return specs


def _summary(req: VmRequest, disk: int) -> str:
    parts = [f"{req.vcpus}c{req.memory_mib}m{disk}g"]
    if req.mig_profile:
        parts.append(f"mig{re.sub(r'[^a-z0-9]+', '', req.mig_profile)}x{req.mig_count}")
    elif req.gpus and (req.shared or req.gpu_milli < 1000):
        parts.append(f"milli{req.gpu_milli}x{req.gpus}")
    elif req.gpus:
        parts.append(f"gpu{req.gpus}")
    if req.gpu_model:
        parts.append(re.sub(r"[^a-z0-9]+", "", req.gpu_model.lower()))
    if req.tee:
        parts.append(req.tee.replace("-", ""))
    return "-".join(parts)


def flavor_for(req: VmRequest, *, whole_class: str = "VGPU", pci_alias: str | None = None,
               granular: bool = True, prefix: str = "gpuplane") -> FlavorSpec:
    """The flavor of ``req``. ``whole_class`` is the class of whole GPUs in the operator's
    Placement (as ``tree.host_tree``); ``pci_alias`` (a Nova ``[pci] alias`` name) asks for
    whole GPUs by PCI passthrough instead. Raises ``InvalidInput`` naming every bad field."""
    errors = req.problems()
    if whole_class not in WHOLE_CLASSES:
        errors.append(FieldError("whole_class", f"must be one of {', '.join(WHOLE_CLASSES)}, "
                                 f"got {whole_class!r}"))
    if pci_alias is not None and not _ALIAS_RE.match(pci_alias):
        errors.append(FieldError("pci_alias", f"{pci_alias!r} is not a PCI alias name"))
    if errors:
        raise InvalidInput("the VM request cannot be expressed as a Nova flavor", errors)
    specs = _gpu_specs(req, whole_class=whole_class, pci_alias=pci_alias, granular=granular)
    if req.tee:
        specs[f"trait:{TEE_TRAITS[req.tee][-1]}"] = "required"
    for t in req.required_traits:
        specs.setdefault(f"trait:{t}", "required")
    for t in req.forbidden_traits:
        specs[f"trait:{t}"] = "forbidden"
    if req.numa_nodes:
        specs["hw:numa_nodes"] = str(req.numa_nodes)
    specs = dict(sorted(specs.items()))
    canonical = json.dumps({"vcpus": req.vcpus, "ram": req.memory_mib, "disk": req.disk_gb,
                            "extra_specs": specs}, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return FlavorSpec(
        id=str(uuidlib.uuid5(NAMESPACE, f"flavor:{canonical}")),
        name=f"{prefix}.{_summary(req, req.disk_gb)}.{digest[:8]}"[:255],
        vcpus=req.vcpus, ram=req.memory_mib, disk=req.disk_gb, extra_specs=specs,
        description=f"gpuplane flavor {digest[:16]}")


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def vm_request_for(resources: Any, *, placement: Any = None, host: HostView | None = None,
                   confidential: bool = False, tee: str | None = None, disk_gb: int = 1,
                   numa_nodes: int | None = None, required_traits: tuple[str, ...] = (),
                   forbidden_traits: tuple[str, ...] = ()) -> VmRequest:
    """A gpuplane task's ``Resources`` (and, once placed, its ``TaskPlacement`` on ``host``)
    as a ``VmRequest``: cores rounded up to whole vCPUs; the GPU model of the placed GPU (else
    the one acceptable model, else any); a MIG placement's instance count; a whole shared GPU
    stays in ``CUSTOM_GPU_MILLI``; ``confidential`` takes the host's TEE (or ``tee``)."""
    cpu = float(_get(resources, "cpu", 1.0))
    memory = _get(resources, "memory_mib")
    gpus = int(_get(resources, "gpus", 0))
    milli = int(_get(resources, "gpu_milli", 1000))
    profile = _get(resources, "mig_profile")
    models = list(_get(resources, "gpu_models", ()) or ())
    by_index = {g.index: g for g in host.gpus} if host else {}
    indices = tuple(_get(placement, "gpu_indices", ()) or ()) if placement is not None else ()
    mig = tuple(_get(placement, "mig", ()) or ()) if placement is not None else ()
    placed = [by_index[i] for i in indices if i in by_index]
    if mig and by_index:
        placed = [by_index[int(m.get("gpu_index", indices[0] if indices else 0))]
                  for m in mig if int(m.get("gpu_index", indices[0] if indices else 0))
                  in by_index] or placed
    model = placed[0].model if placed else (models[0] if len(models) == 1 else None)
    shared = bool(placed) and all(g.mode == "shared" for g in placed)
    if placement is not None:
        milli = int(_get(placement, "gpu_milli", milli))
    if confidential and tee is None:
        tee = host.tee if host else None
        if tee is None:
            raise InvalidInput("a confidential VM needs a TEE host: give the host it was "
                               "placed on or the TEE type", [FieldError("tee", "unknown")])
    return VmRequest(
        vcpus=max(1, math.ceil(cpu - 1e-9)), memory_mib=int(memory) if memory else 1024,
        disk_gb=disk_gb, gpus=0 if profile else gpus, gpu_milli=milli, shared=shared,
        mig_profile=profile, mig_count=(len(mig) or gpus) if profile else 0, gpu_model=model,
        tee=tee, numa_nodes=numa_nodes, required_traits=tuple(required_traits),
        forbidden_traits=tuple(forbidden_traits))
