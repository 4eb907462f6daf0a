"""MIG layouts: the GPU instances on one GPU in MIG mode, and the operations that keep them valid.

Pure and immutable: every operation returns a new ``MigLayout`` and never changes its argument.
The profile catalogue (models, profiles, valid start slots, sources) is in
``domain/mig_profiles.py`` and re-exported here.

A layout is *valid* when (``layout_problems`` returns nothing):
- every instance names a profile of the layout's model and starts at one of its documented starts;
- no two instances share a memory slice (slices 0..7);
- the compute slices of all instances sum to at most 7;
- no profile has more instances than its ``max_instances``.

An instance is identified on its GPU by its start slot (two instances cannot share one).
``occupied`` says whether a task holds it; only the holder's release vacates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Mapping

from gpuplane.domain.errors import Conflict, FieldError, InvalidInput
from gpuplane.domain.mig_profiles import (
    ALL_PROFILE_NAMES,
    COMPUTE_SLICES,
    MEMORY_SLICES,
    MIG_MODELS,
    MIG_PROFILES,
    MigProfile,
    check_profile_name,
    find_profile,
    get_profile,
    mig_model,
    mig_model_or_none,
    models_offering,
    normalize_profile_name,
    request_usage_milli,
    usage,
    usage_milli,
)

__all__ = [
    "ALL_PROFILE_NAMES", "COMPUTE_SLICES", "MEMORY_SLICES", "MIG_MODELS", "MIG_PROFILES",
    "MigProfile", "MigInstance", "MigInstanceRef", "MigLayout", "check_profile_name", "find_profile",
    "get_profile", "mig_model", "mig_model_or_none", "models_offering", "normalize_profile_name",
    "layout_problems", "validate", "free_instances", "creatable_starts", "can_create",
    "with_instance", "without_instance", "occupy", "vacate", "obtainable_counts",
    "placement_options", "reclaim_options", "request_usage_milli", "take", "give_back", "usage", "usage_milli", "layout_from_profiles",
]


@dataclass(frozen=True, order=True)
class MigInstance:
    """One GPU instance: its profile name, first memory slice, and whether a task holds it."""

    start: int
    profile: str
    occupied: bool = False


@dataclass(frozen=True)
class MigInstanceRef:
    """The MIG instance a placement uses: GPU device index on the host, profile, start slot.

    ``created`` is true when the placement creates the instance (the driver must create the
    GPU instance before starting the task); false when it reuses a free existing one.
    ``reclaims`` lists the start slots of free instances on that GPU to destroy first (to make
    room for a created one); empty in the common case. Apply with ``take``, undo with
    ``give_back``.
    """

    gpu_index: int
    profile: str
    start: int
    created: bool = False
    reclaims: tuple[int, ...] = ()


@dataclass(frozen=True)
class MigLayout:
    """The GPU instances of one GPU in MIG mode. Immutable and hashable.

    ``model`` is stored canonical (``mig_model``); an unknown model raises ``InvalidInput``
    (``gpuplane.mig.unknown_model``). Instances are kept sorted by start. Construction does not
    check the geometry: call ``validate`` on layouts that come from outside (inventory, store).
    Every operation in this module keeps a valid layout valid.
    """

    model: str
    instances: tuple[MigInstance, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", mig_model(self.model, loc="mig_layout.model"))
        insts = tuple(self.instances)
        for i, inst in enumerate(insts):
            if not isinstance(inst, MigInstance):
                raise InvalidInput("a MIG layout holds MigInstance values",
                                   [FieldError(f"mig_layout.instances[{i}]", f"got {inst!r}")])
        object.__setattr__(self, "instances", tuple(sorted(insts)))

    @classmethod
    def empty(cls, model: str) -> MigLayout:
        """A GPU in MIG mode with no instances yet."""
        return cls(model=model)

    def at(self, start: int) -> MigInstance | None:
        """The instance starting at ``start``, or ``None``."""
        for inst in self.instances:
            if inst.start == start:
                return inst
        return None

    @property
    def used_mask(self) -> int:
        """Bit mask of the memory slices covered by instances (bit i = slice i)."""
        return _used(self)[0]

    @property
    def compute_used(self) -> int:
        """Compute slices held by instances, occupied or not."""
        return _used(self)[1]

    @property
    def free_compute(self) -> int:
        """Compute slices not yet in any instance (0..7)."""
        return COMPUTE_SLICES - self.compute_used

    def profile_of(self, inst: MigInstance) -> MigProfile:
        """The catalogue entry of ``inst`` on this layout's model (raises if unknown)."""
        return get_profile(self.model, inst.profile, loc="mig_layout.instances.profile")


