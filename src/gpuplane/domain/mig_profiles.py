"""NVIDIA MIG profile catalogue: which GPU instance profiles each model offers and where they fit.

Pure data plus lookups, no I/O. ``domain/mig.py`` builds layouts on top of it and re-exports the
public names; import from there.

Geometry. A MIG-capable GPU of these models has 7 compute slices and 8 memory slices. A GPU
instance of a profile occupies ``memory_slices`` consecutive memory slices starting at one of the
profile's documented start positions, and ``compute_slices`` compute slices. Two instances on one
GPU never share a memory slice; the compute slices of all instances never exceed 7.

Sources (checked 2026-11, see docs/mig.md):
- NVIDIA Multi-Instance GPU User Guide, "Supported MIG Profiles"
  (https://docs.nvidia.com/datacenter/tesla/mig-user-guide/supported-mig-profiles.html):
  profile names per product, fraction of memory (x/8) and of SMs (x/7), number of instances
  available. The A100 table lists 3g.20gb with 4/8 of the memory; A100-SXM4-80GB renames the
  profiles 1g.10gb, 1g.10gb+me, 1g.20gb, 2g.20gb, 3g.40gb, 4g.40gb, 7g.80gb; the H100 (80GB and
  94GB) and H200 (141GB) tables have the same geometry under their own names.
- Same guide, "Getting Started with MIG", ``nvidia-smi mig -lgipp`` output for A100: placements
  {0..6}:1 for 1g and 1g+me, {0,2,4,6}:2 for the two-memory-slice 1g profile, {0,2,4}:2 for 2g,
  {0,4}:4 for 3g, {0}:4 for 4g and {0}:8 for 7g (``start:size`` in memory slices). Hopper GPUs
  report the same placements for the same profile shapes.
- ``nvidia-smi mig -lgip`` output for A100-SXM4-40GB (user guide) and H100-SXM5-80GB (published
  listing) for the usable memory in MiB. For the other models ``memory_mib`` is the nominal size in
  the profile name (decimal GB) converted to MiB and rounded down: a lower bound of what the
  driver reports, so a task that fits the catalogue fits the hardware.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Mapping

from gpuplane.domain.errors import FieldError, InvalidInput

COMPUTE_SLICES = 7
"""Compute slices of every catalogued MIG GPU (the denominator of a profile's usage weight)."""

MEMORY_SLICES = 8
"""Memory slices of every catalogued MIG GPU (the grid that placements start in)."""


@dataclass(frozen=True)
class MigProfile:
    """One GPU instance profile of one GPU model.

    ``starts`` are the memory-slice indices where an instance may begin; it then covers
    ``memory_slices`` consecutive slices. ``max_instances`` is NVIDIA's "number of instances
    available" (one for media-extension profiles even though seven starts exist).
    ``memory_mib`` is the usable framebuffer of one instance.
    """

    name: str
    model: str
    compute_slices: int
    memory_slices: int
    memory_mib: int
    max_instances: int
    starts: tuple[int, ...]
    media_extensions: bool = False

    @property
    def usage(self) -> Fraction:
        """Share of the GPU this profile uses, by compute slices: exactly ``compute_slices / 7``.

        This is the one unit in which quotas and accounting count MIG instances: a 7g.80gb
        counts as 1 GPU, a 3g.40gb as 3/7 of one.
        """
        return Fraction(self.compute_slices, COMPUTE_SLICES)

    @property
    def usage_milli(self) -> int:
        """``usage`` in milli-GPU, rounded down, so any valid layout sums to at most 1000."""
        return self.compute_slices * 1000 // COMPUTE_SLICES

    def mask(self, start: int) -> int:
        """Bit mask of the memory slices an instance starting at ``start`` covers."""
        return ((1 << self.memory_slices) - 1) << start


# Shapes shared by every catalogued model: (compute, memory slices, max instances, starts, +me).
# Keys name the shape; each model maps its profile names onto them.
_SHAPES: dict[str, tuple[int, int, int, tuple[int, ...], bool]] = {
    "1g": (1, 1, 7, (0, 1, 2, 3, 4, 5, 6), False),
    "1g+me": (1, 1, 1, (0, 1, 2, 3, 4, 5, 6), True),
    "1g.2m": (1, 2, 4, (0, 2, 4, 6), False),
    "2g": (2, 2, 3, (0, 2, 4), False),
    "3g": (3, 4, 2, (0, 4), False),
    "4g": (4, 4, 1, (0,), False),
    "7g": (7, 8, 1, (0,), False),
}


def _gb(gb: int) -> int:
    """Nominal decimal GB in MiB, rounded down (a lower bound of the usable memory)."""
    return gb * 10**9 // 2**20


# model -> shape -> (profile name, memory MiB)
_TABLE: dict[str, dict[str, tuple[str, int]]] = {
    "A100-40GB": {  # nvidia-smi mig -lgip on A100-SXM4-40GB
        "1g": ("1g.5gb", 4864), "1g+me": ("1g.5gb+me", 4864), "1g.2m": ("1g.10gb", 9856),
        "2g": ("2g.10gb", 9856), "3g": ("3g.20gb", 20096), "4g": ("4g.20gb", 20096),
        "7g": ("7g.40gb", 40192),
    },
    "A100-80GB": {
        "1g": ("1g.10gb", _gb(10)), "1g+me": ("1g.10gb+me", _gb(10)), "1g.2m": ("1g.20gb", _gb(20)),
        "2g": ("2g.20gb", _gb(20)), "3g": ("3g.40gb", _gb(40)), "4g": ("4g.40gb", _gb(40)),
        "7g": ("7g.80gb", _gb(80)),
    },
    "H100-80GB": {  # nvidia-smi mig -lgip on H100-SXM5-80GB
        "1g": ("1g.10gb", 9984), "1g+me": ("1g.10gb+me", 9984), "1g.2m": ("1g.20gb", 20096),
        "2g": ("2g.20gb", 20096), "3g": ("3g.40gb", 40448), "4g": ("4g.40gb", 40448),
        "7g": ("7g.80gb", 81152),
    },
    "H100-94GB": {  # H100 NVL and H100-SXM5/PCIE 94GB
        "1g": ("1g.12gb", _gb(12)), "1g+me": ("1g.12gb+me", _gb(12)), "1g.2m": ("1g.24gb", _gb(24)),
        "2g": ("2g.24gb", _gb(24)), "3g": ("3g.47gb", _gb(47)), "4g": ("4g.47gb", _gb(47)),
        "7g": ("7g.94gb", _gb(94)),
    },
    "H200-141GB": {  # H200-SXM5 and H200 NVL
        "1g": ("1g.18gb", _gb(18)), "1g+me": ("1g.18gb+me", _gb(18)), "1g.2m": ("1g.35gb", _gb(35)),
        "2g": ("2g.35gb", _gb(35)), "3g": ("3g.71gb", _gb(71)), "4g": ("4g.71gb", _gb(71)),
        "7g": ("7g.141gb", _gb(141)),
    },
}

_ALIASES: dict[str, str] = {
    "A100-SXM4-40GB": "A100-40GB", "A100-PCIE-40GB": "A100-40GB", "A100-40G": "A100-40GB",
    "A100-SXM4-80GB": "A100-80GB", "A100-PCIE-80GB": "A100-80GB", "A100-80G": "A100-80GB",
    "H100": "H100-80GB", "H100-SXM5-80GB": "H100-80GB", "H100-PCIE-80GB": "H100-80GB",
    "H100-PCIE": "H100-80GB", "H100-80G": "H100-80GB", "H100-SXM": "H100-80GB",
    "H100-NVL": "H100-94GB", "H100-SXM5-94GB": "H100-94GB", "H100-PCIE-94GB": "H100-94GB",
    "H100-94G": "H100-94GB",
    "H200": "H200-141GB", "H200-SXM5-141GB": "H200-141GB", "H200-NVL": "H200-141GB",
    "H200-141G": "H200-141GB", "H200-NVL-141GB": "H200-141GB",
}


def _build() -> dict[str, dict[str, MigProfile]]:
    catalogue: dict[str, dict[str, MigProfile]] = {}
    for model, shapes in _TABLE.items():
        profiles: dict[str, MigProfile] = {}
        # Order: by compute slices, then memory slices, media-extension variant after its base.
        for shape in ("1g", "1g+me", "1g.2m", "2g", "3g", "4g", "7g"):
            name, mib = shapes[shape]
            compute, memory, max_n, starts, me = _SHAPES[shape]
            profiles[name] = MigProfile(name=name, model=model, compute_slices=compute,
                                        memory_slices=memory, memory_mib=mib,
                                        max_instances=max_n, starts=starts, media_extensions=me)
        catalogue[model] = profiles
    return catalogue


_CATALOGUE = _build()

MIG_MODELS: tuple[str, ...] = tuple(_CATALOGUE)
"""Canonical names of the GPU models with a MIG catalogue, e.g. ``H100-80GB``."""

MIG_PROFILES: Mapping[str, Mapping[str, MigProfile]] = MappingProxyType(
    {m: MappingProxyType(p) for m, p in _CATALOGUE.items()})
"""Read-only catalogue: canonical model -> profile name -> ``MigProfile``."""

ALL_PROFILE_NAMES: frozenset[str] = frozenset(n for p in _CATALOGUE.values() for n in p)
"""Every profile name of any catalogued model (to validate a request before placement)."""


def _norm_model(name: str) -> str:
    key = name.strip().upper().replace("_", "-").replace(" ", "-")
    for prefix in ("NVIDIA-", "TESLA-"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def mig_model(name: str, loc: str = "model") -> str:
    """Canonical MIG model name for ``name`` (case-insensitive, vendor aliases accepted).

    ``NVIDIA A100-SXM4-80GB`` -> ``A100-80GB``; ``H200`` -> ``H200-141GB``. Raises
    ``InvalidInput`` (code ``gpuplane.mig.unknown_model``, field ``loc``) listing the valid
    models when the model has no MIG catalogue.
    """
    canonical = mig_model_or_none(name)
    if canonical is None:
        raise InvalidInput(
            f"GPU model {name!r} has no MIG profiles; use one of {', '.join(MIG_MODELS)}",
            [FieldError(loc, f"unknown MIG GPU model {name!r}")],
            code="gpuplane.mig.unknown_model")
    return canonical


def mig_model_or_none(name: str) -> str | None:
    """Like ``mig_model`` but returns ``None`` for a model without MIG (no error)."""
    if not isinstance(name, str):
        return None
    key = _norm_model(name)
    if key in _CATALOGUE:
        return key
    return _ALIASES.get(key)


def normalize_profile_name(name: str) -> str:
    """Profile name as the catalogue spells it: ``MIG 3g.40gb`` and
    ``nvidia.com/mig-3g.40gb`` become ``3g.40gb``. Does not check that the profile exists."""
    key = name.strip().lower()
    for prefix in ("nvidia.com/mig-", "mig-", "mig "):
        if key.startswith(prefix):
            key = key[len(prefix):].strip()
    return key


def get_profile(model: str, profile: str, loc: str = "mig_profile") -> MigProfile:
    """The ``MigProfile`` named ``profile`` on GPU ``model``.

    Raises ``InvalidInput`` with code ``gpuplane.mig.unknown_model`` or
    ``gpuplane.mig.unknown_profile`` (field ``loc``), naming the profiles the model offers.
    """
    canonical = mig_model(model)
    found = find_profile(canonical, profile)
    if found is None:
        valid = ", ".join(_CATALOGUE[canonical])
        raise InvalidInput(
            f"MIG profile {profile!r} does not exist on {canonical}; valid profiles: {valid}",
            [FieldError(loc, f"unknown MIG profile {profile!r} for {canonical}")],
            code="gpuplane.mig.unknown_profile")
    return found


def find_profile(model: str, profile: str) -> MigProfile | None:
    """The profile, or ``None`` when ``model`` has no MIG or does not offer ``profile``."""
    canonical = mig_model_or_none(model)
    if canonical is None or not isinstance(profile, str):
        return None
    return _CATALOGUE[canonical].get(normalize_profile_name(profile))


def check_profile_name(profile: str, loc: str = "mig_profile") -> str:
    """Validate a requested profile name against every catalogued model; returns it normalized.

    Raises ``InvalidInput`` (code ``gpuplane.mig.unknown_profile``) when no model offers it.
    """
    if not isinstance(profile, str) or normalize_profile_name(profile) not in ALL_PROFILE_NAMES:
        valid = ", ".join(sorted(ALL_PROFILE_NAMES))
        raise InvalidInput(
            f"MIG profile {profile!r} is offered by no known GPU model; valid profiles: {valid}",
            [FieldError(loc, f"unknown MIG profile {profile!r}")],
            code="gpuplane.mig.unknown_profile")
    return normalize_profile_name(profile)


def models_offering(profile: str) -> tuple[str, ...]:
    """Canonical models whose catalogue has ``profile`` (empty when none does)."""
    name = normalize_profile_name(profile)
    return tuple(m for m, p in _CATALOGUE.items() if name in p)


def usage(model: str, profile: str) -> Fraction:
    """Share of a GPU that one ``profile`` instance uses (``Fraction``, compute slices / 7)."""
    return get_profile(model, profile).usage


def usage_milli(model: str, profile: str) -> int:
    """``usage`` in milli-GPU rounded down (7g -> 1000, 3g -> 428, 1g -> 142)."""
    return get_profile(model, profile).usage_milli


def request_usage_milli(profile: str) -> int:
    """Milli-GPU a request for ``profile`` counts as before any model is chosen (quota,
    admission): its compute slices / 7, rounded down. Every model offering a profile name
    gives it the same compute slices. Raises ``InvalidInput``
    (``gpuplane.mig.unknown_profile``) when no model offers it."""
    name = check_profile_name(profile)
    return get_profile(models_offering(name)[0], name).usage_milli
