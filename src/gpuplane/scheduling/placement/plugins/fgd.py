"""Score + GPU chooser ``fgd``: Fragmentation Gradient Descent (FGD_PROTOCOL §6.6).

The score of host n for task p is ``trunc(100 * sigmoid((F(S) - F(S')) / 1000))``
where ``F`` is the fragment amount (:mod:`..fragmentation`) and ``S'`` the host
state after placing p. A single share (``gpus == 1, gpu_milli < 1000``) tries
every fitting GPU and keeps the best; the chooser then takes the lowest-indexed
GPU reaching that best integer score. Whole GPUs: the lowest-indexed free ones.

Speed: the score of (host state, task shape) is memoised, and per task shape an
array of last scores is kept per host and refreshed only for hosts whose
``snap.version`` changed since (``snap.plugin_cache``). Identical idle hosts
share memo entries.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.scheduling.placement.fragmentation import FragmentationModel, TypicalWorkload
from gpuplane.scheduling.placement.framework import CycleState
from gpuplane.scheduling.placement.plugins.choosers import cpu_only, lowest_free, tightest
from gpuplane.scheduling.snapshot import ClusterSnapshot


#: above this many stale hosts, ``score`` evaluates them with array operations
#: (``evaluate_hosts``) instead of the per-state memo
VECTOR_MIN = 48


def sigmoid_score(delta: float) -> int:
    """``trunc(100 * sigmoid(delta / 1000))`` with ``delta = F(S) - F(S')``."""
    return int(100.0 / (1.0 + math.exp(-delta / 1000.0)))


class Fgd:
    """FGD score and device choice for one target workload.

    ``workload``: the typical tasks (the sim passes the trace's own, as the
    paper does). Without one, each decision uses the task itself as the only
    typical type (slower, no cross-task memo).
    """

    name: ClassVar[str] = "fgd"

    def __init__(self, workload: TypicalWorkload | None = None) -> None:
        self.workload = workload

    def handles(self, task: TaskRequest) -> bool:
        return task.mig_profile is None

    # -- state -----------------------------------------------------------------------------
    def model(self, snap: ClusterSnapshot, task: TaskRequest | None = None) -> FragmentationModel:
        """The memoising fragmentation model used on ``snap`` (shared with callers)."""
        cache = snap.plugin_cache(self)
        if self.workload is not None:
            key: Any = "fm"
            wl = self.workload
        else:
            assert task is not None
            key = ("fm", task.shape, task.gpu_models)
            wl = None
        fm = cache.get(key)
        if fm is None:
            if wl is None:
                wl = TypicalWorkload.from_tasks([task])
            fm = FragmentationModel(wl, snap.models)
            fm.score_memo = {}  # type: ignore[attr-defined]
            cache[key] = fm
        return fm

    @staticmethod
    def _shape_key(snap: ClusterSnapshot, task: TaskRequest):
        elig = snap.eligible_gpus(task)
        return elig, (task.cpu_milli, task.gpu_milli, task.gpus,
                      None if elig is None else task.gpu_models)

    @staticmethod
    def _keys(snap: ClusterSnapshot, hosts: np.ndarray, elig: np.ndarray | None) -> list[tuple]:
        cpu = snap.cpu_free[hosts].tolist()
        model = snap.host_model[hosts].tolist()
        if elig is None:
            rows = np.sort(snap.gpu_free[hosts], axis=1).tolist()
            return [(c, tuple(r), m) for c, r, m in zip(cpu, rows, model)]
        rows = snap.gpu_free[hosts].tolist()
        el = elig[hosts].tolist()
        return [(c, tuple(r), m, tuple(e)) for c, r, m, e in zip(cpu, rows, model, el)]

    # -- scoring ---------------------------------------------------------------------------
    def _evaluate(self, fm: FragmentationModel, keys: list[tuple], task: TaskRequest,
                  shape: tuple) -> list[tuple[int, frozenset | None]]:
        memo = fm.score_memo.setdefault(shape, {})  # type: ignore[attr-defined]
        out: list[Any] = [memo.get(k) for k in keys]
        miss = [i for i, r in enumerate(out) if r is None]
        if not miss:
            return out
        c, m, k = task.cpu_milli, task.gpu_milli, task.gpus
        sharing = k == 1 and m < 1000
        fkeys: list[tuple] = []
        plan: list[tuple[int, int, list[int]]] = []  # (index, base pos, option values)
        groups: dict[tuple, list[int]] = {}
        for i in miss:
            groups.setdefault(keys[i], []).append(i)
        for key, idxs in groups.items():
            cpu, gpus, model = key[0], key[1], key[2]
            ok = key[3] if len(key) > 3 else None
            base = len(fkeys)
            fkeys.append((cpu, tuple(sorted(gpus)), model))
            vals: list[int] = []
            if sharing:
                for j, v in enumerate(gpus):
                    if v >= m and (ok is None or ok[j]) and v not in vals:
                        vals.append(v)
                        new = list(gpus)
                        new[j] = v - m
                        fkeys.append((cpu - c, tuple(sorted(new)), model))
            else:
                new = list(gpus)
                if k:
                    cand = [j for j, v in enumerate(gpus) if v >= m and (ok is None or ok[j])]
                    cand.sort(key=lambda j: gpus[j])
                    for j in cand[:k]:
                        new[j] -= m
                fkeys.append((cpu - c, tuple(sorted(new)), model))
            plan.append((key, base, vals))
        F = fm.fragment_keys(fkeys)
        for key, base, vals in plan:
            f0 = F[base]
            if sharing:
                scores = [sigmoid_score(f0 - F[base + 1 + t]) for t in range(len(vals))]
                best = max(scores) if scores else 0
                res = (best, frozenset(v for v, s in zip(vals, scores) if s == best))
            else:
                res = (sigmoid_score(f0 - F[base + 1]), None)
            memo[key] = res
            for i in groups[key]:
                out[i] = res
        return out

    def evaluate_hosts(self, fm: FragmentationModel, snap: ClusterSnapshot, hosts: np.ndarray,
                       task: TaskRequest) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised scores of ``hosts`` (all feasible) for ``task``, without the memo:
        returns ``(scores, gpu)`` where ``gpu`` is, for a single share, the lowest
        GPU index reaching the best score (-1 otherwise). Same numbers as the memo path."""
        K = len(hosts)
        cpu = snap.cpu_free[hosts].astype(np.int64)
        g = snap.gpu_free[hosts].astype(np.int64)
        model = snap.host_model[hosts].astype(np.int64)
        c, m, k = task.cpu_milli, task.gpu_milli, task.gpus
        f0 = fm.fragment_rows(cpu, g, model)
        best_gpu = np.full(K, -1, dtype=np.int64)
        if k == 1 and m < 1000:
            view = np.where(snap.eligible_gpus(task)[hosts], g, -1) \
                if snap.eligible_gpus(task) is not None else g
            G = g.shape[1]
            ok = view >= m
            # identical free values on one host give identical options: keep the first
            dup = np.zeros_like(ok)
            for j in range(1, G):
                dup[:, j] = (g[:, :j] == g[:, j:j + 1]).any(axis=1) & ok[:, :j].any(axis=1)
            todo = ok & ~dup
            hi, gj = np.nonzero(todo)
            rows = g[hi].copy()
            rows[np.arange(len(hi)), gj] -= m
            fopt = fm.fragment_rows(cpu[hi] - c, rows, model[hi])
            sc_opt = np.trunc(100.0 / (1.0 + np.exp(-(f0[hi] - fopt) / 1000.0))).astype(np.int64)
            per = np.full((K, G), -1, dtype=np.int64)
            per[hi, gj] = sc_opt
            # duplicates share the score of their first occurrence
            for j in range(1, G):
                d = dup[:, j]
                if d.any():
                    first = np.argmax((g[d, :j] == g[d, j:j + 1]) & ok[d, :j], axis=1)
                    per[np.flatnonzero(d), j] = per[np.flatnonzero(d), first]
            scores = per.max(axis=1)
            best_gpu = np.argmax(per == scores[:, None], axis=1)
            return np.maximum(scores, 0), best_gpu
        rows = g.copy()
        if k:
            elig = snap.eligible_gpus(task)
            view = np.where(elig[hosts], g, -1) if elig is not None else g
            key = np.where(view >= m, view, 1 << 40)
            order = np.argsort(key, axis=1, kind="stable")[:, :k]
            rows[np.arange(K)[:, None], order] -= m
        fopt = fm.fragment_rows(cpu - c, rows, model)
        scores = np.trunc(100.0 / (1.0 + np.exp(-(f0 - fopt) / 1000.0))).astype(np.int64)
        return scores, best_gpu

    def score(self, state: CycleState, task: TaskRequest, snap: ClusterSnapshot,
              hosts: np.ndarray) -> np.ndarray:
        fm = self.model(snap, task)
        elig, shape = self._shape_key(snap, task)
        cache = snap.plugin_cache(self)
        ent = cache.get(("shape",) + shape)
        if ent is None:
            ent = (np.full(snap.n_hosts, -1, dtype=np.int64), np.zeros(snap.n_hosts, np.int64))
            cache[("shape",) + shape] = ent
        ver, sc = ent
        cur = snap.version[hosts]
        stale = hosts[ver[hosts] != cur]
        if len(stale) > VECTOR_MIN:
            sc[stale] = self.evaluate_hosts(fm, snap, stale, task)[0]
            ver[stale] = snap.version[stale]
        elif len(stale):
            res = self._evaluate(fm, self._keys(snap, stale, elig), task, shape)
            sc[stale] = [r[0] for r in res]
            ver[stale] = snap.version[stale]
        return sc[hosts]

    # -- device choice ---------------------------------------------------------------------
    def choose(self, state: CycleState, task: TaskRequest, snap: ClusterSnapshot,
               host: int) -> Placement:
        if task.gpus == 0:
            return cpu_only(snap, host)
        row = state.gpu_view(snap, task)[host]
        m = task.gpu_milli
        if m >= 1000:
            idx = lowest_free(row, task.gpus)
        elif task.gpus == 1:
            fm = self.model(snap, task)
            elig, shape = self._shape_key(snap, task)
            key = self._keys(snap, np.array([host]), elig)
            _score, best = self._evaluate(fm, key, task, shape)[0]
            fits = [j for j, v in enumerate(row.tolist()) if v >= m and (not best or v in best)]
            if not fits:   # the view is restricted (a topology domain): tightest fit in it
                fits = list(tightest(row, m, 1))
            idx = (fits[0],)
        else:
            idx = tightest(row, m, task.gpus)
        return Placement(host=snap.names[host], gpu_indices=idx, gpu_milli=m)
