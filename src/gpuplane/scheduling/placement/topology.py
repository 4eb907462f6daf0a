"""Gangs inside one topology domain: one host, one NVLink domain, or one rack.

:func:`place_gang_within` places every member of a gang inside a single domain of the
requested level, or none (DESIGN invariant 2), by trial assignment and exact undo:

1. **Domains** of the level from the snapshot: ``"rack"`` groups hosts by ``Host.rack``
   (``snap.host_rack``; hosts without a rack belong to none), ``"nvlink"`` groups GPUs by
   ``GpuDevice.nvlink_domain`` (``snap.gpu_nvlink``; a domain may span hosts), ``"host"`` is
   every host on its own.
2. **Pruning** (necessary conditions, vectorised): every distinct member has a host in the
   domain that passes the profile's filters on its own; the domain's free CPU, memory and GPU
   milli cover the gang; its free whole GPUs cover the whole-GPU members (total, largest member
   on one host, and the number of member slots).
3. **Order** (deterministic): tightest fit first (least free GPU milli, then least free CPU),
   then the lowest ``snap.tie_rank`` of the domain's hosts, then the name -- big domains stay
   free for big gangs, as best-fit does for hosts.
4. **Trial**: members are placed in order with ``place(..., within=domain)`` and trial-assigned
   so later members see earlier ones; the first failure undoes the domain's trials and the next
   domain is tried. The first domain where all members fit wins.

``required=False`` makes the level a preference: when no domain holds the gang, it is placed
anywhere (plain :func:`~gpuplane.scheduling.placement.place_gang`). Failure returns a
:class:`TopologyUnschedulable` whose ``str()`` reads e.g. ``no rack can hold the gang whole
(4 x 8 GPUs): 3 racks; closest: rack r2 with room for 3 of 4 members``.

MIG instances have no NVLink peer-to-peer, so a gang with a MIG member is never placed inside
an NVLink domain (``required``: unresolvable; ``preferred``: placed anywhere).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpuplane.domain.errors import FieldError, InvalidInput
from gpuplane.domain.requests import MILLI_PER_GPU, Placement, TaskRequest
from gpuplane.scheduling.placement import (GangUnschedulable, feasible_hosts, place, place_gang,
                                           trial_members)
from gpuplane.scheduling.placement.framework import CycleState, Profile, Status, Within
from gpuplane.scheduling.snapshot import MODE_MIG, ClusterSnapshot

__all__ = ["LEVELS", "NO_DOMAIN", "MIG_NO_NVLINK", "TopologyUnschedulable", "domain_of",
           "place_gang_within"]

LEVELS: tuple[str, ...] = ("host", "nvlink", "rack")
#: Reason codes (plugin ``"topology"``), stable.
NO_DOMAIN = "no_domain"            # no domain of the level holds the whole gang now
MIG_NO_NVLINK = "mig_no_nvlink"    # a MIG member cannot use NVLink
_WORD = {"host": ("host", "hosts"), "nvlink": ("NVLink domain", "NVLink domains"),
         "rack": ("rack", "racks")}

PlaceFn = Callable[..., Any]


@dataclass(frozen=True)
class TopologyUnschedulable(GangUnschedulable):
    """No domain of ``level`` holds the whole gang. ``domains``: domains of that level in the
    cluster; ``tried``: those that passed the capacity checks and were trial-placed;
    ``closest``: the domain with room for the most members (``None`` when there is none)."""

    level: str = ""
    domains: int = 0
    tried: int = 0
    closest: str | None = None

    def __str__(self) -> str:
        return self.messages[0] if self.messages else f"no {self.level} holds the gang"


def member_summary(tasks: Sequence[TaskRequest]) -> str:
    """``"4 x 8 GPUs"``, ``"2 x 8 GPUs + 1 x 0.5 GPU"``: the gang's shapes in first-seen order."""
    counts: dict[str, int] = {}
    for t in tasks:
        if t.is_mig:
            s = f"{t.mig_profile}"
        elif t.gpus == 0:
            s = "CPU-only"
        elif t.gpu_milli >= MILLI_PER_GPU:
            s = f"{t.gpus} GPU" + ("s" if t.gpus != 1 else "")
        else:
            s = (f"{t.gpus} x " if t.gpus > 1 else "") + f"{t.gpu_milli / MILLI_PER_GPU:g} GPU"
        counts[s] = counts.get(s, 0) + 1
    return " + ".join(f"{n} x {s}" for s, n in counts.items())


