"""Placement: choose a host and GPUs for one task (or a gang) on a snapshot.

Public API (stable; see docs/placement.md)::

    from gpuplane.scheduling.placement import place, place_gang, profiles
    profile = profiles.get("fgd", workload=typical)      # or "gpuplane" (default)
    result = place(snap, task, profile, rng)            # Placement | Unschedulable
    if isinstance(result, Placement):
        undo = snap.assign(task, result)

``place`` never changes the snapshot; the caller assigns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.scheduling.placement.framework import (
    CycleState,
    FilterPlugin,
    FilterResult,
    GpuChooser,
    Profile,
    Reason,
    ScorePlugin,
    Status,
    Tally,
    Unschedulable,
    Within,
    pick_host,
)
from gpuplane.scheduling.placement.fastpath import place_whole
from gpuplane.scheduling.snapshot import ClusterSnapshot

__all__ = ["place", "place_gang", "feasible_hosts", "CycleState", "FilterPlugin", "FilterResult",
           "GpuChooser", "Profile", "Reason", "ScorePlugin", "Status", "Unschedulable",
           "Placement", "GangUnschedulable", "Within"]


def feasible_hosts(snap: ClusterSnapshot, task: TaskRequest, profile: Profile,
                   state: CycleState, within: Within | None = None) -> tuple[np.ndarray, Tally]:
    """Run the profile's filters; return the (H,) mask of feasible hosts and the tally
    of rejections. Stops early once no host is left. With ``within``, only its hosts are
    candidates (hosts outside it are not counted as rejected)."""
    cand = np.ones(snap.n_hosts, dtype=bool) if within is None else within.hosts.copy()
    tally = Tally()
    for f in profile.filters:
        state.candidates = cand
        res = f.filter(state, task, snap)
        if res is None:
            continue
        rejected = cand & ~res.passed
        if rejected.any():
            tally.defer(f.name, res, rejected)
            cand = cand & res.passed
            if not cand.any():
                break
    state.candidates = cand
    return cand, tally


def place(snap: ClusterSnapshot, task: TaskRequest, profile: Profile,
          rng: np.random.Generator, explain: bool = True,
          within: Within | None = None, fast: bool = True) -> Placement | Unschedulable:
    """Choose a host and devices for ``task`` (pure: the snapshot is not changed).

    Steps: filters -> (none left: ``Unschedulable`` with counts per reason) ->
    weighted integer scores -> best total, ties by ``snap.tie_rank`` (or random,
    per ``profile.tie_break``) -> the profile's GPU chooser for the task kind.
    ``explain=False`` skips counting reasons (the ``Unschedulable`` then has none;
    simulators that only count failures use it). ``within`` restricts the decision to a
    topology domain (:class:`Within`: its hosts, and its devices for whole/shared requests);
    an ``Unschedulable`` then counts the domain's hosts only.

    One task asking whole GPUs under the ``bestfit`` profile takes an exact fast path
    (``fastpath.place_whole``: the same filters, score, tie-break and devices without the plugin
    machinery; also ``within`` hosts when it names no devices); ``fast=False`` forces the
    general path (tests, benchmarks).
    """
    if fast and (within is None or within.gpus is None):
        placed = place_whole(snap, task, profile, None if within is None else within.hosts)
        if placed is not None:
            return placed
    state = CycleState(rng=rng)
    if within is not None and within.gpus is not None and task.gpus and not task.is_mig:
        state.data["gpu_view"] = np.where(within.gpus, snap.gpu_view(task), -1)
    cand, tally = feasible_hosts(snap, task, profile, state, within)
    hosts = np.flatnonzero(cand)
    if len(hosts) == 0:
        total = snap.n_hosts if within is None else int(within.hosts.sum())
        if not explain:
            return Unschedulable(total, [], [], [])
        return tally.unschedulable(total)
    chooser = profile.chooser_for(task)
    if chooser is None:
        kind = "MIG" if task.is_mig else "GPU"
        return Unschedulable(snap.n_hosts, [("profile", "no_chooser", len(hosts))],
                             [f"feasible, but profile {profile.name!r} has no chooser for "
                              f"{kind} requests"], [Status.ERROR])
    if len(hosts) == 1 or not profile.scores:
        total = np.zeros(len(hosts), dtype=np.int64)
    else:
        total = None
        for plugin, weight in profile.scores:
            s = np.asarray(plugin.score(state, task, snap, hosts), dtype=np.int64)
            total = s * weight if total is None else total + s * weight
    h = pick_host(total, hosts, snap, profile.tie_break, rng)
    return chooser.choose(state, task, snap, h)


@dataclass(frozen=True)
class GangUnschedulable(Unschedulable):
    """A gang could not be placed whole: ``member`` is the index of the first
    member that found no host (after the earlier members were trial-assigned)."""

    member: int = -1


def place_gang(snap: ClusterSnapshot, tasks: Sequence[TaskRequest], profile: Profile,
               rng: np.random.Generator, keep: bool = False
               ) -> list[Placement] | Unschedulable:
    """Place every member of a gang or none (DESIGN invariant 2).

    Members are placed in order, each trial-assigned so later members see the
    earlier ones. On the first failure every trial is undone (LIFO) and that
    member's ``Unschedulable`` is returned (``.member`` set when possible). On
    success the trials are undone too unless ``keep`` is true, so by default the
    snapshot is unchanged either way and the caller assigns.
    """
    placed, member, failure = trial_members(snap, tasks, lambda t: place(snap, t, profile, rng), keep)
    if failure is None:
        return placed
    return GangUnschedulable(failure.total_hosts, failure.reasons, failure.messages,
                             failure.statuses, failure.hints, member=member)


def trial_members(snap: ClusterSnapshot, tasks: Sequence[TaskRequest],
                  place_one: Callable[[TaskRequest], object], keep: bool
                  ) -> tuple[list[Placement], int, Any]:
    """Place ``tasks`` in order with ``place_one``, trial-assigning each so later
    members see the earlier ones: all or nothing.

    Returns ``(placements, -1, None)`` on success (the trials undone unless
    ``keep``), or ``([], i, result)`` with the first member ``i`` whose result was
    not a ``Placement``, every trial undone (LIFO). An exception also undoes them.
    """
    undos = []
    placements: list[Placement] = []
    try:
        for i, task in enumerate(tasks):
            res = place_one(task)
            if not isinstance(res, Placement):
                for u in reversed(undos):
                    u()
                return [], i, res
            undos.append(snap.assign(task, res))
            placements.append(res)
    except BaseException:
        for u in reversed(undos):
            u()
        raise
    if not keep:
        for u in reversed(undos):
            u()
    return placements, -1, None