@lru_cache(maxsize=65536)
def _used(layout: MigLayout) -> tuple[int, int]:
    mask = 0
    compute = 0
    for inst in layout.instances:
        prof = find_profile(layout.model, inst.profile)
        if prof is None:
            continue
        mask |= prof.mask(inst.start)
        compute += prof.compute_slices
    return mask, compute


def layout_problems(layout: MigLayout) -> list[FieldError]:
    """Every reason ``layout`` is invalid (empty list when valid); field paths index instances."""
    problems: list[FieldError] = []
    mask = 0
    compute = 0
    counts: dict[str, int] = {}
    for i, inst in enumerate(layout.instances):
        loc = f"mig_layout.instances[{i}]"
        prof = find_profile(layout.model, inst.profile)
        if prof is None:
            valid = ", ".join(MIG_PROFILES[layout.model])
            problems.append(FieldError(f"{loc}.profile", f"{inst.profile!r} is not a MIG profile "
                                       f"of {layout.model} (valid: {valid})"))
            continue
        if inst.start not in prof.starts:
            problems.append(FieldError(f"{loc}.start", f"{prof.name} cannot start at memory "
                                       f"slice {inst.start}; valid starts: {list(prof.starts)}"))
            continue
        m = prof.mask(inst.start)
        if mask & m:
            problems.append(FieldError(loc, f"{prof.name} at slice {inst.start} overlaps the "
                                       f"memory slices of another instance"))
        mask |= m
        compute += prof.compute_slices
        counts[prof.name] = counts.get(prof.name, 0) + 1
    if compute > COMPUTE_SLICES:
        problems.append(FieldError("mig_layout.instances", f"instances use {compute} compute "
                                   f"slices; a GPU has {COMPUTE_SLICES}"))
    for name, n in counts.items():
        limit = MIG_PROFILES[layout.model][name].max_instances
        if n > limit:
            problems.append(FieldError("mig_layout.instances", f"{n} instances of {name}; "
                                       f"at most {limit} fit on {layout.model}"))
    return problems


def validate(layout: MigLayout) -> MigLayout:
    """Return ``layout`` if valid; otherwise raise ``InvalidInput``
    (code ``gpuplane.mig.invalid_layout``) listing every problem."""
    problems = layout_problems(layout)
    if problems:
        raise InvalidInput(f"invalid MIG layout on {layout.model}: {len(problems)} problem(s)",
                           problems, code="gpuplane.mig.invalid_layout")
    return layout


def _count(layout: MigLayout, name: str) -> int:
    return sum(1 for inst in layout.instances if inst.profile == name)


def free_instances(layout: MigLayout, profile: str) -> tuple[MigInstance, ...]:
    """Existing instances of ``profile`` that no task holds, by start. Empty when the model
    does not offer the profile."""
    prof = find_profile(layout.model, profile)
    if prof is None:
        return ()
    return tuple(i for i in layout.instances if i.profile == prof.name and not i.occupied)


def _creatable(layout: MigLayout, prof: MigProfile) -> tuple[int, ...]:
    if _count(layout, prof.name) >= prof.max_instances:
        return ()
    if layout.compute_used + prof.compute_slices > COMPUTE_SLICES:
        return ()
    used = layout.used_mask
    return tuple(s for s in prof.starts if not used & prof.mask(s))


def creatable_starts(layout: MigLayout, profile: str) -> tuple[int, ...]:
    """Starts where a new instance of ``profile`` can be created now, ascending.

    A start qualifies when it is documented for the profile, its memory slices are all free,
    the compute slices stay within 7 and the profile's instance limit is not reached. Empty
    when the model does not offer the profile.
    """
    prof = find_profile(layout.model, profile)
    if prof is None:
        return ()
    return _creatable(layout, prof)


