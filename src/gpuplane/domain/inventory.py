"""Inventory: hosts, their GPU devices and taints (pure values, no I/O).

All amounts are integers: CPU in milli-cores, memory in MiB, GPU shares in
milli-GPU (one whole GPU = 1000). Every type here is a frozen dataclass that
validates itself on construction and raises
:class:`~gpuplane.domain.errors.InvalidInput` listing *every* bad field.

A GPU is offered in one of three modes:

``whole``
    PCI passthrough: only requests for whole GPUs (``gpu_milli == 1000``) fit.
``shared``
    time-slicing / vGPU: fractional shares (``gpu_milli < 1000``) of one GPU
    co-reside; a completely free shared GPU can also be taken whole.
``mig``
    the GPU is partitioned by the vendor's MIG profiles; only MIG requests fit.
    Its current partitioning is ``GpuDevice.mig_layout`` (type from
    :mod:`gpuplane.domain.mig`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gpuplane.domain.errors import FieldError, InvalidInput

if TYPE_CHECKING:  # pragma: no cover - typing only
    from gpuplane.domain.mig import MigLayout  # noqa: F401

GpuMode = Literal["whole", "shared", "mig"]
GPU_MODES: tuple[str, ...] = ("whole", "shared", "mig")
TAINT_EFFECTS: tuple[str, ...] = ("NoSchedule", "PreferNoSchedule", "NoExecute")

#: Known GPU models and their device memory in MiB. Unknown model names are
#: accepted everywhere (a model is just a string); this table only provides a
#: default memory size. ``G2``/``G3`` are anonymised models of the Alibaba
#: trace whose memory is not published (0 = unknown).
KNOWN_GPU_MODELS: Mapping[str, int] = {
    "A10": 24 * 1024,
    "A100-40GB": 40 * 1024,
    "A100-80GB": 80 * 1024,
    "H100-80GB": 80 * 1024,
    "H200": 141 * 1024,
    "L4": 24 * 1024,
    "L40S": 48 * 1024,
    "P100": 16 * 1024,
    "T4": 16 * 1024,
    "V100M16": 16 * 1024,
    "V100M32": 32 * 1024,
    "G2": 0,
    "G3": 0,
}


def gpu_memory_mib(model: str) -> int:
    """Device memory of a known model in MiB; 0 when the model is unknown."""
    return KNOWN_GPU_MODELS.get(model, 0)


class FrozenMap(Mapping[str, str]):
    """An immutable, hashable ``str -> str`` mapping (labels, selectors)."""

    __slots__ = ("_items", "_dict")

    def __init__(self, data: Mapping[str, str] | None = None) -> None:
        d = dict(data or {})
        self._dict = d
        self._items = tuple(sorted(d.items()))

    def __getitem__(self, key: str) -> str:
        return self._dict[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._dict == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._dict!r})"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_amount(errors: list[FieldError], loc: str, value: Any, *, minimum: int = 0,
                 maximum: int | None = None) -> None:
    """Append a :class:`FieldError` to ``errors`` unless ``value`` is an int in range."""
    if not _is_int(value):
        errors.append(FieldError(loc, f"must be an integer, got {value!r}"))
    elif value < minimum:
        errors.append(FieldError(loc, f"must be >= {minimum}, got {value}"))
    elif maximum is not None and value > maximum:
        errors.append(FieldError(loc, f"must be <= {maximum}, got {value}"))


def _raise(what: str, errors: list[FieldError]) -> None:
    if errors:
        raise InvalidInput(f"invalid {what}; fix the fields listed", errors)


@dataclass(frozen=True)
class Taint:
    """A host taint: tasks must tolerate it (``NoSchedule``/``NoExecute``) to land there.

    ``PreferNoSchedule`` taints never make a host infeasible.
    """

    key: str
    value: str = ""
    effect: str = "NoSchedule"

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        if not isinstance(self.key, str) or not self.key:
            errors.append(FieldError("key", "must be a non-empty string"))
        if self.effect not in TAINT_EFFECTS:
            errors.append(FieldError("effect", f"must be one of {', '.join(TAINT_EFFECTS)}, "
                                               f"got {self.effect!r}"))
        _raise("taint", errors)


@dataclass(frozen=True)
class GpuDevice:
    """One physical GPU of a host.

    ``index`` is the device index on its host (0-based, unique per host);
    ``memory_mib`` 0 means unknown. ``mig_layout`` is only meaningful with
    ``mode == "mig"`` (``None`` there means "MIG enabled, no instances yet").
    """

    index: int
    model: str
    memory_mib: int = -1
    numa: int = 0
    nvlink_domain: str | None = None
    mode: GpuMode = "whole"
    mig_layout: Any = None  # MigLayout | None (gpuplane.domain.mig)

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        check_amount(errors, "index", self.index)
        if not isinstance(self.model, str) or not self.model:
            errors.append(FieldError("model", "must be a non-empty string"))
        if self.memory_mib == -1 and isinstance(self.model, str):
            object.__setattr__(self, "memory_mib", gpu_memory_mib(self.model))
        check_amount(errors, "memory_mib", self.memory_mib)
        check_amount(errors, "numa", self.numa)
        if self.mode not in GPU_MODES:
            errors.append(FieldError("mode", f"must be one of {', '.join(GPU_MODES)}, "
                                             f"got {self.mode!r}"))
        if self.mig_layout is not None and self.mode != "mig":
            errors.append(FieldError("mig_layout", "only allowed when mode is 'mig'"))
        _raise("GPU device", errors)


@dataclass(frozen=True)
class Host:
    """A schedulable machine: CPU, memory and its GPU devices.

    ``gpus`` are ordered by device index (indices must be 0..n-1). ``labels``
    are matched by task selectors; ``taints`` must be tolerated. ``site`` and
    ``jurisdiction`` (e.g. ``EU/DE``) feed residency policies; ``tee`` names a
    trusted-execution capability (``SEV-SNP``, ``TDX``) or is ``None``.
    """

    name: str
    cpu_milli: int
    memory_mib: int
    gpus: tuple[GpuDevice, ...] = ()
    site: str = ""
    jurisdiction: str = ""
    rack: str = ""
    labels: Mapping[str, str] = field(default_factory=FrozenMap)
    taints: tuple[Taint, ...] = ()
    tee: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpus", tuple(self.gpus))
        object.__setattr__(self, "taints", tuple(self.taints))
        if not isinstance(self.labels, FrozenMap):
            object.__setattr__(self, "labels", FrozenMap(self.labels))
        errors: list[FieldError] = []
        if not isinstance(self.name, str) or not self.name:
            errors.append(FieldError("name", "must be a non-empty string"))
        check_amount(errors, "cpu_milli", self.cpu_milli)
        check_amount(errors, "memory_mib", self.memory_mib)
        for i, g in enumerate(self.gpus):
            if not isinstance(g, GpuDevice):
                errors.append(FieldError(f"gpus[{i}]", "must be a GpuDevice"))
            elif g.index != i:
                errors.append(FieldError(f"gpus[{i}].index",
                                         f"devices must be indexed 0..n-1 in order, got {g.index}"))
        for i, t in enumerate(self.taints):
            if not isinstance(t, Taint):
                errors.append(FieldError(f"taints[{i}]", "must be a Taint"))
        _raise(f"host {self.name!r}", errors)

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def gpu_model(self) -> str | None:
        """Model of device 0 (hosts are normally homogeneous); ``None`` without GPUs."""
        return self.gpus[0].model if self.gpus else None


def uniform_host(name: str, cpu_milli: int, memory_mib: int, gpus: int, model: str = "",
                 mode: GpuMode = "shared", **kw: Any) -> Host:
    """Convenience: a host with ``gpus`` identical devices of ``model`` in ``mode``."""
    devs = tuple(GpuDevice(index=i, model=model, mode=mode) for i in range(gpus)) if gpus else ()
    return Host(name=name, cpu_milli=cpu_milli, memory_mib=memory_mib, gpus=devs, **kw)
