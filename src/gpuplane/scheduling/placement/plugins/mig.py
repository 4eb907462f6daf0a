"""MIG placement: filter, score and GPU chooser for ``TaskRequest(mig_profile=...)``.

A MIG request is satisfied on a GPU in MIG mode whose model offers the profile (and is allowed
by ``task.gpu_models``), either by a free existing instance of that profile or by creating one
at a creatable start slot (``gpuplane.domain.mig``).

Choice, per host (the best of its MIG GPUs; ties: lowest GPU index, then lowest start):

* reusing a free existing instance scores 100: nothing is reconfigured and no slot is spent;
* creating an instance in free slots scores 1..99 by how little it costs the GPU's future
  options. The cost of a start is ``placement_options(before) - placement_options(after)``, where ``placement_options``
  sums, over the model's profiles, compute slices x how many instances of that profile could
  still be obtained on the GPU. A 1g at slice 6 of an empty H100 keeps the 4g.40gb possible and
  costs 12 of 34; at slice 0 it costs 18; a second 1g next to it costs 4. So the score packs
  small instances together and keeps whole GPUs and large slots for large profiles;
* only when a GPU has neither, idle instances in the way may be destroyed to make room
  (``MigInstanceRef.reclaims``), scored at most half of what the same creation would get.

With a request mix (``weights``: profile -> expected share, e.g. ``profile_mix`` of the arrivals
so far) each profile's obtainable count is weighted by its share, so the cost becomes the loss of
*expected* usable compute, the MIG analogue of FGD's expected fragmentation. Build the three
plugins of a profile with the same weights (``mig_plugins``).

Tasks without ``mig_profile`` pass the filter untouched and score 0 on every host; the MIG
chooser does not handle them. Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from gpuplane.domain.errors import FieldError, InvalidInput
from gpuplane.domain.mig import (
    ALL_PROFILE_NAMES,
    MigInstanceRef,
    MigLayout,
    creatable_starts,
    find_profile,
    free_instances,
    mig_model_or_none,
    normalize_profile_name,
    placement_options,
    reclaim_options,
    take,
    with_instance,
)
from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.scheduling.placement.framework import CycleState, FilterResult, Reason, Status
from gpuplane.scheduling.snapshot import ClusterSnapshot

REASON_NO_MIG_GPU = "mig.no_gpu"
"""The host has no GPU in MIG mode of an allowed model that offers the profile."""
REASON_NO_SLOT = "mig.no_slot"
"""MIG GPUs offering the profile exist on the host, but no free instance, free slot or idle
instance that could be reclaimed (all in use by tasks)."""
REASON_UNKNOWN_PROFILE = "mig.unknown_profile"
"""No catalogued GPU model offers the requested profile at all."""

SCORE_REUSE = 100
"""Score of a host where a free existing instance of the profile can be reused."""

Weights = tuple[tuple[str, float], ...]
"""Normalized request mix: sorted (profile name, share) pairs; ``()`` weighs all profiles 1."""


def mig_weights(weights: Mapping[str, float] | None) -> Weights:
    """Validate and normalize a request mix (profile name -> expected share, any scale).

    ``None`` or an empty mapping gives ``()`` (every profile weighs 1). Raises
    ``InvalidInput`` naming ``weights.<profile>`` for unknown profiles or negative or
    non-numeric shares.
    """
    if not weights:
        return ()
    errors: list[FieldError] = []
    out: dict[str, float] = {}
    for name, w in weights.items():
        key = normalize_profile_name(str(name))
        if key not in ALL_PROFILE_NAMES:
            errors.append(FieldError(f"weights.{name}", "not a MIG profile of any known model"))
        elif isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
            errors.append(FieldError(f"weights.{name}", f"must be a number >= 0, got {w!r}"))
        else:
            out[key] = out.get(key, 0.0) + float(w)
    if errors:
        raise InvalidInput("invalid MIG request mix", errors, code="gpuplane.mig.invalid_weights")
    total = sum(out.values())
    return tuple(sorted((k, v / total) for k, v in out.items() if v > 0)) if total > 0 else ()


def profile_mix(tasks: Iterable[TaskRequest]) -> dict[str, float]:
    """Share of each MIG profile among ``tasks`` (non-MIG tasks ignored): a request mix for
    ``mig_weights``, e.g. learned from the arrivals so far."""
    counts: dict[str, int] = {}
    for t in tasks:
        if t.mig_profile is not None:
            key = normalize_profile_name(t.mig_profile)
            counts[key] = counts.get(key, 0) + 1
    n = sum(counts.values())
    return {k: c / n for k, c in sorted(counts.items())} if n else {}


@lru_cache(maxsize=256)
def _full(model: str, weights: Weights) -> tuple[float, Weights]:
    """Options of an empty GPU of ``model`` under ``weights``, and the weights actually used
    (uniform when the mix has no profile of this model)."""
    if weights:
        full = placement_options(MigLayout.empty(model), dict(weights))
        if full > 0:
            return full, weights
    return placement_options(MigLayout.empty(model)), ()

_NO, _SLOT, _OK = 0, 1, 2  # per-host state codes in the cached arrays


@dataclass(frozen=True)
class MigChoice:
    """Best way to serve one profile on one GPU: start slot, whether it is created, the free
    instances destroyed first (``reclaims``, start slots) and the score."""

    start: int
    created: bool
    score: int
    reclaims: tuple[int, ...] = ()


@lru_cache(maxsize=1 << 16)
def best_on_layout(layout: MigLayout, profile: str, weights: Weights = ()) -> MigChoice | None:
    """The best choice for ``profile`` on one GPU's ``layout``; ``None`` when it cannot be
    served there (profile not offered by the model, or no free instance, slot or idle
    instance to reclaim). ``weights`` from ``mig_weights``.

    Deterministic; memoized (layouts are immutable and hashable).
    """
    prof = find_profile(layout.model, profile)
    if prof is None:
        return None
    free = free_instances(layout, prof.name)
    if free:
        return MigChoice(start=free[0].start, created=False, score=SCORE_REUSE)
    full, used = _full(layout.model, weights)
    w = dict(used) if used else None
    before = placement_options(layout, w)
    best: MigChoice | None = None
    for s in creatable_starts(layout, prof.name):
        score = _score(before, with_instance(layout, prof.name, s, occupied=True), w, full)
        if best is None or score > best.score:
            best = MigChoice(start=s, created=True, score=score)
    if best is not None:
        return best
    # Last resort: destroy idle instances in the way. Scored at most half of a plain creation.
    for s, reclaims in reclaim_options(layout, prof.name):
        ref = MigInstanceRef(gpu_index=0, profile=prof.name, start=s, created=True,
                             reclaims=reclaims)
        score = max(1, _score(before, take(layout, ref), w, full) // 2)
        if best is None or score > best.score:
            best = MigChoice(start=s, created=True, score=score, reclaims=reclaims)
    return best


def _score(before: float, after_layout: MigLayout, w: Mapping[str, float] | None,
           full: float) -> int:
    cost = min(max(0.0, before - placement_options(after_layout, w)), full)
    return 1 + int(98 * (full - cost) // full)


def _model_allowed(model: str, allowed: frozenset[str]) -> bool:
    if not allowed or model in allowed:
        return True
    canonical = mig_model_or_none(model)
    return canonical is not None and canonical in {mig_model_or_none(m) for m in allowed}


class _HostTable:
    """Per (profile, allowed models) arrays over all hosts, refreshed for hosts whose
    ``snap.version`` changed since the last decision."""

    def __init__(self, snap: ClusterSnapshot, profile: str, allowed: frozenset[str],
                 weights: Weights) -> None:
        H = snap.n_hosts
        self.profile = profile
        self.weights = weights
        self.allowed = allowed
        self.version = np.full(H, -1, dtype=np.int64)
        self.state = np.full(H, _NO, dtype=np.int8)
        self.score = np.zeros(H, dtype=np.int64)
        self.gpu = np.full(H, -1, dtype=np.int32)
        self.start = np.full(H, -1, dtype=np.int8)
        self.created = np.zeros(H, dtype=bool)
        self.reclaims: dict[int, tuple[int, ...]] = {}
        gpus: dict[int, list[int]] = {}
        for (h, g) in sorted(snap.mig_layouts):
            model = snap.hosts[h].gpus[g].model
            if _model_allowed(model, allowed) and find_profile(model, profile) is not None:
                gpus.setdefault(h, []).append(g)
        self.gpus_of = gpus
        self.hosts = np.array(sorted(gpus), dtype=np.int64)

    def refresh(self, snap: ClusterSnapshot) -> None:
        if not len(self.hosts):
            return
        stale = self.hosts[snap.version[self.hosts] != self.version[self.hosts]]
        for h in stale.tolist():
            self._compute(snap, h)
            self.version[h] = snap.version[h]

    def _compute(self, snap: ClusterSnapshot, h: int) -> None:
        best: tuple[int, int, MigChoice] | None = None
        for g in self.gpus_of[h]:
            layout = snap.mig_layouts[(h, g)]
            if layout is None:
                layout = MigLayout.empty(snap.hosts[h].gpus[g].model)
            choice = best_on_layout(layout, self.profile, self.weights)
            if choice is not None and (best is None or choice.score > best[2].score):
                best = (h, g, choice)
        if best is None:
            self.state[h], self.score[h], self.gpu[h] = _SLOT, 0, -1
            return
        _h, g, choice = best
        self.state[h], self.score[h], self.gpu[h] = _OK, choice.score, g
        self.start[h], self.created[h] = choice.start, choice.created
        self.reclaims[h] = choice.reclaims


def _table(plugin: _MigPlugin, state: CycleState, task: TaskRequest,
           snap: ClusterSnapshot) -> _HostTable:
    """The refreshed host table for ``task``, shared by the MIG plugins (with the same
    weights) within one decision and, per snapshot, across decisions."""
    key = ("mig_table", normalize_profile_name(task.mig_profile or ""), task.gpu_models,
           plugin.weights)
    table = state.data.get(key)
    if table is not None:
        return table
    cache = snap.plugin_cache(_table)
    table = cache.get(key[1:])
    if table is None:
        table = _HostTable(snap, key[1], task.gpu_models, plugin.weights)
        cache[key[1:]] = table
    table.refresh(snap)
    state.data[key] = table
    return table


class _MigPlugin:
    """Shared constructor: ``weights`` is the expected request mix (profile name -> share);
    ``None`` weighs every profile alike. Give the filter, score and chooser of one profile the
    same weights (``mig_plugins`` does) so they share one cached table."""

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights: Weights = mig_weights(weights)


def mig_plugins(weights: Mapping[str, float] | None = None
                ) -> tuple[MigFit, MigPacking, MigChooser]:
    """The MIG filter, score and chooser, built with one request mix."""
    return MigFit(weights), MigPacking(weights), MigChooser(weights)


class MigFit(_MigPlugin):
    """Filter: a host passes a MIG task when one of its MIG-mode GPUs of an allowed model has a
    free instance of the profile or a creatable slot for it. Non-MIG tasks: every host passes.

    Reasons: ``mig.no_gpu`` (unresolvable: no MIG GPU of an allowed model offering the
    profile), ``mig.no_slot`` (unschedulable: such GPUs exist, but are full; preemption or
    reconfiguration may help), ``mig.unknown_profile`` (no GPU model offers the profile).
    """

    name: ClassVar[str] = "MigFit"

    def filter(self, state: CycleState, task: TaskRequest,
               snap: ClusterSnapshot) -> FilterResult | None:
        if task.mig_profile is None:
            return None
        profile = normalize_profile_name(task.mig_profile)
        if profile not in ALL_PROFILE_NAMES:
            return FilterResult.single(np.zeros(snap.n_hosts, dtype=bool), Reason(
                REASON_UNKNOWN_PROFILE, f"no GPU model offers MIG profile {task.mig_profile!r}",
                Status.UNRESOLVABLE))
        table = _table(self, state, task, snap)
        passed = table.state == _OK
        models = (" of model " + "/".join(sorted(task.gpu_models))) if task.gpu_models else ""
        reasons = (
            Reason(REASON_NO_MIG_GPU, f"no GPU in MIG mode{models} offering {profile}",
                   Status.UNRESOLVABLE),
            Reason(REASON_NO_SLOT, f"no free {profile} instance or slot", Status.UNSCHEDULABLE),
        )
        which = np.where(table.state == _SLOT, 1, 0).astype(np.int64)
        return FilterResult(passed=passed, reasons=reasons, reason_of_host=which)


class MigPacking(_MigPlugin):
    """Score: 100 where a free instance of the profile can be reused; else 1..99, higher
    the fewer future MIG placement options the best creatable slot destroys (module doc),
    options weighted by the request mix when ``weights`` is given. 0 for non-MIG tasks and
    hosts that cannot serve the profile."""

    name: ClassVar[str] = "MigPacking"

    def score(self, state: CycleState, task: TaskRequest, snap: ClusterSnapshot,
              hosts: np.ndarray) -> np.ndarray:
        if task.mig_profile is None or normalize_profile_name(task.mig_profile) \
                not in ALL_PROFILE_NAMES:
            return np.zeros(len(hosts), dtype=np.int64)
        table = _table(self, state, task, snap)
        return table.score[np.asarray(hosts, dtype=np.int64)]


class MigChooser(_MigPlugin):
    """GPU chooser for MIG tasks: the GPU and instance that ``MigPacking`` scored best on the
    host. The placement lists the GPU in ``gpu_indices``, the instance in ``mig`` (with
    ``created`` true when the instance must be created first) and, as ``gpu_milli``, the
    profile's usage in milli-GPU (compute slices / 7), the unit quotas count it in.

    Raises ``ValueError`` if called for a host that cannot serve the task (the framework only
    calls it on hosts that passed every filter).
    """

    name: ClassVar[str] = "MigChooser"

    def handles(self, task: TaskRequest) -> bool:
        return task.mig_profile is not None

    def choose(self, state: CycleState, task: TaskRequest, snap: ClusterSnapshot,
               host: int) -> Placement:
        table = _table(self, state, task, snap)
        if table.state[host] != _OK:
            raise ValueError(f"host {snap.names[host]} cannot serve MIG profile "
                             f"{task.mig_profile!r}")
        g = int(table.gpu[host])
        model = snap.hosts[host].gpus[g].model
        prof = find_profile(model, table.profile)
        assert prof is not None
        ref = MigInstanceRef(gpu_index=g, profile=prof.name, start=int(table.start[host]),
                             created=bool(table.created[host]),
                             reclaims=table.reclaims.get(host, ()))
        return Placement(host=snap.names[host], gpu_indices=(g,), gpu_milli=prof.usage_milli,
                         mig=(ref,))