def can_create(layout: MigLayout, profile: str, start: int) -> bool:
    """Whether ``with_instance(layout, profile, start)`` would succeed."""
    return start in creatable_starts(layout, profile)


def with_instance(layout: MigLayout, profile: str, start: int, occupied: bool = False) -> MigLayout:
    """A new layout with an instance of ``profile`` created at ``start``.

    Raises ``InvalidInput`` for an unknown profile, ``Conflict``
    (``gpuplane.mig.slot_unavailable``) when that start is not creatable, naming those that are.
    """
    prof = get_profile(layout.model, profile)
    starts = _creatable(layout, prof)
    if start not in starts:
        raise Conflict(f"cannot create {prof.name} at memory slice {start} on {layout.model}; "
                       f"creatable starts now: {list(starts) or 'none'}",
                       code="gpuplane.mig.slot_unavailable")
    inst = MigInstance(start=start, profile=prof.name, occupied=occupied)
    return MigLayout(model=layout.model, instances=layout.instances + (inst,))


def _replace(layout: MigLayout, start: int, new: MigInstance | None) -> MigLayout:
    kept = tuple(i for i in layout.instances if i.start != start)
    return MigLayout(model=layout.model, instances=kept + ((new,) if new else ()))


def _existing(layout: MigLayout, start: int) -> MigInstance:
    inst = layout.at(start)
    if inst is None:
        raise Conflict(f"no MIG instance starts at memory slice {start} on this {layout.model}",
                       code="gpuplane.mig.no_instance")
    return inst


def without_instance(layout: MigLayout, start: int) -> MigLayout:
    """A new layout without the (free) instance at ``start``: destroys a GPU instance.

    Raises ``Conflict``: ``gpuplane.mig.no_instance`` or ``gpuplane.mig.instance_busy``
    when a task holds it.
    """
    inst = _existing(layout, start)
    if inst.occupied:
        raise Conflict(f"the {inst.profile} instance at slice {start} is in use; vacate it first",
                       code="gpuplane.mig.instance_busy")
    return _replace(layout, start, None)


def occupy(layout: MigLayout, start: int) -> MigLayout:
    """A new layout where a task holds the instance at ``start``.

    Raises ``Conflict``: ``gpuplane.mig.no_instance`` or ``gpuplane.mig.already_occupied``.
    """
    inst = _existing(layout, start)
    if inst.occupied:
        raise Conflict(f"the {inst.profile} instance at slice {start} is already in use",
                       code="gpuplane.mig.already_occupied")
    return _replace(layout, start, MigInstance(start, inst.profile, True))


def vacate(layout: MigLayout, start: int) -> MigLayout:
    """A new layout where the instance at ``start`` is free again (it is kept, not destroyed).

    Raises ``Conflict``: ``gpuplane.mig.no_instance`` or ``gpuplane.mig.not_occupied``.
    """
    inst = _existing(layout, start)
    if not inst.occupied:
        raise Conflict(f"the {inst.profile} instance at slice {start} is not in use",
                       code="gpuplane.mig.not_occupied")
    return _replace(layout, start, MigInstance(start, inst.profile, False))


def reclaim_options(layout: MigLayout, profile: str) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """Where ``profile`` fits if some free (unoccupied) instances are destroyed first:
    ``(start, starts of the free instances to destroy)`` pairs, only for starts that need at
    least one destroyed. Occupied instances are never touched. Empty for unknown profiles."""
    prof = find_profile(layout.model, profile)
    if prof is None:
        return ()
    out = []
    for s in prof.starts:
        m = prof.mask(s)
        hit = [i for i in layout.instances
               if layout.profile_of(i).mask(i.start) & m]
        if not hit or any(i.occupied for i in hit):
            continue
        stripped = MigLayout(layout.model, tuple(i for i in layout.instances if i not in hit))
        if s in _creatable(stripped, prof):
            out.append((s, tuple(i.start for i in hit)))
    return tuple(out)


