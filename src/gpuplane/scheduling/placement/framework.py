"""The placement framework: vectorised Filter / Score / GpuChooser plugins.

One placement decision (:func:`gpuplane.scheduling.placement.place`) runs:

1. every **filter** of the profile in order; each returns a :class:`FilterResult`
   (a boolean mask over *all* hosts plus the reason(s) for the hosts it rejects).
   A host rejected by an earlier filter is blamed on that filter only;
2. if no host is left: an :class:`Unschedulable` with counts per reason;
3. every **score** plugin on the candidate hosts (int 0..100 each), summed with
   the profile's integer weights;
4. the highest total wins; ties go to the lowest ``snap.tie_rank`` (or, with
   ``Profile.tie_break == "random"``, uniformly at random with ``rng``);
5. the first **GPU chooser** whose ``handles(task)`` is true picks the devices
   (and MIG instances) on the winning host and returns the :class:`Placement`.

Plugins never mutate the snapshot. They may keep caches in
``snap.plugin_cache(self)`` validated against ``snap.version`` (bumped on every
change of a host), and per-decision data in :class:`CycleState`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.scheduling.snapshot import ClusterSnapshot


class Status(IntEnum):
    """Outcome codes (kube-scheduler style)."""

    OK = 0
    UNSCHEDULABLE = 1  #: might fit after other tasks leave (preemption may help)
    UNRESOLVABLE = 2   #: cannot fit on that host whatever happens (wrong model, labels, taints)
    ERROR = 3          #: a plugin failed


@dataclass(frozen=True)
class Reason:
    """Why a filter rejected a host: a stable ``code`` (constant in the plugin
    module), a short human ``message`` that reads after a count ("342 too
    little CPU"), and whether preemption could help (``status``)."""

    code: str
    message: str
    status: Status = Status.UNSCHEDULABLE


@dataclass
class FilterResult:
    """Result of one filter over all hosts.

    ``passed`` (H,) bool: hosts that pass this filter. Rejected hosts get
    ``reasons[0]``, or ``reasons[reason_of_host[h]]`` when several reasons are
    given (``reason_of_host`` is an (H,) int array, only read where rejected).
    Computing reasons can be deferred: ``explain`` (if set) is called only when
    the task fits nowhere, with the (H,) mask of hosts blamed on this filter, and
    returns ``(reasons, reason_of_host)``.
    """

    passed: np.ndarray
    reasons: tuple[Reason, ...] = ()
    reason_of_host: np.ndarray | None = None
    explain: Any = None  # Callable[[np.ndarray], tuple[tuple[Reason, ...], np.ndarray | None]]
    #: optional ``nearest(rejected) -> str | None``: the nearest miss among the hosts this
    #: filter rejected ("closest: g2-17 has 3 of 4 GPUs free"), for explanations only
    nearest: Any = None

    @classmethod
    def single(cls, passed: np.ndarray, reason: Reason) -> FilterResult:
        return cls(passed=passed, reasons=(reason,))


@dataclass
class CycleState:
    """Per-decision scratch space shared by the plugins of one :func:`place` call.

    ``rng`` is the only source of randomness a plugin may use. ``candidates`` is
    the (H,) mask of hosts still feasible when a filter runs (filters may skip
    work outside it; they must still return a full-length mask). ``data`` holds
    values a plugin computes once per decision (e.g. the GPU view).
    """

    rng: np.random.Generator
    candidates: np.ndarray | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def gpu_view(self, snap: ClusterSnapshot, task: TaskRequest) -> np.ndarray:
        """``snap.gpu_view(task)`` computed once per decision. Read-only."""
        v = self.data.get("gpu_view")
        if v is None:
            v = snap.gpu_view(task)
            self.data["gpu_view"] = v
        return v


@dataclass(frozen=True)
class Within:
    """Restricts one :func:`~gpuplane.scheduling.placement.place` call to part of the cluster
    (a topology domain: one rack, one NVLink domain, one host).

    ``hosts`` (H,) bool: the only hosts the decision may use. ``gpus`` (H, G) bool or ``None``:
    the only devices it may use (whole and shared requests; ``None`` = every device of those
    hosts). MIG requests honour ``hosts`` only. ``label`` names the domain in explanations
    (``"rack r3"``)."""

    hosts: np.ndarray
    gpus: np.ndarray | None = None
    label: str = ""


@runtime_checkable
class FilterPlugin(Protocol):
    """Decides feasibility per host, vectorised.

    ``filter`` returns ``None`` when every host passes (fast path), else a
    :class:`FilterResult` covering all H hosts. Must not mutate ``snap``.
    """

    name: ClassVar[str]

    def filter(self, state: CycleState, task: TaskRequest,
               snap: ClusterSnapshot) -> FilterResult | None: ...


@runtime_checkable
class ScorePlugin(Protocol):
    """Ranks feasible hosts: ``score`` returns an int array (0..100, higher is
    better) aligned with ``hosts`` (host indices, all feasible). Weights live in
    the profile, never in the plugin. Deterministic given ``state.rng``."""

    name: ClassVar[str]

    def score(self, state: CycleState, task: TaskRequest, snap: ClusterSnapshot,
              hosts: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class GpuChooser(Protocol):
    """Picks the devices on the chosen host. ``choose`` is only called on a host
    that passed every filter, and returns the full :class:`Placement`
    (``gpu_indices`` empty for CPU-only tasks)."""

    name: ClassVar[str]

    def handles(self, task: TaskRequest) -> bool: ...

    def choose(self, state: CycleState, task: TaskRequest, snap: ClusterSnapshot,
               host: int) -> Placement: ...


@dataclass(frozen=True)
class Profile:
    """A named composition of plugins.

    ``scores`` pairs each score plugin with an integer weight. ``choosers`` are
    tried in order; the first that ``handles`` the task picks its GPUs.
    ``tie_break``: ``"rank"`` = lowest ``snap.tie_rank`` among the best totals
    (FGD_PROTOCOL §5.1); ``"random"`` = uniform with ``rng`` (Random-fit).
    """

    name: str
    filters: tuple[FilterPlugin, ...]
    scores: tuple[tuple[ScorePlugin, int], ...]
    choosers: tuple[GpuChooser, ...]
    tie_break: Literal["rank", "random"] = "rank"

    def chooser_for(self, task: TaskRequest) -> GpuChooser | None:
        for c in self.choosers:
            if c.handles(task):
                return c
        return None


@dataclass(frozen=True)
class Unschedulable:
    """No host fits. ``reasons``: (plugin, reason code, host count), most hosts
    first; ``messages`` is parallel to it (human text per reason).

    ``str()`` reads "0/1213 hosts: 871 too few free GPUs of model G2, 342 too little CPU".
    """

    total_hosts: int
    reasons: list[tuple[str, str, int]]
    messages: list[str] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    @property
    def status(self) -> Status:
        """ERROR when a plugin or the profile failed; UNRESOLVABLE when every rejection
        is unresolvable (preemption cannot help); else UNSCHEDULABLE."""
        if any(s == Status.ERROR for s in self.statuses):
            return Status.ERROR
        if self.statuses and all(s == Status.UNRESOLVABLE for s in self.statuses):
            return Status.UNRESOLVABLE
        return Status.UNSCHEDULABLE

    def __str__(self) -> str:
        if not self.reasons:
            return f"0/{self.total_hosts} hosts: no hosts"
        parts = []
        for (plugin, code, n), msg in zip(self.reasons, self.messages or [""] * len(self.reasons)):
            parts.append(f"{n} {msg or code}")
        return f"0/{self.total_hosts} hosts: " + ", ".join(parts)

    @property
    def detail(self) -> str:
        """``str(self)`` plus the nearest misses, for humans (``describe``)."""
        return str(self) + "".join(f"; {h}" for h in self.hints)

    def as_dict(self) -> dict:
        """Machine-readable form (for ``describe``, the API and the UI)."""
        return {"total_hosts": self.total_hosts, "summary": str(self), "nearest": list(self.hints),
                "reasons": [{"plugin": p, "code": c, "hosts": n, "message": m}
                            for (p, c, n), m in zip(self.reasons, self.messages)]}


class Tally:
    """Accumulates rejections per (plugin, reason) while filters run. Counting is
    deferred until :meth:`unschedulable` (a placed task never pays for it)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str], int] = {}
        self._status: dict[tuple[str, str, str], Status] = {}
        self._pending: list[tuple[str, FilterResult, np.ndarray]] = []
        self._hints: list[str] = []

    def defer(self, plugin: str, res: FilterResult, rejected: np.ndarray) -> None:
        """Remember that ``res`` rejected the hosts in ``rejected``; count later."""
        self._pending.append((plugin, res, rejected))

    def add(self, plugin: str, reason: Reason, n: int) -> None:
        if n <= 0:
            return
        key = (plugin, reason.code, reason.message)
        self._counts[key] = self._counts.get(key, 0) + n
        self._status[key] = reason.status

    def record(self, plugin: str, res: FilterResult, rejected: np.ndarray) -> None:
        """Count the hosts in ``rejected`` (bool mask) against ``res``'s reasons."""
        if res.nearest is not None and rejected.any():
            hint = res.nearest(rejected)
            if hint:
                self._hints.append(hint)
        if res.explain is not None:
            reasons, which = res.explain(rejected)
            res = FilterResult(passed=res.passed, reasons=tuple(reasons), reason_of_host=which)
        if len(res.reasons) == 1 or res.reason_of_host is None:
            self.add(plugin, res.reasons[0], int(rejected.sum()))
            return
        counts = np.bincount(res.reason_of_host[rejected], minlength=len(res.reasons))
        for r, n in zip(res.reasons, counts):
            self.add(plugin, r, int(n))

    def unschedulable(self, total: int) -> Unschedulable:
        for plugin, res, rejected in self._pending:
            self.record(plugin, res, rejected)
        self._pending.clear()
        items = sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return Unschedulable(total_hosts=total,
                             reasons=[(p, c, n) for (p, c, _m), n in items],
                             messages=[m for (_p, _c, m), _n in items],
                             statuses=[self._status[k] for k, _n in items],
                             hints=list(self._hints))


def pick_host(scores: np.ndarray, hosts: np.ndarray, snap: ClusterSnapshot, tie_break: str,
              rng: np.random.Generator) -> int:
    """The winning host index among ``hosts`` given their total ``scores``."""
    best = scores.max()
    tied = hosts[scores == best]
    if len(tied) == 1:
        return int(tied[0])
    if tie_break == "random":
        return int(tied[rng.integers(len(tied))])
    return int(tied[np.argmin(snap.tie_rank[tied])])


def weights_total(parts: Sequence[tuple[np.ndarray, int]], n: int) -> np.ndarray:
    """Weighted sum of score arrays (int64)."""
    total = np.zeros(n, dtype=np.int64)
    for s, w in parts:
        total += np.asarray(s, dtype=np.int64) * w
    return total
