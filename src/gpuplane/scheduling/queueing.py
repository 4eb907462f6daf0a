"""Queueing: what the cycle is asked to decide and in which order.

- :class:`PendingWorkload` is one workload waiting for admission (all its tasks at once when
  ``gang``); :class:`RunningTask` is one task holding resources.
- :class:`PendingQueues` keeps one queue per project, each in FIFO-with-age order inside a priority
  (``(-priority, submitted_at, id)``). The caller (control loop or simulator) may keep one alive
  across cycles and add/remove workloads incrementally; :func:`run_cycle` also accepts a plain
  sequence and builds one.
- The cycle serves the queues in two passes (``cycle.run_cycle``): first only the workloads that
  fit in what is left of their project's guarantee (a head that would borrow is passed over, so it
  never keeps the project's guaranteed work waiting), then everything not yet examined (borrowing,
  which only preemptible work may do). In each pass, between projects the cycle orders by priority
  first, then hierarchical weighted dominant-resource share (organisation, then project; see
  ``admission/fairshare.py``), then age. The order is a total order on the inputs: the same inputs
  always give the same order.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gpuplane.domain.tenancy import DEFAULT_FLAVOR, QuotaTree, gpu_units

Topology = Literal["host", "nvlink", "rack"]


@dataclass(frozen=True)
class PendingWorkload:
    """A workload waiting to be admitted.

    ``tasks`` are ``TaskRequest`` objects (domain/requests.py). ``gang=True`` means all tasks start
    together or none does. ``topology`` asks that the tasks share a host/NVLink domain/rack
    (``topology_required=False`` makes it a preference). ``expected_duration`` (seconds, optional:
    a max runtime or an estimate) lets smaller work backfill in front of a reservation.
    ``flavor`` pins the quota flavour; by default it is the task's only GPU model or the tree's
    first flavour.
    """

    id: str
    project: str
    tasks: Sequence[Any]
    priority: int = 0
    submitted_at: float = 0.0
    gang: bool = True
    topology: Topology | None = None
    topology_required: bool = True
    preemptible: bool = True
    checkpointed_at: float | None = None
    expected_duration: float | None = None
    flavor: str | None = None

    def order_key(self) -> tuple[int, float, str]:
        """FIFO-with-age order inside a project: higher priority, then older, then id."""
        return (-self.priority, self.submitted_at, self.id)


@dataclass(frozen=True)
class RunningTask:
    """One task holding resources. ``workload_id`` groups a gang's tasks (preempted together).
    ``expected_end`` (seconds) feeds backfill reservations; ``checkpointed_at`` lets preemption
    prefer victims that lose least work. ``stopping``: already signalled by an earlier cycle's
    preemption and in its grace period (the live loop; the simulator frees a victim at once):
    a cycle that needs a victim takes it before any other, so waiting for it never costs a
    second one. ``borrowed``: admitted above its project's guarantee (``Admit.borrowing``);
    while its project is still above it, the cycle keeps other work off its host
    (``CycleOptions.lanes``)."""

    id: str
    workload_id: str
    project: str
    task: Any
    placement: Any
    started_at: float = 0.0
    priority: int = 0
    preemptible: bool = True
    checkpointed_at: float | None = None
    expected_end: float | None = None
    flavor: str | None = None
    stopping: bool = False
    borrowed: bool = False


@dataclass(frozen=True)
class Demand:
    """Resources one workload asks for: milli-GPU per flavour, CPU milli-cores, memory MiB."""

    flavor: str
    gpu: int
    cpu: int
    memory: int


def flavor_of(task: Any, quotas: QuotaTree, pinned: str | None = None) -> str:
    """The quota flavour a task is charged to: ``pinned`` if given, else its only allowed GPU model
    when that model is a flavour of the tree, else the tree's first flavour."""
    if pinned:
        return pinned
    models = getattr(task, "gpu_models", None) or ()
    if len(models) == 1:
        (m,) = tuple(models)
        if m in quotas.flavors:
            return m
    return quotas.flavors[0] if quotas.flavors else DEFAULT_FLAVOR


def task_units(task: Any) -> int:
    """Milli-GPU one ``TaskRequest`` uses (see :func:`gpuplane.domain.tenancy.gpu_units`)."""
    return gpu_units(getattr(task, "gpus", 0), getattr(task, "gpu_milli", 1000),
                     getattr(task, "mig_profile", None))