def take(layout: MigLayout, ref: MigInstanceRef) -> MigLayout:
    """Apply one placement entry: destroy ``ref.reclaims``, then create the instance occupied
    (``ref.created``) or occupy the existing one. Raises ``Conflict`` (nothing changes) when
    the layout does not allow it."""
    for start in ref.reclaims:
        layout = without_instance(layout, start)
    if ref.created:
        return with_instance(layout, ref.profile, ref.start, occupied=True)
    inst = _existing(layout, ref.start)
    if inst.profile != normalize_profile_name(ref.profile):
        raise Conflict(f"the instance at slice {ref.start} is {inst.profile}, not {ref.profile}",
                       code="gpuplane.mig.no_instance")
    return occupy(layout, ref.start)


def give_back(layout: MigLayout, ref: MigInstanceRef) -> MigLayout:
    """Release one placement entry: the instance becomes free and stays (``vacate``)."""
    return vacate(layout, ref.start)


def _creatable_count(layout: MigLayout, prof: MigProfile) -> int:
    # The candidate intervals of one profile are pairwise disjoint (starts are multiples of the
    # size, or size 1), so every free candidate can be used at once, within the count and
    # compute limits.
    room = prof.max_instances - _count(layout, prof.name)
    if room <= 0:
        return 0
    used = layout.used_mask
    free_starts = sum(1 for s in prof.starts if not used & prof.mask(s))
    return max(0, min(free_starts, room, layout.free_compute // prof.compute_slices))


@lru_cache(maxsize=65536)
def obtainable_counts(layout: MigLayout) -> Mapping[str, int]:
    """For each profile of the model: how many instances of it a stream of requests for that
    profile alone could still get (free existing ones plus the most that can be created).

    A measure of what the layout can still serve (read-only mapping).
    """
    out: dict[str, int] = {}
    for name, prof in MIG_PROFILES[layout.model].items():
        free = sum(1 for i in layout.instances if i.profile == name and not i.occupied)
        out[name] = free + _creatable_count(layout, prof)
    return MappingProxyType(out)


def placement_options(layout: MigLayout, weights: Mapping[str, float] | None = None) -> float:
    """Fragmentation measure of one GPU: sum over profiles (media-extension variants excluded)
    of ``weight x compute_slices x obtainable count``. Higher keeps more future placements
    possible; an empty GPU scores the maximum (34 for every catalogued model when unweighted).

    ``weights`` (profile name -> expected share of requests, any scale) makes this the
    expected usable compute for the request mix, as FGD does for whole GPUs; profiles missing
    from ``weights`` count 0. ``None`` weighs every profile 1.
    """
    counts = obtainable_counts(layout)
    total = 0.0
    for name, prof in MIG_PROFILES[layout.model].items():
        if not prof.media_extensions:
            w = 1.0 if weights is None else float(weights.get(name, 0.0))
            total += w * prof.compute_slices * counts[name]
    return total


def layout_from_profiles(model: str, profiles: list[str] | tuple[str, ...]) -> MigLayout:
    """Build a layout holding one free instance per name in ``profiles``.

    Larger profiles are placed first, each at the lowest start that still lets the rest fit
    (a small exhaustive search; at most 7 instances). Raises ``InvalidInput`` for an unknown
    profile and ``Conflict`` (``gpuplane.mig.slot_unavailable``) when they cannot all fit.
    """
    layout = MigLayout.empty(model)
    profs = [get_profile(layout.model, p, loc=f"mig_profiles[{i}]") for i, p in enumerate(profiles)]
    profs.sort(key=lambda p: (-p.memory_slices, -p.compute_slices, p.name))
    found = _fit(layout, tuple(profs))
    if found is None:
        raise Conflict(f"the profiles {list(profiles)} do not fit together on one "
                       f"{layout.model}", code="gpuplane.mig.slot_unavailable")
    return found


def _fit(layout: MigLayout, rest: tuple[MigProfile, ...]) -> MigLayout | None:
    if not rest:
        return layout
    head, tail = rest[0], rest[1:]
    for start in _creatable(layout, head):
        found = _fit(with_instance(layout, head.name, start), tail)
        if found is not None:
            return found
    return None
