"""Score + GPU chooser ``gpuplane``: the default placement policy.

It is FGD (FGD_PROTOCOL §6.6: integer sigmoid of the fragmentation change, ties
by the fixed host rank) on a *richer* fragmentation measure::

    F'(S) = F(S) + alpha * stranded(S) + beta * sum_g waste(free_g) - gamma * pi(model) * L

* ``F`` - FGD's fragment amount for the target workload (expected free GPU milli
  a random typical task could not use on this host).
* ``stranded(S) = max(0, L - cpu_free / rho)`` - free GPU milli the host's free
  CPU cannot feed at the workload's CPU appetite ``rho`` (CPU milli per
  milli-GPU, see :func:`cpu_price`). FGD only notices CPU when it drops below
  one task type's request; this term prices CPU gradually, so CPU-hungry tasks
  drift to CPU-rich hosts (e.g. 2-GPU/104-core T4 nodes) and CPU-light ones to
  CPU-poor hosts, and fewer GPUs end up behind exhausted CPU.
* ``waste(h)`` - for a partly used GPU with ``h`` milli free, the part no
  combination of the workload's common share sizes (frequency >= 1 %) can fill:
  ``h - max{sum of shares <= h}`` (``waste(0) = waste(1000) = 0``). A look-ahead
  on the expected demand: it prefers leaving holes that popular shares can
  complete (530 = 470 + 60 left, 210: nothing fits).
* ``pi(model) * L`` - the value of keeping free capacity ``L`` on a *scarce* model:
  ``pi(M)`` is the demand of the task types that may only run on a model set
  containing ``M`` (spread over that set's capacity), relative to the average
  demand per GPU of the whole workload. Zero when no type is model-constrained.
  Unconstrained tasks then leave scarce models to the tasks that can only go there.

``alpha``/``beta``/``gamma`` are workload-independent constants (no per-trace tuning).
Without ``workload`` (live control plane, ``sim openb --distribution online``) the
distribution is learned online by the scheduler's :class:`OnlineWorkload`: each arriving
workload counted once, rebuilt when the count doubles (``placement/online.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from gpuplane.domain.requests import TaskRequest
from gpuplane.scheduling.placement.fragmentation import (
    FragmentationModel,
    TypicalWorkload,
)
from gpuplane.scheduling.placement.framework import CycleState
from gpuplane.scheduling.placement.online import OnlineWorkload
from gpuplane.scheduling.placement.plugins.fgd import Fgd
from gpuplane.scheduling.snapshot import ClusterSnapshot

ALPHA = 1.0  #: weight of CPU-stranded GPU milli
BETA = 2.0   #: weight of the unfillable part of partly used GPUs
MIN_SHARE_FREQ = 0.01  #: share sizes rarer than this do not count as fillers
GAMMA = 0.5  #: weight of free capacity on scarce (model-constrained) GPU models
MEMO_LIMIT = 1_000_000  #: host states memoised per model before the memo is emptied


def cpu_appetite(workload: TypicalWorkload) -> float:
    """CPU milli per milli-GPU asked by the workload's GPU task types (demand-weighted);
    0 when it has no GPU types."""
    gpu = workload.milli * workload.count * workload.freq
    if gpu.sum() <= 0:
        return 0.0
    cpu = np.where(workload.milli > 0, workload.cpu * workload.freq, 0.0)
    return float(cpu.sum() / gpu.sum())


def cpu_price(workload: TypicalWorkload, cpu_per_gpu: float) -> float:
    """``rho``: CPU milli per milli-GPU that the stranded-GPU term charges.

    ``rho_gpu`` = appetite of the GPU task types alone; ``rho_all`` = CPU of *all*
    types (CPU-only included) per milli-GPU asked; ``cpu_per_gpu`` = the
    cluster's CPU per milli-GPU. ``w`` = share of the cluster's CPU surplus
    (beyond what GPU tasks need) that CPU-only tasks are expected to take,
    clipped to 0..1; ``rho = rho_gpu + w**2 * (rho_all - rho_gpu)``. So CPU-only
    tasks count in the price only when CPU is (close to) the binding resource."""
    rho_gpu = cpu_appetite(workload)
    gpu = float((workload.milli * workload.count * workload.freq).sum())
    if gpu <= 0:
        return 0.0
    rho_all = float((workload.cpu * workload.freq).sum()) / gpu
    if cpu_per_gpu > rho_gpu:
        w = min(1.0, max(0.0, (rho_all - rho_gpu) / (cpu_per_gpu - rho_gpu)))
    else:
        w = 1.0
    return rho_gpu + w * w * (rho_all - rho_gpu)


def hole_waste(workload: TypicalWorkload, min_freq: float = MIN_SHARE_FREQ) -> np.ndarray:
    """(1001,) unfillable milli of a GPU with ``h`` milli free: ``h`` minus the
    largest sum of share sizes (with repetition) <= ``h``, over the single-GPU
    share sizes whose total frequency in the workload is >= ``min_freq``."""
    q: dict[int, float] = {}
    for t in workload.types:
        if 0 < t.gpu_milli < 1000 and t.gpus == 1:
            q[t.gpu_milli] = q.get(t.gpu_milli, 0.0) + t.freq
    total = float(workload.freq.sum()) or 1.0
    sizes = sorted(m for m, f in q.items() if f / total >= min_freq)
    best = np.zeros(1001, dtype=np.int64)
    for h in range(1, 1001):
        b = 0
        for m in sizes:
            if m > h:
                break
            b = max(b, m + int(best[h - m]))
        best[h] = b
    waste = np.arange(1001, dtype=np.float64) - best
    waste[0] = waste[1000] = 0.0
    return waste


def scarcity(workload: TypicalWorkload, models: Sequence[str],
             capacity: Sequence[float]) -> np.ndarray:
    """(len(models) + 1,) ``pi`` per model index (last entry: no model -> 0).

    ``capacity[i]``: GPUs of ``models[i]`` in the cluster. For each constrained
    type t with allowed set A_t, its demand ``freq * gpus * milli`` is spread over
    the capacity of A_t; the sum per model is divided by the workload's total
    demand per GPU of the cluster."""
    cap = np.asarray(capacity, dtype=np.float64)
    pi = np.zeros(len(models) + 1, dtype=np.float64)
    total_demand = float((workload.freq * workload.milli * workload.count).sum())
    if total_demand <= 0 or cap.sum() <= 0:
        return pi
    index = {m: i for i, m in enumerate(models)}
    for t in workload.types:
        if not t.models or t.gpu_milli <= 0:
            continue
        idx = [index[m] for m in t.models if m in index]
        c = float(cap[idx].sum()) if idx else 0.0
        if c > 0:
            pi[idx] += t.freq * t.gpus * t.gpu_milli / c
    return pi / (total_demand / float(cap.sum()))


class GpuplaneModel(FragmentationModel):
    """``F'`` of host states (memoised by state like :class:`FragmentationModel`).

    ``capacity``: GPUs per entry of ``models`` (for the scarcity term; ``None``
    disables it). ``cpu_per_gpu``: the cluster's CPU milli per milli-GPU (for
    :func:`cpu_price`; ``None`` = price CPU at the GPU types' appetite only)."""

    def __init__(self, workload: TypicalWorkload, models, alpha: float = ALPHA,
                 beta: float = BETA, gamma: float = GAMMA,
                 capacity: Sequence[float] | None = None,
                 cpu_per_gpu: float | None = None) -> None:
        super().__init__(workload, models)
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        rho = (cpu_price(workload, cpu_per_gpu) if cpu_per_gpu is not None
               else cpu_appetite(workload))
        self.rho = rho
        self.inv_rho = 1.0 / rho if rho > 0 else 0.0
        self.waste = hole_waste(workload)
        self.pi = (scarcity(workload, self.models, capacity) if capacity is not None
                   else np.zeros(len(self.models) + 1))

    def fragment_rows(self, cpu: np.ndarray, gpus: np.ndarray, model: np.ndarray) -> np.ndarray:
        base = super().fragment_rows(cpu, gpus, model)
        gp = np.clip(np.asarray(gpus, dtype=np.int64), 0, 1000)
        free = gp.sum(axis=1)
        out = base
        if self.alpha and self.inv_rho:
            strand = np.maximum(0.0, free - np.asarray(cpu, dtype=np.float64) * self.inv_rho)
            out = out + self.alpha * strand
        if self.beta:
            out = out + self.beta * self.waste[gp].sum(axis=1)
        if self.gamma and self.pi.any():
            out = out - self.gamma * self.pi[np.asarray(model)] * free
        return out