@dataclass
class _Domains:
    """(domain, host) pairs of a level and, per pair, the free resources usable there."""

    names: list[str]
    pd: np.ndarray          # domain of each pair
    ph: np.ndarray          # host of each pair
    gpu_dom: np.ndarray | None   # (H, G) domain of each GPU (nvlink only)
    gpu_in: np.ndarray | None = None    # (H, G) GPU has a domain (nvlink only)
    gpu_pair: np.ndarray | None = None  # pair index of each GPU in gpu_in order (nvlink only)

    def hosts_of(self, d: int, n_hosts: int) -> np.ndarray:
        m = np.zeros(n_hosts, dtype=bool)
        m[self.ph[self.pd == d]] = True
        return m


def _domains(snap: ClusterSnapshot, level: str) -> _Domains:
    """The level's (domain, host) pairs; inventory only, so cached on the snapshot."""
    key = ("placement.topology", level)
    got = snap.cache.get(key)
    if got is None:
        got = snap.cache[key] = _build_domains(snap, level)
    return got


def _build_domains(snap: ClusterSnapshot, level: str) -> _Domains:
    H = snap.n_hosts
    if level == "rack":
        r = snap.host_rack
        hs = np.flatnonzero(r >= 0)
        return _Domains(list(snap.rack_names), r[hs].astype(np.int64), hs, None)
    if level == "host":
        return _Domains(list(snap.names), np.arange(H), np.arange(H), None)
    D = snap.gpu_nvlink
    m = D >= 0
    hh = np.broadcast_to(np.arange(H)[:, None], D.shape)
    gkeys = D[m].astype(np.int64) * H + hh[m]
    keys = np.unique(gkeys)
    return _Domains(list(snap.nvlink_names), keys // H, keys % H, D, m,
                    np.searchsorted(keys, gkeys))


def _validate(level: str, tasks: Sequence[TaskRequest]) -> None:
    if level not in LEVELS:
        raise InvalidInput("unknown topology level",
                           [FieldError("topology", f"must be one of {', '.join(LEVELS)}, "
                                                   f"got {level!r}")])
    if not tasks:
        raise InvalidInput("empty gang", [FieldError("tasks", "a gang needs at least one task")])


def place_gang_within(snap: ClusterSnapshot, tasks: Sequence[TaskRequest], profile: Profile,
                      rng: np.random.Generator, level: str, required: bool = True,
                      keep: bool = False, place_fn: PlaceFn | None = None
                      ) -> list[Placement] | GangUnschedulable:
    """Place every member of ``tasks`` inside one domain of ``level`` (``"host"``,
    ``"nvlink"``, ``"rack"``), or none.

    Returns the placements (in member order) or an ``Unschedulable``: a
    :class:`TopologyUnschedulable` when no domain holds the gang (``required``), or, with
    ``required=False``, whatever plain ``place_gang`` returns when no domain holds it. As with
    ``place_gang`` the snapshot is unchanged afterwards unless ``keep`` (then the successful
    placements stay assigned). ``place_fn(snap, task, profile, rng, explain=..., within=...)``
    defaults to ``place``. Deterministic: same snapshot, same inputs, same result. Raises
    ``InvalidInput`` naming the field for an unknown level or an empty gang.
    """
    _validate(level, tasks)
    pf = place_fn or place
    if level == "nvlink" and any(t.is_mig for t in tasks):
        if not required:
            return _anywhere(snap, tasks, profile, rng, keep, pf)
        msg = ("no NVLink domain can hold a gang with MIG members: MIG instances have no "
               f"NVLink peer-to-peer ({member_summary(tasks)})")
        return TopologyUnschedulable(snap.n_hosts, [("topology", MIG_NO_NVLINK, 0)], [msg],
                                     [Status.UNRESOLVABLE], [], member=-1, level=level)
    dom = _domains(snap, level)
    order, closest, room = _candidates(snap, tasks, profile, rng, level, dom)
    first_fail: tuple[str, Any] | None = None
    for d in order:
        hosts = dom.hosts_of(d, snap.n_hosts)
        gpus = dom.gpu_dom == d if dom.gpu_dom is not None else None
        w = Within(hosts, gpus, f"{_WORD[level][0]} {dom.names[d]}")
        res = _trial(snap, tasks, profile, rng, w, keep, pf, explain=first_fail is None)
        if isinstance(res, list):
            return res
        if first_fail is None:
            first_fail = (w.label, res)
    if not required:
        return _anywhere(snap, tasks, profile, rng, keep, pf)
    return _failure(snap, tasks, level, dom, order, closest, room, first_fail)


