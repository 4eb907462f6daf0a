"""ClusterSnapshot: the per-cycle view of capacity and usage, as numpy arrays.

Hosts are numbered 0..H-1 in the order given to :meth:`ClusterSnapshot.build`;
GPUs 0..G-1 per host, where G is the largest GPU count of any host. Arrays
(public, read-only for everybody except this module):

=================  =========  ===============================================
name               shape      meaning
=================  =========  ===============================================
``cpu_cap``        (H,)       CPU capacity, milli-cores (int64)
``cpu_free``       (H,)       free CPU, milli-cores (int64)
``mem_cap``        (H,)       memory capacity, MiB (int64)
``mem_free``       (H,)       free memory, MiB (int64)
``gpu_count``      (H,)       number of GPU devices (int32)
``host_model``     (H,)       index into ``models`` of device 0, -1 = no GPU
``gpu_free``       (H, G)     free milli per GPU (int32); **-1 = no such GPU**;
                              MIG-mode GPUs always show 0 here
``gpu_mode``       (H, G)     MODE_WHOLE / MODE_SHARED / MODE_MIG, MODE_NONE
``gpu_model``      (H, G)     index into ``models``, -1 = no such GPU
``kind_count``     (H, G+2)   tasks on the host per kind: column 0 shared,
                              column k whole k-GPU, column G+1 MIG
``task_count``     (H,)       tasks on the host (any kind)
``free_whole``     (H,)       GPUs completely free (``gpu_free >= 1000``; int32)
``free_milli``     (H,)       free milli of the host's GPUs (sum of ``gpu_free``
                              over existing GPUs, MIG ones count 0; int64)
``version``        (H,)       bumped on every change of the host (caches key on it)
``tie_rank``       (H,)       fixed tie-break rank (a permutation; lowest wins)
``host_rack``      (H,)       index into ``rack_names``; -1 = no rack (lazy)
``gpu_nvlink``     (H, G)     index into ``nvlink_names``; -1 = no NVLink
                              domain or no such GPU (lazy)
=================  =========  ===============================================

``host_rack`` / ``rack_names`` and ``gpu_nvlink`` / ``nvlink_names`` are computed on first use
(topology-constrained gangs only) and never change: hosts and devices are fixed for the life of
a snapshot. NVLink domain names are global: GPUs with the same ``nvlink_domain`` string share
one domain, on one host or on several (multi-node NVLink such as GB200 NVL72).

``free_whole`` and ``free_milli`` are kept in step with every change (the cycle's capacity
index and the placement fast path read them instead of reducing ``gpu_free`` again).

``mig_layouts[(h, g)]`` holds the ``MigLayout`` (``gpuplane.domain.mig``) of every
MIG-mode GPU (``None`` = no instances yet). ``assign`` applies each
``placement.mig`` entry with ``mig.take`` and ``release`` with ``mig.give_back``;
the undo of an assign restores the previous layouts exactly. ``cache`` is a scratch dict for plugins (see
:meth:`ClusterSnapshot.plugin_cache`): entries must be validated against ``version``.

Mutations go through :meth:`assign` (returns an exact undo) and :meth:`release`.
Both refuse over-allocation (DESIGN invariant 1) with ``Conflict``
(``gpuplane.placement.overcommit``) and change nothing in that case.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from gpuplane.domain.errors import Conflict, FieldError, InvalidInput
from gpuplane.domain.inventory import Host
from gpuplane.domain.requests import MILLI_PER_GPU, Placement, TaskRequest

MODE_NONE, MODE_WHOLE, MODE_SHARED, MODE_MIG = -1, 0, 1, 2
_MODE_CODE = {"whole": MODE_WHOLE, "shared": MODE_SHARED, "mig": MODE_MIG}
_uid = itertools.count(1)

Undo = Callable[[], None]


def kind_column(task: TaskRequest, max_gpus: int) -> int:
    """Column of ``kind_count`` for ``task``; -1 for CPU-only tasks (they have no kind)."""
    if task.gpus == 0:
        return -1
    if task.mig_profile is not None:
        return max_gpus + 1
    if task.gpu_milli < MILLI_PER_GPU:
        return 0
    return min(task.gpus, max_gpus)


class ClusterSnapshot:
    """Mutable arrays describing hosts, their free capacity and what runs there.

    Build with :meth:`build`. Not thread-safe. Hosts and devices are fixed for
    the life of a snapshot (inventory changes mean a new snapshot).
    """

    def __init__(self, hosts: Sequence[Host]) -> None:
        self.hosts: tuple[Host, ...] = tuple(hosts)
        self.names: list[str] = [h.name for h in self.hosts]
        self.index: dict[str, int] = {}
        for i, n in enumerate(self.names):
            if n in self.index:
                raise InvalidInput("host names must be unique",
                                   [FieldError(f"hosts[{i}].name", f"duplicate {n!r}")])
            self.index[n] = i
        H = len(self.hosts)
        G = max((h.gpu_count for h in self.hosts), default=0)
        self.n_hosts, self.max_gpus = H, G
        self.uid = next(_uid)
        self.models: list[str] = sorted({d.model for h in self.hosts for d in h.gpus})
        self.model_index: dict[str, int] = {m: i for i, m in enumerate(self.models)}
        self.cpu_cap = np.array([h.cpu_milli for h in self.hosts], dtype=np.int64)
        self.mem_cap = np.array([h.memory_mib for h in self.hosts], dtype=np.int64)
        self.cpu_free = self.cpu_cap.copy()
        self.mem_free = self.mem_cap.copy()
        self.gpu_count = np.array([h.gpu_count for h in self.hosts], dtype=np.int32)
        self.gpu_free = np.full((H, G), -1, dtype=np.int32)
        self.gpu_mode = np.full((H, G), MODE_NONE, dtype=np.int8)
        self.gpu_model = np.full((H, G), -1, dtype=np.int16)
        self.mig_layouts: dict[tuple[int, int], Any] = {}
        for h, host in enumerate(self.hosts):
            for d in host.gpus:
                mode = _MODE_CODE[d.mode]
                self.gpu_mode[h, d.index] = mode
                self.gpu_model[h, d.index] = self.model_index[d.model]
                self.gpu_free[h, d.index] = 0 if mode == MODE_MIG else MILLI_PER_GPU
                if mode == MODE_MIG:
                    self.mig_layouts[(h, d.index)] = d.mig_layout
        self.host_model = (self.gpu_model[:, 0].astype(np.int16) if G
                           else np.full(H, -1, dtype=np.int16))
        self.kind_count = np.zeros((H, G + 2), dtype=np.int32)
        self.task_count = np.zeros(H, dtype=np.int32)
        self.free_whole = ((self.gpu_free >= MILLI_PER_GPU).sum(axis=1).astype(np.int32) if G
                           else np.zeros(H, dtype=np.int32))
        self.free_milli = (np.maximum(self.gpu_free, 0).sum(axis=1).astype(np.int64) if G
                           else np.zeros(H, dtype=np.int64))
        # hosts with a MIG-mode GPU: only their placements need the per-device mode test
        self._mig_host = [bool(x) for x in (self.gpu_mode == MODE_MIG).any(axis=1)] if G \
            else [False] * H
        self.version = np.zeros(H, dtype=np.int64)
        self.tie_rank = np.arange(H, dtype=np.int64)
        self.cache: dict[Any, Any] = {}
        self._label_masks: dict[Any, np.ndarray] = {}
        self._tol_masks: dict[Any, np.ndarray] = {}
        self._elig: dict[Any, np.ndarray | None] = {}
        self.has_labels = any(h.labels for h in self.hosts)
        taint_sets = [tuple(t for t in h.taints if t.effect != "PreferNoSchedule")
                      for h in self.hosts]
        self._taint_keys: list[tuple] = sorted(set(taint_sets), key=repr)
        tk = {t: i for i, t in enumerate(self._taint_keys)}
        self.taint_group = np.array([tk[t] for t in taint_sets], dtype=np.int32)
        self.has_taints = any(taint_sets)
        self.gpu_exists = self.gpu_free >= 0 if G else np.zeros((H, 0), dtype=bool)
        self.gpu_exists |= self.gpu_mode == MODE_MIG

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def build(cls, hosts: Sequence[Host],
              placements: Iterable[tuple[TaskRequest, Placement]] = (),
              tie_rank: Sequence[int] | np.ndarray | None = None) -> ClusterSnapshot:
        """Snapshot of ``hosts`` with ``placements`` (running tasks) already assigned.

        ``tie_rank`` (a permutation of 0..H-1) fixes which of equally scored hosts wins
        (lowest rank); default: the order of ``hosts``. See :meth:`shuffle_tie_rank`.
        """
        snap = cls(hosts)
        if tie_rank is not None:
            snap.set_tie_rank(tie_rank)
        for task, placement in placements:
            snap.assign(task, placement)
        return snap

    def set_tie_rank(self, rank: Sequence[int] | np.ndarray) -> None:
        """Set the fixed tie-break rank: ``rank[h]`` for host ``h``, a permutation of 0..H-1."""
        r = np.asarray(rank, dtype=np.int64)
        if r.shape != (self.n_hosts,) or not np.array_equal(np.sort(r), np.arange(self.n_hosts)):
            raise InvalidInput("tie_rank must be a permutation of 0..H-1",
                               [FieldError("tie_rank", f"got shape {r.shape}")])
        self.tie_rank = r.copy()

    def shuffle_tie_rank(self, rng: np.random.Generator) -> None:
        """Draw a seeded random tie rank (FGD_PROTOCOL §5.1: ``rng.permutation(H)``)."""
        self.tie_rank = rng.permutation(self.n_hosts).astype(np.int64)

    def copy(self) -> ClusterSnapshot:
        """An independent deep copy of the state (fresh ``uid`` and empty plugin cache)."""
        new = object.__new__(ClusterSnapshot)
        new.__dict__.update(self.__dict__)
        for name in _STATE_ARRAYS + ("version", "tie_rank", "free_whole", "free_milli"):
            setattr(new, name, getattr(self, name).copy())
        new.mig_layouts = dict(self.mig_layouts)
        new.cache = {}
        new.uid = next(_uid)
        return new

    # -- topology (lazy: only topology-constrained gangs read it) --------------------------
    @property
    def host_rack(self) -> np.ndarray:
        """(H,) int32 index of each host's rack in :attr:`rack_names`; -1 = no rack."""
        if "_host_rack" not in self.__dict__:
            names = sorted({h.rack for h in self.hosts if h.rack})
            idx = {r: i for i, r in enumerate(names)}
            self._rack_names = names
            self._host_rack = np.array([idx.get(h.rack, -1) if h.rack else -1
                                        for h in self.hosts], dtype=np.int32)
        return self._host_rack

    @property
    def rack_names(self) -> list[str]:
        """Sorted distinct rack names (``host_rack`` indexes into it)."""
        self.host_rack
        return self._rack_names

    @property
    def gpu_nvlink(self) -> np.ndarray:
        """(H, G) int32 index of each GPU's NVLink domain in :attr:`nvlink_names`; -1 = none."""
        if "_gpu_nvlink" not in self.__dict__:
            names = sorted({d.nvlink_domain for h in self.hosts for d in h.gpus
                            if d.nvlink_domain})
            idx = {n: i for i, n in enumerate(names)}
            arr = np.full((self.n_hosts, self.max_gpus), -1, dtype=np.int32)
            if names:
                for h, host in enumerate(self.hosts):
                    for d in host.gpus:
                        if d.nvlink_domain:
                            arr[h, d.index] = idx[d.nvlink_domain]
            self._nvlink_names = names
            self._gpu_nvlink = arr
        return self._gpu_nvlink

    @property
    def nvlink_names(self) -> list[str]:
        """Sorted distinct NVLink domain names (``gpu_nvlink`` indexes into it)."""
        self.gpu_nvlink
        return self._nvlink_names

    # -- comparison -----------------------------------------------------------------------
    def state_equal(self, other: ClusterSnapshot) -> bool:
        """True when both snapshots hold the same hosts and the same usage (caches,
        versions and tie ranks are not compared)."""
        return (self.names == other.names
                and all(np.array_equal(getattr(self, a), getattr(other, a)) for a in _STATE_ARRAYS)
                and self.mig_layouts == other.mig_layouts)

    # -- queries used by plugins ----------------------------------------------------------
    def host_of(self, name: str) -> int:
        """Index of host ``name``; raises ``InvalidInput`` naming the field when unknown."""
        try:
            return self.index[name]
        except KeyError:
            raise InvalidInput(f"unknown host {name!r}",
                               [FieldError("placement.host", f"no host named {name!r}")]) from None

    def plugin_cache(self, owner: Any) -> dict:
        """A scratch dict private to ``owner`` (a plugin instance) on this snapshot."""
        key = id(owner)
        entry = self.cache.get(key)
        if entry is None or entry[0] is not owner:
            entry = (owner, {})
            self.cache[key] = entry
        return entry[1]

    def eligible_gpus(self, task: TaskRequest) -> np.ndarray | None:
        """(H, G) bool: GPUs whose mode and model accept ``task``; ``None`` means "every
        existing GPU" (fast path). MIG tasks get an all-False mask (the MIG plugin
        handles them)."""
        if task.gpus == 0:
            return None
        if task.mig_profile is not None:
            kind = "mig"
        else:
            kind = "shared" if task.gpu_milli < MILLI_PER_GPU else "whole"
        key = (kind, task.gpu_models)
        if key in self._elig:
            return self._elig[key]
        H, G = self.gpu_free.shape
        if kind == "mig":
            m = np.zeros((H, G), dtype=bool)
        else:
            m = self.gpu_mode == MODE_SHARED
            if kind == "whole":
                m |= self.gpu_mode == MODE_WHOLE
            if task.gpu_models:
                ok = [self.model_index[x] for x in task.gpu_models if x in self.model_index]
                m &= np.isin(self.gpu_model, np.array(ok, dtype=np.int16))
            if np.array_equal(m, self.gpu_free >= 0) and not (self.gpu_mode == MODE_MIG).any():
                m = None
        self._elig[key] = m
        return m

    def gpu_view(self, task: TaskRequest) -> np.ndarray:
        """(H, G) int32 free milli of the GPUs eligible for ``task``; -1 elsewhere.
        May return ``gpu_free`` itself: never write to the result."""
        m = self.eligible_gpus(task)
        if m is None:
            return self.gpu_free
        return np.where(m, self.gpu_free, -1)

    def label_mask(self, selector) -> np.ndarray | None:
        """(H,) bool hosts whose labels contain ``selector``; ``None`` = all hosts."""
        if not selector:
            return None
        key = tuple(sorted(selector.items()))
        m = self._label_masks.get(key)
        if m is None:
            m = np.array([all(h.labels.get(k) == v for k, v in key) for h in self.hosts],
                         dtype=bool)
            self._label_masks[key] = m
        return m

    def toleration_mask(self, tolerations) -> np.ndarray | None:
        """(H,) bool hosts whose NoSchedule/NoExecute taints are all tolerated; ``None`` = all."""
        if not self.has_taints:
            return None
        key = tuple(tolerations)
        m = self._tol_masks.get(key)
        if m is None:
            ok = np.array([all(any(t.tolerates(x) for t in key) for x in ts)
                           for ts in self._taint_keys], dtype=bool)
            m = ok[self.taint_group]
            self._tol_masks[key] = m
        return m

    def used_gpu_milli(self) -> int:
        """Total allocated milli over whole/shared GPUs (MIG GPUs not counted)."""
        ex = self.gpu_mode != MODE_MIG
        ex &= self.gpu_free >= 0
        return int(ex.sum()) * MILLI_PER_GPU - int(self.gpu_free[ex].sum())

    # -- mutation -------------------------------------------------------------------------
    def _check(self, task: TaskRequest, p: Placement, h: int, sign: int) -> None:
        errors: list[FieldError] = []
        c, m = task.cpu_milli, task.memory_mib
        if sign < 0:
            if self.cpu_free[h] < c:
                errors.append(FieldError("cpu_milli", f"{c} asked, {self.cpu_free[h]} free"))
            if self.mem_free[h] < m:
                errors.append(FieldError("memory_mib", f"{m} asked, {self.mem_free[h]} free"))
        else:
            if self.cpu_free[h] + c > self.cpu_cap[h]:
                errors.append(FieldError("cpu_milli", "release exceeds capacity"))
            if self.mem_free[h] + m > self.mem_cap[h]:
                errors.append(FieldError("memory_mib", "release exceeds capacity"))
        n = int(self.gpu_count[h])
        mig_gpus = {r.gpu_index for r in p.mig}
        for g in p.gpu_indices:
            if g >= n:
                errors.append(FieldError("placement.gpu_indices", f"host has no GPU {g}"))
            elif self.gpu_mode[h, g] == MODE_MIG:
                if g not in mig_gpus:
                    errors.append(FieldError("placement.gpu_indices",
                                             f"GPU {g} is in MIG mode; a MIG instance is needed"))
            elif sign < 0 and self.gpu_free[h, g] < p.gpu_milli:
                errors.append(FieldError("placement.gpu_milli",
                                         f"GPU {g}: {p.gpu_milli} asked, {self.gpu_free[h, g]} free"))
            elif sign > 0 and self.gpu_free[h, g] + p.gpu_milli > MILLI_PER_GPU:
                errors.append(FieldError("placement.gpu_milli", f"GPU {g}: release exceeds capacity"))
        if errors:
            verb = "assign" if sign < 0 else "release"
            raise Conflict(f"cannot {verb} task on {self.names[h]}: "
                           + "; ".join(f"{e.loc}: {e.msg}" for e in errors),
                           code="gpuplane.placement.overcommit")

    def _mig_apply(self, h: int, refs: tuple, take: bool) -> dict:
        from gpuplane.domain import mig as migmod  # lazy: only MIG placements need it

        old: dict[tuple[int, int], Any] = {}
        new: dict[tuple[int, int], Any] = {}
        for r in refs:
            key = (h, r.gpu_index)
            if key not in self.mig_layouts:
                raise Conflict(f"GPU {r.gpu_index} of {self.names[h]} is not in MIG mode",
                               code="gpuplane.placement.overcommit")
            cur = new.get(key, self.mig_layouts[key])
            if cur is None:
                cur = migmod.MigLayout.empty(self.hosts[h].gpus[r.gpu_index].model)
            old.setdefault(key, self.mig_layouts[key])
            # take: destroy r.reclaims, then create occupied (r.created) or occupy; give_back: vacate
            cur = migmod.take(cur, r) if take else migmod.give_back(cur, r)
            new[key] = cur
        self.mig_layouts.update(new)
        return old

    def _devices(self, h: int, placement: Placement) -> list[int] | tuple[int, ...]:
        """The placement's devices whose free milli changes (MIG-mode GPUs excluded)."""
        if self._mig_host[h]:
            return [g for g in placement.gpu_indices if self.gpu_mode[h, g] != MODE_MIG]
        return placement.gpu_indices

    def _take_gpus(self, h: int, gi: Sequence[int], milli: int) -> list[int]:
        """Take ``milli`` from each GPU ``gi`` of host ``h`` (checked by the caller), keeping
        ``free_whole`` and ``free_milli`` in step; returns the previous values."""
        row = self.gpu_free[h]
        old = [int(row[g]) for g in gi]
        freed = 0
        for g, v in zip(gi, old):
            row[g] = v - milli
            if v >= MILLI_PER_GPU > v - milli:
                freed += 1
        self.free_whole[h] -= freed
        self.free_milli[h] -= milli * len(gi)
        return old

    def _set_gpus(self, h: int, gi: Sequence[int], values: Sequence[int]) -> None:
        """Set the free milli of GPUs ``gi`` of host ``h`` to ``values`` (counts in step)."""
        row = self.gpu_free[h]
        whole = milli = 0
        for g, v in zip(gi, values):
            before = int(row[g])
            row[g] = v
            whole += (v >= MILLI_PER_GPU) - (before >= MILLI_PER_GPU)
            milli += v - before
        self.free_whole[h] += whole
        self.free_milli[h] += milli

    def assign(self, task: TaskRequest, placement: Placement) -> Undo:
        """Book ``task`` on ``placement``; return a callable that restores the exact
        previous state. Undos must run in reverse order of their assigns (LIFO);
        calling one twice is a no-op. Raises ``Conflict``
        (``gpuplane.placement.overcommit``) without changing anything when the task
        does not fit (CPU, memory, a GPU's free milli, or the MIG layout)."""
        h = self.host_of(placement.host)
        self._check(task, placement, h, -1)
        old_mig = self._mig_apply(h, placement.mig, True) if placement.mig else None
        gi = self._devices(h, placement)
        col = kind_column(task, self.max_gpus)
        self.cpu_free[h] -= task.cpu_milli
        self.mem_free[h] -= task.memory_mib
        old_gpu = self._take_gpus(h, gi, placement.gpu_milli) if gi else None
        if col >= 0:
            self.kind_count[h, col] += 1
        self.task_count[h] += 1
        self.version[h] += 1
        done = [False]

        def undo() -> None:
            if done[0]:
                return
            done[0] = True
            self.cpu_free[h] += task.cpu_milli
            self.mem_free[h] += task.memory_mib
            if old_gpu is not None:
                self._set_gpus(h, gi, old_gpu)
            if col >= 0:
                self.kind_count[h, col] -= 1
            self.task_count[h] -= 1
            if old_mig:
                self.mig_layouts.update(old_mig)
            self.version[h] += 1

        return undo

    def release(self, task: TaskRequest, placement: Placement) -> None:
        """Inverse of :meth:`assign` for a task that finished or was preempted.
        Raises ``Conflict`` (nothing changed) when it would exceed a capacity."""
        h = self.host_of(placement.host)
        self._check(task, placement, h, +1)
        col = kind_column(task, self.max_gpus)
        if col >= 0 and self.kind_count[h, col] <= 0:
            raise Conflict(f"no such task on {self.names[h]} to release",
                           code="gpuplane.placement.overcommit")
        if placement.mig:
            self._mig_apply(h, placement.mig, False)
        gi = self._devices(h, placement)
        self.cpu_free[h] += task.cpu_milli
        self.mem_free[h] += task.memory_mib
        if gi:
            row = self.gpu_free[h]
            self._set_gpus(h, gi, [int(row[g]) + placement.gpu_milli for g in gi])
        if col >= 0:
            self.kind_count[h, col] -= 1
        self.task_count[h] -= 1
        self.version[h] += 1


_STATE_ARRAYS = ("cpu_free", "mem_free", "gpu_free", "kind_count", "task_count",
                 "cpu_cap", "mem_cap", "gpu_mode", "gpu_model")