class Gpuplane(Fgd):
    """The ``gpuplane`` score and device chooser (see module doc).

    ``workload``: a fixed target distribution (the simulator's ``trace`` mode passes the
    trace's own, as FGD does). Otherwise ``online``: the scheduler's
    :class:`~gpuplane.scheduling.placement.online.OnlineWorkload`, fed by its owner with each
    arriving workload once (the control loop, the simulator's ``online`` mode); this plugin
    only reads it. With neither, the plugin owns a model and counts each task it scores once
    per decision (standalone use; a task retried in later cycles is counted again).

    The fragmentation model (and its memo) is kept across snapshots and rebuilt only when the
    distribution object or the cluster's shape (models, GPUs per model, total CPU) changes.
    """

    name: ClassVar[str] = "gpuplane"

    def __init__(self, workload: TypicalWorkload | None = None,
                 online: OnlineWorkload | None = None, alpha: float = ALPHA,
                 beta: float = BETA, gamma: float = GAMMA) -> None:
        super().__init__(workload)
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self._feeds = workload is None and online is None
        self.online = online if online is not None else OnlineWorkload()
        self._kept: tuple[tuple, TypicalWorkload, GpuplaneModel] | None = None
        self.builds = 0  #: fragmentation models built (for tests and benchmarks)

    def learned(self) -> TypicalWorkload | None:
        """The online distribution in force (``None`` before any task was counted)."""
        return self.online.workload

    def _target(self) -> TypicalWorkload | None:
        return self.workload if self.workload is not None else self.online.workload

    def model(self, snap: ClusterSnapshot, task: TaskRequest | None = None) -> FragmentationModel:
        wl = self._target()
        cache = snap.plugin_cache(self)
        if wl is None:  # nothing counted yet: the task itself is the only typical type
            assert task is not None
            key = ("own", task.shape, task.gpu_models)
            fm = cache.get(key)
            if fm is None:
                fm = cache[key] = self._build(TypicalWorkload.from_tasks([task]), snap)
            return fm
        kept = self._kept
        fm = cache.get("fm")
        if kept is None or fm is not kept[2] or kept[1] is not wl:
            shape = _cluster_shape(snap)
            if kept is None or kept[1] is not wl or kept[0] != shape:
                kept = self._kept = (shape, wl, self._build(wl, snap))
            fm = kept[2]
            cache.clear()  # a new model or snapshot: score arrays of another model are stale
            cache["fm"] = fm
        if len(fm.memo) > MEMO_LIMIT:  # bound the memory of a long-lived model
            fm.memo.clear()
            fm.score_memo.clear()  # type: ignore[attr-defined]
        return fm

    def _build(self, wl: TypicalWorkload, snap: ClusterSnapshot) -> GpuplaneModel:
        capacity = [float(snap.gpu_count[snap.host_model == i].sum())
                    for i in range(len(snap.models))]
        gpu_milli = float(snap.gpu_count.sum()) * 1000.0
        kappa = float(snap.cpu_cap.sum()) / gpu_milli if gpu_milli else None
        fm = GpuplaneModel(wl, snap.models, self.alpha, self.beta, self.gamma, capacity, kappa)
        fm.score_memo = {}  # type: ignore[attr-defined]
        self.builds += 1
        return fm

    def score(self, state: CycleState, task: TaskRequest, snap: ClusterSnapshot,
              hosts: np.ndarray) -> np.ndarray:
        if self._feeds and not state.data.get("gpuplane_seen"):
            self.online.observe(task)
            state.data["gpuplane_seen"] = True
        return super().score(state, task, snap, hosts)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Gpuplane(alpha={self.alpha}, beta={self.beta}, gamma={self.gamma})"


def _cluster_shape(snap: ClusterSnapshot) -> tuple:
    """What the model depends on besides the distribution: the model list, GPUs per model
    and the cluster's total CPU and GPU count."""
    per_model = tuple(float(snap.gpu_count[snap.host_model == i].sum())
                      for i in range(len(snap.models)))
    return (tuple(snap.models), per_model, float(snap.cpu_cap.sum()), float(snap.gpu_count.sum()))