def demand_of(w: PendingWorkload, quotas: QuotaTree) -> Demand:
    """Total :class:`Demand` of a workload (all tasks are charged to one flavour)."""
    flavor = flavor_of(w.tasks[0], quotas, w.flavor) if w.tasks else (w.flavor or DEFAULT_FLAVOR)
    return Demand(flavor, sum(task_units(t) for t in w.tasks),
                  sum(getattr(t, "cpu_milli", 0) for t in w.tasks),
                  sum(getattr(t, "memory_mib", 0) for t in w.tasks))


@dataclass
class PendingQueues:
    """One ordered queue per project. Not thread-safe; O(log n) insert, O(n) remove."""

    _keys: dict[str, list[tuple[int, float, str]]] = field(default_factory=dict)
    _items: dict[str, PendingWorkload] = field(default_factory=dict)
    _partial: dict[str, int] = field(default_factory=dict)   # project -> non-whole-GPU workloads
    _demands: dict[str, Demand] = field(default_factory=dict)  # workload id -> demand_of
    _demands_of: QuotaTree | None = None                        # ... under this quota tree

    @classmethod
    def of(cls, workloads: Iterable[PendingWorkload]) -> PendingQueues:
        q = cls()
        by_project: dict[str, list[PendingWorkload]] = {}
        for w in workloads:
            if w.id in q._items:
                continue
            q._items[w.id] = w
            by_project.setdefault(w.project, []).append(w)
        for p, ws in by_project.items():
            q._keys[p] = sorted(w.order_key() for w in ws)
            n = sum(1 for w in ws if not _all_whole(w))
            if n:
                q._partial[p] = n
        return q

    def add(self, w: PendingWorkload) -> None:
        """Queue ``w``; adding an id already queued is a no-op."""
        if w.id in self._items:
            return
        self._items[w.id] = w
        bisect.insort(self._keys.setdefault(w.project, []), w.order_key())
        if not _all_whole(w):
            self._partial[w.project] = self._partial.get(w.project, 0) + 1

    def remove(self, workload_id: str) -> PendingWorkload | None:
        """Dequeue by id; returns the workload, or ``None`` when it was not queued."""
        w = self._items.pop(workload_id, None)
        if w is None:
            return None
        self._demands.pop(workload_id, None)
        keys = self._keys[w.project]
        i = bisect.bisect_left(keys, w.order_key())
        del keys[i]
        if not keys:
            del self._keys[w.project]
        if not _all_whole(w):
            self._partial[w.project] -= 1
            if not self._partial[w.project]:
                del self._partial[w.project]
        return w

    def demands(self, quotas: QuotaTree) -> dict[str, Demand]:
        """A memo of :func:`demand_of` of the queued workloads under ``quotas``, by id, kept
        across cycles (an entry goes when its workload is removed; another tree starts a new
        memo). The cycle fills it (``CycleState.demand``)."""
        if self._demands_of is not quotas:
            self._demands = {}
            self._demands_of = quotas
        return self._demands

    def whole_gpus_only(self, project: str) -> bool:
        """True when every queued workload of ``project`` asks only whole GPUs."""
        return project not in self._partial

    def projects(self) -> list[str]:
        """Projects with queued work, sorted by name."""
        return sorted(self._keys)

    def count(self, project: str) -> int:
        """How many workloads of ``project`` are queued (O(1))."""
        return len(self._keys.get(project, ()))

    def iter_project(self, project: str) -> Iterator[PendingWorkload]:
        """The project's queue in order (do not mutate the queues while iterating)."""
        items = self._items
        for key in self._keys.get(project, ()):
            yield items[key[2]]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, workload_id: object) -> bool:
        return workload_id in self._items

    def get(self, workload_id: str) -> PendingWorkload | None:
        return self._items.get(workload_id)

    def all(self) -> Mapping[str, PendingWorkload]:
        return self._items


def _all_whole(w: PendingWorkload) -> bool:
    return bool(w.tasks) and all(
        getattr(t, "gpus", 0) > 0 and getattr(t, "mig_profile", None) is None
        and getattr(t, "gpu_milli", 1000) >= 1000 for t in w.tasks)