def _anywhere(snap: ClusterSnapshot, tasks: Sequence[TaskRequest], profile: Profile,
              rng: np.random.Generator, keep: bool, pf: PlaceFn) -> list[Placement] | Any:
    if pf is place:
        return place_gang(snap, tasks, profile, rng, keep=keep)
    return _trial(snap, tasks, profile, rng, None, keep, pf, explain=True)


def _trial(snap: ClusterSnapshot, tasks: Sequence[TaskRequest], profile: Profile,
           rng: np.random.Generator, w: Within | None, keep: bool, pf: PlaceFn,
           explain: bool) -> list[Placement] | Any:
    if w is None:
        def one(t: TaskRequest) -> Any:
            return pf(snap, t, profile, rng)
    else:
        def one(t: TaskRequest) -> Any:
            return pf(snap, t, profile, rng, explain=explain, within=w)
    placed, _, failure = trial_members(snap, tasks, one, keep)
    return placed if failure is None else failure


def _candidates(snap: ClusterSnapshot, tasks: Sequence[TaskRequest], profile: Profile,
                rng: np.random.Generator, level: str, dom: _Domains
                ) -> tuple[list[int], int | None, np.ndarray]:
    """Domains passing the necessary conditions, in trial order; the domain with room for the
    most members (for the explanation) and the per-domain room."""
    n_dom = len(dom.names)
    if n_dom == 0:
        return [], None, np.zeros(0, dtype=np.int64)
    H = snap.n_hosts
    # every distinct member needs a host of the domain that passes the filters on its own
    distinct: dict[TaskRequest, np.ndarray] = {}
    for t in tasks:
        if t not in distinct:
            distinct[t] = feasible_hosts(snap, t, profile, CycleState(rng=rng))[0]
    ok = np.ones(n_dom, dtype=bool)
    union = np.zeros(H, dtype=bool)
    for mask in distinct.values():
        union |= mask
        ok &= np.bincount(dom.pd, weights=mask[dom.ph], minlength=n_dom) > 0
    usable = union[dom.ph]
    cpu = np.bincount(dom.pd, weights=np.where(usable, snap.cpu_free[dom.ph], 0), minlength=n_dom)
    mem = np.bincount(dom.pd, weights=np.where(usable, snap.mem_free[dom.ph], 0), minlength=n_dom)
    ok &= cpu >= sum(t.cpu_milli for t in tasks)
    ok &= mem >= sum(t.memory_mib for t in tasks)
    # free milli and free whole GPUs per (domain, host) pair
    gf = snap.gpu_free
    not_mig = snap.gpu_mode != MODE_MIG
    if dom.gpu_dom is None:
        milli_pair = np.where(not_mig & (gf > 0), gf, 0).sum(axis=1)[dom.ph]
        whole_pair = (not_mig & (gf >= MILLI_PER_GPU)).sum(axis=1)[dom.ph]
    else:
        in_dom, pos, n_pairs = dom.gpu_in, dom.gpu_pair, len(dom.pd)
        milli_pair = np.bincount(pos, weights=np.where(not_mig & (gf > 0), gf, 0)[in_dom],
                                 minlength=n_pairs)
        whole_pair = np.bincount(pos, weights=(not_mig & (gf >= MILLI_PER_GPU))[in_dom],
                                 minlength=n_pairs)
    milli_pair = np.where(usable, milli_pair, 0)
    whole_pair = np.where(usable, whole_pair, 0).astype(np.int64)
    milli = np.bincount(dom.pd, weights=milli_pair, minlength=n_dom)
    need_milli = sum(t.gpus * t.gpu_milli for t in tasks if not t.is_mig)
    ok &= milli >= need_milli
    whole = [t.gpus for t in tasks if t.gpus and not t.is_mig and t.gpu_milli >= MILLI_PER_GPU]
    room = np.full(n_dom, len(tasks), dtype=np.int64)
    if whole:
        kmax, kmin = max(whole), min(whole)
        ok &= np.bincount(dom.pd, weights=whole_pair, minlength=n_dom) >= sum(whole)
        top = np.zeros(n_dom, dtype=np.int64)
        np.maximum.at(top, dom.pd, whole_pair)
        ok &= top >= kmax
        room = np.bincount(dom.pd, weights=whole_pair // kmax, minlength=n_dom).astype(np.int64)
        slots = np.bincount(dom.pd, weights=whole_pair // kmin, minlength=n_dom)
        ok &= slots >= len(whole)
        room = np.minimum(room, len(tasks))
    rank = np.full(n_dom, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(rank, dom.pd, snap.tie_rank[dom.ph])
    idx = np.flatnonzero(ok)       # names are sorted (host level: snapshot order): index = name
    order = idx[np.lexsort((idx, rank[idx], cpu[idx], milli[idx]))].tolist()
    cand = np.flatnonzero(np.bincount(dom.pd, minlength=n_dom) > 0)
    closest = None
    if len(cand):                  # most room, then most free milli, then lowest rank, index
        pick = np.lexsort((cand, rank[cand], -milli[cand], -room[cand]))[0]
        closest = int(cand[pick])
    return order, closest, room


def _failure(snap: ClusterSnapshot, tasks: Sequence[TaskRequest], level: str, dom: _Domains,
             order: list[int], closest: int | None, room: np.ndarray,
             first_fail: tuple[str, Any] | None) -> TopologyUnschedulable:
    one, many = _WORD[level]
    n = len(dom.names)
    shape = member_summary(tasks)
    whole_only = all(t.gpus and not t.is_mig and t.gpu_milli >= MILLI_PER_GPU for t in tasks)
    if n == 0:
        unset = {"rack": "no host has a rack set", "nvlink": "no GPU has an NVLink domain set",
                 "host": "there are no hosts"}[level]
        msg = f"no {one} can hold the gang whole ({shape}): {unset}"
        return TopologyUnschedulable(snap.n_hosts, [("topology", NO_DOMAIN, 0)], [msg],
                                     [Status.UNRESOLVABLE], [], member=-1, level=level)
    msg = f"no {one} can hold the gang whole ({shape}): {n} {many if n != 1 else one}"
    if order:
        msg += f", {len(order)} with enough free capacity tried"
    label = None
    if closest is not None:
        label = f"{one} {dom.names[closest]}"
        if whole_only:
            msg += f"; closest: {label} with room for {int(room[closest])} of {len(tasks)} members"
        else:
            msg += f"; closest: {label}"
    hints = []
    if first_fail is not None:
        hints.append(f"{first_fail[0]}: {first_fail[1]}")
        msg += f" ({first_fail[0]}: {first_fail[1]})"
    return TopologyUnschedulable(snap.n_hosts, [("topology", NO_DOMAIN, n)], [msg],
                                 [Status.UNSCHEDULABLE], hints, member=-1, level=level,
                                 domains=n, tried=len(order), closest=label)


def domain_of(snap: ClusterSnapshot, level: str, placements: Sequence[Placement]
              ) -> set[str | None]:
    """The set of domains of ``level`` that ``placements`` use (``None`` for a host without a
    rack or a GPU without an NVLink domain). A gang is inside one domain exactly when the
    result is one non-``None`` name. At NVLink level only devices count (CPU-only members use
    no NVLink; the placement still puts them on a host of the domain)."""
    out: set[str | None] = set()
    for p in placements:
        h = snap.host_of(p.host)
        if level == "host":
            out.add(p.host)
        elif level == "rack":
            r = int(snap.host_rack[h])
            out.add(snap.rack_names[r] if r >= 0 else None)
        else:
            gi = list(p.gpu_indices) or [g.gpu_index for g in p.mig]
            for g in gi:
                d = int(snap.gpu_nvlink[h, g])
                out.add(snap.nvlink_names[d] if d >= 0 else None)
    return out
