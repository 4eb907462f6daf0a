"""Capacity bookkeeping for one cycle, on top of the placement snapshot.

:class:`CycleCapacity` wraps a ``ClusterSnapshot`` (scheduling/snapshot.py) and the placement
entry point ``place(snap, task, profile, rng)``. Every booking goes through ``snap.assign`` /
``snap.release``; the class only adds what the cycle needs to decide fast:

- ``free_whole[h]``: whole free GPUs per host (free milli == 1000, whole or shared mode): the
  snapshot's own count (``ClusterSnapshot.free_whole``, kept in step with every booking, so it
  is not recomputed per cycle), and its maximum. A whole-GPU task asking ``g`` GPUs cannot fit
  when ``max_free < g``; the cycle then skips ``place`` (a necessary condition only: when it passes,
  ``place`` decides).
- gang booking: every member is placed and assigned; the first failure undoes them all. A gang
  with a topology (``"host"``, ``"nvlink"``, ``"rack"``) stays inside one domain of that level
  (``placement.topology``), required or preferred.
- holds: capacity reserved for a blocked workload (backfill) is booked as placeholder tasks and
  can be lifted and restored around a backfill trial.
- lanes (``CycleOptions.lanes``, with quotas enforced): ``lent[h]`` counts the whole GPUs on host
  ``h`` held by borrowed tasks (``RunningTask.borrowed``) of projects still above their
  guarantee, and this cycle's borrowing admissions. A borrowing admission is placed on the hosts
  in use with room that hold least work that is not borrowed, other work on the hosts in use
  with room that hold least borrowed work (:meth:`CycleCapacity.lane`; the profile chooses among
  them, and everywhere when none has room or that fails). So borrowed work gathers on hosts of
  its own, and reclaim can free whole hosts for a gang of guaranteed work instead of GPUs
  scattered among other teams' work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpuplane.domain.requests import MILLI_PER_GPU, Placement, TaskRequest
from gpuplane.scheduling.placement.framework import Within

PlaceFn = Callable[[Any, Any, Any, Any], Any]   # (snap, task, profile, rng) -> Placement | Unschedulable
Undo = Callable[[], None]


def is_whole(task: Any) -> bool:
    """True for a task asking whole GPUs with no MIG profile."""
    if type(task) is TaskRequest:       # the usual case, without the getattr defaults
        return task.gpus > 0 and task.mig_profile is None and task.gpu_milli >= MILLI_PER_GPU
    return (getattr(task, "gpus", 0) > 0 and getattr(task, "mig_profile", None) is None
            and getattr(task, "gpu_milli", MILLI_PER_GPU) >= MILLI_PER_GPU)


@dataclass
class GangResult:
    placements: tuple[Placement, ...] | None
    reason: Any = None                      # Unschedulable of the failing member
    undo: Undo | None = None


@dataclass
class CycleCapacity:
    snap: Any
    place_fn: PlaceFn
    profile: Any
    rng: Any
    holds: list[tuple[TaskRequest, Placement]] = field(default_factory=list)
    place_calls: int = 0
    indexed: bool = True     # False: never skip ``place`` on the free-GPU counts (benchmarks)
    lanes: bool = False      # set_lent turns them on
    over: set[tuple[str, str]] = field(default_factory=set)   # (project, flavour) borrowing
    _lent_by: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _lent: np.ndarray | None = None  # (H,) whole GPUs held by borrowed work, built on first use

    def __post_init__(self) -> None:
        # MIG-mode GPUs show 0 free milli and missing ones -1, so the snapshot's count of GPUs
        # with 1000 free is the count of free whole/shared-mode GPUs
        self.free_whole = self.snap.free_whole
        self.max_free = int(self.free_whole.max()) if self.free_whole.size else 0

    # -- lanes: borrowed work apart from guaranteed work -------------------------------------
    def set_lent(self, lent: dict[tuple[str, str, str], int],
                 over: set[tuple[str, str]]) -> None:
        """Turn lanes on: ``lent`` is whole GPUs of borrowed tasks per ``(project, flavour,
        host)``; only those of ``over`` (above their guarantee now) count: the rest hold no more
        than their guarantee, and nothing of theirs can be reclaimed. The per-host count is
        built when a placement first asks for it (many cycles place nothing)."""
        self.lanes, self.over, self._lent_by, self._lent = True, over, lent, None

    @property
    def lent(self) -> np.ndarray:
        """(H,) whole GPUs held by borrowed work of projects above their guarantee."""
        if self._lent is None:
            arr = np.zeros(len(self.free_whole), dtype=np.int32)
            index, over = self.snap.index, self.over
            for (project, flavor, host), g in self._lent_by.items():
                h = index.get(host)
                if h is not None and (project, flavor) in over:
                    arr[h] += g
            self._lent = arr
        return self._lent

    def lend(self, tasks: Sequence[Any], placements: Sequence[Placement], sign: int) -> None:
        """Count (``sign`` +1) or uncount (-1) ``tasks`` as borrowed work on their hosts."""
        if not self.lanes:
            return
        lent, index = self.lent, self.snap.index
        for t, p in zip(tasks, placements):
            if is_whole(t):
                lent[index[p.host]] += sign * t.gpus

    def lane(self, borrowed: bool, task: Any) -> np.ndarray | None:
        """The hosts in use with room for ``task`` that hold least of the other kind of work:
        for borrowed work, least work that is not borrowed; for guaranteed work, least borrowed
        work. ``None`` (the profile alone decides) without lanes or when no host in use has
        room by the free-GPU counts: an empty host is opened only then, as the profile would,
        so lanes do not spend whole hosts that gangs need."""
        if not self.lanes or not is_whole(task):
            return None
        free, count = self.free_whole, self.snap.gpu_count
        room = (free >= task.gpus) & (free < count)
        if not room.any():
            return None
        other = (count - free - self.lent) if borrowed else self.lent
        return room & (other <= other[room].min())

    # -- bookkeeping --------------------------------------------------------------------------
    def _refresh(self, host: str) -> None:
        self.max_free = int(self.free_whole.max())

    def assign(self, task: Any, placement: Placement) -> Undo:
        undo = self.snap.assign(task, placement)
        self._refresh(placement.host)

        def _undo() -> None:
            undo()
            self._refresh(placement.host)

        return _undo

    def release(self, task: Any, placement: Placement) -> Undo:
        """Release a running task; the returned callable books it again."""
        self.snap.release(task, placement)
        self._refresh(placement.host)

        def _undo() -> None:
            self.snap.assign(task, placement)
            self._refresh(placement.host)

        return _undo

    # -- feasibility ----------------------------------------------------------------------------
    def may_fit(self, tasks: Sequence[Any], without_holds: bool = False) -> bool:
        """Necessary condition for whole-GPU tasks (``False`` means they cannot fit now; with
        ``without_holds``, not even once the holds are lifted). Always ``True`` when the index
        is off (``indexed=False``)."""
        if not self.indexed:
            return True
        need = [t.gpus for t in tasks if is_whole(t)]
        if not need:
            return True
        free, max_free = self.free_whole, self.max_free
        if without_holds and self.holds:
            free = free.copy()        # held GPUs were completely free: lifting frees them again
            index = self.snap.index
            for _, p in self.holds:
                free[index[p.host]] += len(p.gpu_indices)
            max_free = int(free.max())
        if max(need) > max_free:
            return False
        if len(need) == 1:
            return True
        g = min(need)
        slots = int((free // g).sum())
        return slots >= len(need) and int(free.sum()) >= sum(need)

    def place_gang(self, tasks: Sequence[Any], topology: str | bool | None = None,
                   required: bool = True, lane: bool | None = None) -> GangResult:
        """Place and book every task, or none: on the first failure every booking is undone and
        the failing member's ``Unschedulable`` is returned.

        ``lane`` (``True``: borrowing, ``False``: not; ``None``: no preference) prefers each
        member's hosts by :meth:`lane` when lanes are on (members placed one by one, or a
        whole-GPU ``"host"`` gang as one; not inside NVLink or rack domains).
        ``topology`` (``"host"``, ``"nvlink"``, ``"rack"``; ``True`` means ``"host"``) keeps the
        members inside one domain of that level; ``required=False`` makes it a preference
        (members are placed anywhere when no domain holds them all). Whole-GPU members of a
        ``"host"`` gang are placed as one task asking for all their GPUs, whose devices are then
        split between them in order; every other case goes through
        ``placement.topology.place_gang_within`` (``place_fn`` must then accept the keywords
        ``explain`` and ``within``), whose failure is a ``TopologyUnschedulable``."""
        level = "host" if topology is True else (topology or None)
        if level == "host" and len(tasks) > 1 and all(is_whole(t) for t in tasks):
            r = self._place_together(tasks, lane)
            if r.placements is not None or required:
                return r
        elif level in ("nvlink", "rack") or (level == "host" and len(tasks) > 1):
            if required and not self.may_fit(tasks):
                return GangResult(None, None)
            return self._place_within(tasks, level, required)
        if not self.may_fit(tasks):
            return GangResult(None, None)
        if lane is not None and self.lanes:
            r = self._place_each(tasks, lane)
            if r.placements is not None or len(tasks) == 1:
                return r        # (a gang whose members' lanes led it astray: try anywhere)
        return self._place_each(tasks, None)

    def _place_each(self, tasks: Sequence[Any], lane: bool | None) -> GangResult:
        """Place the members one by one (each on the hosts of its ``lane`` when it has room
        there); on the first failure undo them all."""
        undos: list[Undo] = []
        out: list[Placement] = []
        for t in tasks:
            r = self._place_one(t, lane)
            if not isinstance(r, Placement):
                for u in reversed(undos):
                    u()
                return GangResult(None, r)
            undos.append(self.assign(t, r))
            out.append(r)

        def undo_all() -> None:
            for u in reversed(undos):
                u()

        return GangResult(tuple(out), None, undo_all)

    def _place_within(self, tasks: Sequence[Any], level: str, required: bool) -> GangResult:
        from gpuplane.scheduling.placement.topology import place_gang_within  # lazy: numpy plugins

        def counted(*args: Any, **kw: Any) -> Any:
            self.place_calls += 1
            return self.place_fn(*args, **kw)

        r = place_gang_within(self.snap, tasks, self.profile, self.rng, level, required,
                              keep=False, place_fn=counted)
        if not isinstance(r, list):
            return GangResult(None, r)
        undos = [self.assign(t, p) for t, p in zip(tasks, r)]

        def undo_all() -> None:
            for u in reversed(undos):
                u()

        return GangResult(tuple(r), None, undo_all)

    def _place_one(self, task: Any, lane: bool | None) -> Any:
        """``place_fn`` on the hosts of ``task``'s lane when it has room there, else anywhere."""
        self.place_calls += 1
        prefer = self.lane(lane, task) if lane is not None else None
        if prefer is not None:
            r = self.place_fn(self.snap, task, self.profile, self.rng, explain=False,
                              within=Within(prefer))
            if isinstance(r, Placement):
                return r
        return self.place_fn(self.snap, task, self.profile, self.rng)

    def _place_together(self, tasks: Sequence[Any], lane: bool | None) -> GangResult:
        first = tasks[0]
        total = sum(t.gpus for t in tasks)
        if self.indexed and total > self.max_free:
            return GangResult(None, None)
        joint = TaskRequest(cpu_milli=sum(t.cpu_milli for t in tasks),
                            memory_mib=sum(t.memory_mib for t in tasks), gpus=total,
                            gpu_models=first.gpu_models, selector=first.selector,
                            tolerations=first.tolerations)
        r = self._place_one(joint, lane)
        if not isinstance(r, Placement):
            return GangResult(None, r)
        out: list[Placement] = []
        undos: list[Undo] = []
        k = 0
        for t in tasks:
            p = Placement(r.host, r.gpu_indices[k:k + t.gpus], MILLI_PER_GPU)
            k += t.gpus
            undos.append(self.assign(t, p))
            out.append(p)

        def undo_all() -> None:
            for u in reversed(undos):
                u()

        return GangResult(tuple(out), None, undo_all)

    def fits(self, tasks: Sequence[Any], topology: str | bool | None = None,
             required: bool = True) -> bool:
        """Would the gang fit now? Leaves the snapshot unchanged."""
        r = self.place_gang(tasks, topology, required)
        if r.undo is not None:
            r.undo()
        return r.placements is not None

    # -- holds (backfill reservations) ----------------------------------------------------------
    def hold(self, host: str, gpus: Sequence[int]) -> None:
        """Book the given free whole GPUs of ``host`` as a placeholder (a reservation)."""
        if not gpus:
            return
        task = TaskRequest(cpu_milli=0, memory_mib=0, gpus=len(gpus))
        placement = Placement(host, tuple(gpus), MILLI_PER_GPU)
        self.snap.assign(task, placement)
        self._refresh(host)
        self.holds.append((task, placement))

    def lift_holds(self) -> list[tuple[str, tuple[int, ...]]]:
        """Remove every placeholder; returns what was held (to :meth:`restore_holds`)."""
        held = [(p.host, p.gpu_indices) for _, p in self.holds]
        for task, p in reversed(self.holds):
            self.snap.release(task, p)
            self._refresh(p.host)
        self.holds = []
        return held

    def restore_holds(self, held: list[tuple[str, tuple[int, ...]]]) -> None:
        """Hold again whatever of ``held`` is still free."""
        for host, idx in held:
            h = self.snap.index[host]
            free = [g for g in idx if self.snap.gpu_free[h, g] >= MILLI_PER_GPU]
            self.hold(host, free)

    def free_gpu_indices(self, host: str) -> list[int]:
        h = self.snap.index[host]
        return [int(g) for g in np.flatnonzero(self.snap.gpu_free[h] >= MILLI_PER_GPU)]
