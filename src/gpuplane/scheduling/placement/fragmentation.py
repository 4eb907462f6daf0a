"""GPU fragmentation with respect to a target workload (FGD_PROTOCOL §5.2).

:class:`TypicalWorkload` is the weighted list of "typical" task types; the
fragment amount ``F`` of a host is the expected free GPU milli that a random
typical task could *not* use there. :class:`FragmentationModel` evaluates ``F``
vectorised over many host states and memoises it by host state
``(free CPU, sorted free milli per GPU, model index)``.

Used by the ``fgd`` score, by the simulator's fragmentation report and by any
policy that wants the same measure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from gpuplane.domain.requests import TaskRequest

StateKey = tuple  # (cpu_free: int, gpus: tuple[int, ...], model: int)


@dataclass(frozen=True)
class TaskType:
    """One typical task type: CPU milli, per-GPU milli (0 = CPU-only), GPU count,
    allowed models (empty = any) and its frequency."""

    cpu_milli: int
    gpu_milli: int
    gpus: int
    models: frozenset[str]
    freq: float


class TypicalWorkload:
    """An immutable weighted set of task types (frequencies need not sum to 1)."""

    def __init__(self, types: Sequence[TaskType]) -> None:
        self.types: tuple[TaskType, ...] = tuple(types)
        self.cpu = np.array([t.cpu_milli for t in self.types], dtype=np.int64)
        self.milli = np.array([t.gpu_milli for t in self.types], dtype=np.int64)
        self.count = np.array([t.gpus for t in self.types], dtype=np.int64)
        self.freq = np.array([t.freq for t in self.types], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.types)

    @classmethod
    def from_tasks(cls, tasks: Iterable[TaskRequest], coverage: float = 0.95) -> TypicalWorkload:
        """Popular types of ``tasks`` (FGD_PROTOCOL §5.2): key = (CPU, per-GPU milli,
        GPU count, model list); most frequent first (ties: larger key first); keep
        types until their count reaches ``coverage`` of all tasks; renormalise.
        MIG requests are ignored."""
        counts: Counter = Counter()
        specs: dict[str, frozenset[str]] = {}
        total = 0
        for t in tasks:
            if t.mig_profile is not None:
                continue
            spec = "|".join(sorted(t.gpu_models)) if t.gpus else ""
            specs[spec] = frozenset(t.gpu_models) if t.gpus else frozenset()
            counts[(t.cpu_milli, t.gpu_milli if t.gpus else 0, t.gpus, spec)] += 1
            total += 1
        items = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
        kept: list[tuple[tuple, int]] = []
        acc = 0
        for key, n in items:
            if total and acc >= coverage * total:
                break
            kept.append((key, n))
            acc += n
        return cls([TaskType(c, m, k, specs[s], n / acc) for (c, m, k, s), n in kept])

    @classmethod
    def from_dicts(cls, rows: Iterable[dict]) -> TypicalWorkload:
        """From ``{"cpu_milli", "gpu_milli", "num_gpu", "gpu_spec", "freq"}`` rows
        (the format of fgd_frag_test_vectors.json)."""
        out = []
        for r in rows:
            spec = frozenset(x for x in str(r.get("gpu_spec") or "").split("|") if x)
            out.append(TaskType(int(r["cpu_milli"]), int(r["gpu_milli"]), int(r["num_gpu"]),
                                spec, float(r["freq"])))
        return cls(out)


class FragmentationModel:
    """Evaluates the fragment amount ``F`` (milli-GPU) of host states for one
    workload and one model list (``snap.models``). Memoised; not thread-safe."""

    def __init__(self, workload: TypicalWorkload, models: Sequence[str]) -> None:
        self.workload = workload
        self.models = list(models)
        w = workload
        rows = []
        for model in self.models + [None]:
            rows.append([t.gpu_milli == 0 or (bool(t.models) and model not in t.models)
                         for t in w.types])
        # full[model_index] (model -1 -> last row): types for which the whole free GPU
        # of the host counts as fragment whatever the state (CPU-only, no access).
        self.full = np.array(rows, dtype=bool).reshape(len(rows), len(w))
        # distinct per-GPU milli of the GPU types: counts/sums over GPUs are computed once
        # per distinct value (U of them) and gathered per type
        self._um, self._tu = np.unique(np.where(w.milli > 0, w.milli, 1000), return_inverse=True)
        self._tu = self._tu.reshape(-1)
        self._n = w.count[None, :]
        self._c = w.cpu[None, :]
        self.memo: dict[StateKey, float] = {}

    def fragment_rows(self, cpu: np.ndarray, gpus: np.ndarray, model: np.ndarray) -> np.ndarray:
        """``F`` of K states at once: ``cpu`` (K,), ``gpus`` (K, G) free milli with
        -1 for absent GPUs, ``model`` (K,) model indices (-1 = none). Returns (K,)."""
        g = np.asarray(gpus, dtype=np.int64)
        gp = np.maximum(g, 0)
        free = gp.sum(axis=1)
        ge = g[:, :, None] >= self._um                        # (K, G, U)
        cnt = ge.sum(axis=1)                                  # (K, U)
        use = np.einsum("kg,kgu->ku", gp, ge.astype(np.int64))
        fits = cnt[:, self._tu] >= self._n                    # (K, T)
        usable = use[:, self._tu]
        ok = fits & (np.asarray(cpu)[:, None] >= self._c) & ~self.full[np.asarray(model)]
        contrib = np.where(ok, free[:, None] - usable, free[:, None])
        # row-wise sum (not a BLAS matmul): a row's value must not depend on the batch it is
        # computed in, so that an unchanged host state gives exactly F(S) - F(S') == 0
        return (contrib * self.workload.freq).sum(axis=1)

    def fragment(self, key: StateKey) -> float:
        """Memoised ``F`` of one state ``(cpu_free, gpus tuple, model index)``."""
        f = self.memo.get(key)
        if f is None:
            cpu, gpus, model = key
            f = float(self.fragment_rows(np.array([cpu]), np.array([gpus]).reshape(1, -1),
                                         np.array([model]))[0])
            self.memo[key] = f
        return f

    def fragment_keys(self, keys: Sequence[StateKey]) -> list[float]:
        """Memoised ``F`` for many states, evaluating the misses in one batch."""
        miss = [k for k in dict.fromkeys(keys) if k not in self.memo]
        if miss:
            width = max(len(k[1]) for k in miss)
            g = np.full((len(miss), max(width, 1)), -1, dtype=np.int64)
            for i, k in enumerate(miss):
                g[i, :len(k[1])] = k[1]
            vals = self.fragment_rows(np.array([k[0] for k in miss]), g,
                                      np.array([k[2] for k in miss]))
            for k, v in zip(miss, vals.tolist()):
                self.memo[k] = v
        return [self.memo[k] for k in keys]

    def node_fragment(self, cpu_free: int, gpu_free: Sequence[int], model: str | None) -> float:
        """Convenience: ``F`` of one host given plain values and a model name."""
        mi = self.models.index(model) if model in self.models else -1
        if model is not None and mi == -1:
            self.models.append(model)
            self.__init__(self.workload, self.models)  # extend the access table
            mi = self.models.index(model)
        return self.fragment((int(cpu_free), tuple(sorted(int(x) for x in gpu_free)), mi))
