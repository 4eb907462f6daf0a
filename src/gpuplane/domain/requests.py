"""What one task asks for, and where it was put (pure values, no I/O).

Request kinds, decided by the fields of :class:`TaskRequest`:

* ``gpus == 0``: CPU-only (``gpu_milli`` is ignored and normalised to 0);
* ``gpus == k, gpu_milli == 1000``: ``k`` whole, completely free GPUs on one host;
* ``gpus == 1, gpu_milli < 1000``: a share of one GPU (many shares may co-reside);
* ``gpus == k > 1, gpu_milli < 1000``: a share of each of ``k`` GPUs of one host;
* ``mig_profile == "3g.40gb"`` (``gpus == 1``): one MIG instance of that profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuplane.domain.errors import FieldError, InvalidInput
from gpuplane.domain.inventory import FrozenMap, Taint, check_amount

MILLI_PER_GPU = 1000
TOLERATION_OPERATORS = ("Equal", "Exists")


@dataclass(frozen=True)
class Toleration:
    """Tolerates taints: ``Exists`` matches any value of ``key`` (an empty key
    with ``Exists`` matches every taint); ``Equal`` needs the same value.
    An empty ``effect`` matches every effect."""

    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        if self.operator not in TOLERATION_OPERATORS:
            errors.append(FieldError("operator", f"must be Equal or Exists, got {self.operator!r}"))
        if self.operator == "Equal" and not self.key:
            errors.append(FieldError("key", "is required with operator Equal"))
        if errors:
            raise InvalidInput("invalid toleration; fix the fields listed", errors)

    def tolerates(self, taint: Taint) -> bool:
        """True when this toleration covers ``taint``."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == taint.value


@dataclass(frozen=True)
class TaskRequest:
    """Resources and constraints of one task (one pod / one gang member).

    ``gpu_models`` empty means any model; otherwise the GPUs must be of one of
    the named models (exact string match). ``selector`` must be a subset of the
    host's labels; ``tolerations`` must cover the host's ``NoSchedule`` and
    ``NoExecute`` taints. Hashable: identical requests compare equal.
    """

    cpu_milli: int
    memory_mib: int
    gpus: int = 0
    gpu_milli: int = MILLI_PER_GPU
    mig_profile: str | None = None
    gpu_models: frozenset[str] = frozenset()
    selector: Mapping[str, str] = field(default_factory=FrozenMap)
    tolerations: tuple[Toleration, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpu_models", frozenset(self.gpu_models))
        object.__setattr__(self, "tolerations", tuple(self.tolerations))
        if not isinstance(self.selector, FrozenMap):
            object.__setattr__(self, "selector", FrozenMap(self.selector))
        errors: list[FieldError] = []
        check_amount(errors, "cpu_milli", self.cpu_milli)
        check_amount(errors, "memory_mib", self.memory_mib)
        check_amount(errors, "gpus", self.gpus, maximum=64)
        if self.gpus == 0 and self.mig_profile is None:
            object.__setattr__(self, "gpu_milli", 0)
        else:
            check_amount(errors, "gpu_milli", self.gpu_milli, minimum=1, maximum=MILLI_PER_GPU)
        if self.mig_profile is not None:
            if not isinstance(self.mig_profile, str) or not self.mig_profile:
                errors.append(FieldError("mig_profile", "must be a non-empty profile name"))
            if self.gpus != 1:
                errors.append(FieldError("gpus", "must be 1 with a mig_profile"))
        for i, m in enumerate(self.gpu_models):
            if not isinstance(m, str) or not m:
                errors.append(FieldError(f"gpu_models[{i}]", "must be a non-empty string"))
        for i, t in enumerate(self.tolerations):
            if not isinstance(t, Toleration):
                errors.append(FieldError(f"tolerations[{i}]", "must be a Toleration"))
        if errors:
            raise InvalidInput("invalid task request; fix the fields listed", errors)

    # -- classification -------------------------------------------------------------------
    @property
    def is_cpu_only(self) -> bool:
        return self.gpus == 0

    @property
    def is_mig(self) -> bool:
        return self.mig_profile is not None

    @property
    def is_shared(self) -> bool:
        """A fractional share of GPU(s) (not MIG)."""
        return self.gpus > 0 and self.mig_profile is None and self.gpu_milli < MILLI_PER_GPU

    @property
    def is_whole(self) -> bool:
        """Whole GPU(s): completely free devices are needed."""
        return self.gpus > 0 and self.mig_profile is None and self.gpu_milli == MILLI_PER_GPU

    @property
    def gpu_demand_milli(self) -> int:
        """Total milli-GPU asked for (``gpus * gpu_milli``; 0 for CPU-only and MIG)."""
        return 0 if self.mig_profile is not None else self.gpus * self.gpu_milli

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(cpu_milli, gpu_milli, gpus)``: what scores depend on (memory and
        constraints only affect feasibility)."""
        return (self.cpu_milli, self.gpu_milli, self.gpus)


@dataclass(frozen=True)
class Placement:
    """Where a task goes: the host name, its GPU device indices and the
    per-GPU milli taken from each (``gpu_milli`` is 0 for CPU-only tasks).

    ``mig`` lists the MIG instances used (type ``MigInstanceRef`` from
    :mod:`gpuplane.domain.mig`); their GPUs also appear in ``gpu_indices``.
    """

    host: str
    gpu_indices: tuple[int, ...] = ()
    gpu_milli: int = 0
    mig: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpu_indices", tuple(int(i) for i in self.gpu_indices))
        object.__setattr__(self, "mig", tuple(self.mig))
        errors: list[FieldError] = []
        if not isinstance(self.host, str) or not self.host:
            errors.append(FieldError("host", "must be a non-empty string"))
        if len(set(self.gpu_indices)) != len(self.gpu_indices):
            errors.append(FieldError("gpu_indices", "must not repeat a device"))
        if any(i < 0 for i in self.gpu_indices):
            errors.append(FieldError("gpu_indices", "must be >= 0"))
        check_amount(errors, "gpu_milli", self.gpu_milli, maximum=MILLI_PER_GPU)
        if errors:
            raise InvalidInput("invalid placement; fix the fields listed", errors)
