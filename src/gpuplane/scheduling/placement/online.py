"""The workload distribution learned online: :class:`OnlineWorkload`.

The ``gpuplane`` policy measures fragmentation against a target distribution of task types
(:class:`~gpuplane.scheduling.placement.fragmentation.TypicalWorkload`). When nobody hands it
one (the live control plane), it is learned from the tasks that *arrive*. The model belongs to
the scheduler (the control loop, or the simulator), not to a snapshot, so it lives across
cycles, and it is plain data so a new leader can resume it (:meth:`OnlineWorkload.to_dict` /
:meth:`OnlineWorkload.from_dict`, JSON-serialisable).

Rules:

* **Counted once.** The owner reports each arriving workload with :meth:`arrive` (a key such
  as the workload id, its submission time ``at`` and its task requests). A key already
  counted is ignored, so a pending workload re-read every tick, or a task retried after a
  failure, counts once. Memory stays bounded: keys are remembered only within ``grace`` (in
  units of ``at``) below the newest arrival and at most ``max_recent`` of them; anything at or
  below the forgotten range (the *floor*, a high-water mark ``(at, key)``) is taken as seen.
  A workload that commits more than ``grace`` late (its ``at`` far below newer arrivals) is
  therefore not counted: a lost sample, never a double count.
* **Rebuilt when the count doubles.** After each counted task, when ``count >= 2 x`` the
  count at the last build, the distribution is rebuilt from the counts so far (FGD_PROTOCOL
  §5.2: most frequent types first, ties by the larger key, kept until they cover 95 % of the
  count, renormalised) and ``version`` goes up. Builds thus happen at counts 1, 2, 4, 8, ...;
  the model in force depends only on the first ``2^n`` arrivals in order, not on how they
  were batched into ticks.
* MIG requests are not counted (FGD's measure does not apply to them).

Pure: no clock, no I/O.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gpuplane.domain.requests import TaskRequest
from gpuplane.scheduling.placement.fragmentation import TaskType, TypicalWorkload

FORMAT = 1
COVERAGE = 0.95       #: popularity cut (FGD's)
GRACE = 3600.0        #: keys remembered this far (units of ``at``: seconds live) below the newest
MAX_RECENT = 4096     #: at most this many remembered keys
MAX_TYPES = 4096      #: at most this many distinct task types counted (the rarest go first)

TypeKey = tuple  # (cpu_milli, per-GPU milli (0 = CPU-only), gpus, sorted models tuple)


def type_key(task: TaskRequest) -> TypeKey:
    """The counting key of ``task`` (the same as ``TypicalWorkload.from_tasks`` uses)."""
    models = tuple(sorted(task.gpu_models)) if task.gpus else ()
    return (int(task.cpu_milli), int(task.gpu_milli) if task.gpus else 0, int(task.gpus), models)


class OnlineWorkload:
    """Counts arriving tasks once and exposes the distribution built from them.

    ``workload``: the distribution in force (``None`` before the first counted task);
    ``version``: bumped at each rebuild; ``count``: tasks counted so far; ``arrivals``:
    workloads counted so far (changes whenever the state does: persist when it moved).
    """

    def __init__(self, coverage: float = COVERAGE, grace: float = GRACE,
                 max_recent: int = MAX_RECENT, max_types: int = MAX_TYPES) -> None:
        if not 0 < coverage <= 1 or grace < 0 or max_recent < 1 or max_types < 1:
            raise ValueError("coverage must be in (0, 1], grace >= 0, max_recent/max_types >= 1")
        self.coverage = float(coverage)
        self.grace = float(grace)
        self.max_recent = int(max_recent)
        self.max_types = int(max_types)
        self.count = 0
        self.arrivals = 0
        self.built_at = 0
        self.version = 0
        self.workload: TypicalWorkload | None = None
        self._counts: Counter = Counter()
        self._floor: tuple[float, str] = (-math.inf, "")
        self._newest = -math.inf
        self._recent: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []  # (at, key) of ``_recent``, oldest first

    # -- arrivals ------------------------------------------------------------------------------
    def seen(self, key: str, at: float) -> bool:
        """Whether an arrival ``(key, at)`` counts as already observed."""
        return key in self._recent or (float(at), str(key)) <= self._floor

    def arrive(self, key: str, at: float, tasks: Iterable[TaskRequest]) -> bool:
        """Count the tasks of one arriving workload unless ``key`` was seen; True if counted."""
        key, at = str(key), float(at)
        if self.seen(key, at):
            return False
        self._recent[key] = at
        self.arrivals += 1
        heapq.heappush(self._heap, (at, key))
        self._newest = max(self._newest, at)
        for t in tasks:
            self.observe(t)
        self._forget()
        return True

    def arrive_many(self, arrivals: Iterable[tuple[str, float, Sequence[TaskRequest]]]) -> int:
        """:meth:`arrive` for each ``(key, at, tasks)`` in ``(at, key)`` order; returns how
        many were counted. Use it with everything pending each tick: seen keys are skipped."""
        done = 0
        for key, at, tasks in sorted(arrivals, key=lambda a: (float(a[1]), str(a[0]))):
            done += self.arrive(key, at, tasks)
        return done

    def _forget(self) -> None:
        """Drop remembered keys at or below the floor (``grace`` below the newest arrival),
        then the oldest ones beyond ``max_recent`` (raising the floor to the last dropped)."""
        floor = max(self._floor, (self._newest - self.grace, ""))
        heap, recent = self._heap, self._recent
        while heap and (heap[0] <= floor or len(recent) > self.max_recent):
            a, k = heapq.heappop(heap)
            if recent.get(k) == a:
                del recent[k]
                floor = max(floor, (a, k))
        self._floor = floor

    # -- counting ------------------------------------------------------------------------------
    def observe(self, task: TaskRequest) -> bool:
        """Count one task (no key check: callers with retries use :meth:`arrive`). True when
        this rebuilt the distribution."""
        if task.mig_profile is not None:
            return False
        self._counts[type_key(task)] += 1
        self.count += 1
        if len(self._counts) > self.max_types:
            keep = sorted(self._counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
            self._counts = Counter(dict(keep[:self.max_types // 2]))
        if self.count >= 2 * self.built_at:
            self.workload = self.learned()
            self.built_at = self.count
            self.version += 1
            return True
        return False

    def learned(self) -> TypicalWorkload:
        """The distribution of the counts right now (95 % cut of ``count``; ties by the larger
        key; deterministic)."""
        items = sorted(self._counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
        kept, acc = [], 0
        for key, n in items:
            if acc >= self.coverage * self.count:
                break
            kept.append((key, n))
            acc += n
        return TypicalWorkload([TaskType(c, m, k, frozenset(models), n / acc)
                                for (c, m, k, models), n in kept])

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable state (floats round-trip exactly through ``json``)."""
        wl = self.workload
        return {
            "format": FORMAT, "coverage": self.coverage, "grace": self.grace,
            "max_recent": self.max_recent, "max_types": self.max_types,
            "count": self.count, "arrivals": self.arrivals, "built_at": self.built_at,
            "version": self.version,
            "counts": [[c, m, k, list(models), n]
                       for (c, m, k, models), n in sorted(self._counts.items())],
            "workload": None if wl is None else [
                [t.cpu_milli, t.gpu_milli, t.gpus, sorted(t.models), t.freq] for t in wl.types],
            "floor": [None if self._floor[0] == -math.inf else self._floor[0], self._floor[1]],
            "newest": None if self._newest == -math.inf else self._newest,
            "recent": dict(sorted(self._recent.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OnlineWorkload:
        """The model :meth:`to_dict` described; ``ValueError`` naming the field if malformed."""
        if not isinstance(data, Mapping):
            raise ValueError("online workload: expected an object")
        if data.get("format") != FORMAT:
            raise ValueError(f"online workload: format: expected {FORMAT}, "
                             f"got {data.get('format')!r}")
        try:
            self = cls(float(data["coverage"]), float(data["grace"]), int(data["max_recent"]),
                       int(data["max_types"]))
            self.count, self.built_at = int(data["count"]), int(data["built_at"])
            self.arrivals = int(data["arrivals"])
            self.version = int(data["version"])
            self._counts = Counter({(int(c), int(m), int(k), tuple(str(x) for x in models)): int(n)
                                    for c, m, k, models, n in data["counts"]})
            rows = data["workload"]
            self.workload = None if rows is None else TypicalWorkload(
                [TaskType(int(c), int(m), int(k), frozenset(str(x) for x in models), float(f))
                 for c, m, k, models, f in rows])
            at, key = data["floor"]
            self._floor = (-math.inf if at is None else float(at), str(key))
            newest = data["newest"]
            self._newest = -math.inf if newest is None else float(newest)
            self._recent = {str(k): float(a) for k, a in dict(data["recent"]).items()}
            self._heap = sorted((a, k) for k, a in self._recent.items())
        except KeyError as exc:
            raise ValueError(f"online workload: missing field {exc.args[0]}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"online workload: malformed value ({exc})") from None
        return self

    def restore(self, data: Mapping[str, Any]) -> None:
        """Replace this model's state in place by :meth:`from_dict` ``(data)`` (profiles that
        hold this object see the restored model)."""
        self.__dict__.update(type(self).from_dict(data).__dict__)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return (f"OnlineWorkload(count={self.count}, version={self.version}, "
                f"types={len(self.workload) if self.workload is not None else 0})")
